"""Which decisions carry the entropy of a chain-arithmetic response (the CPU testbed, docs/method.md
section 11)? Each response token gets its role in ``47+8=55, 55+6=61. \\boxed{61}``, and the table
gives each role's mean entropy, its share of the top-20% entropy tokens and of the entropy mass.

    python -m rlvr_exp.analysis.chain_roles <run dir> [<run dir> ...]

Roles: the running total before ``+`` (a copy of the last partial sum, or the first number), the
next operand after ``+`` (which prompt digit comes next), the partial-sum digits after ``=`` (the
carry), ``,`` and ``.`` (the chain goes on or stops), ``+``, ``=``, the space, everything from the
backslash of ``\\boxed`` on, and anything else.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from rlvr_exp.analysis.report_numbers import TOP_SHARE
from rlvr_exp.analysis.runs import load_run, read_tokens, token_decoder

_STATE_ROLE = {"total": "running-total digit (before +)", "operand": "next-operand digit (after +)",
               "sum": "partial-sum digit (after =)"}


def roles(tokens: list[str]) -> list[str]:
    """The role of each token (one string per token, as the character tokenizer decodes it)."""
    out, state, boxed = [], "total", False
    for t in tokens:
        if boxed or t == "\\":
            boxed, role = True, "boxed answer"
        elif t.isdigit():
            role = _STATE_ROLE[state]
        elif t in ("+", "="):
            role, state = f"'{t}'", "operand" if t == "+" else "sum"
        elif t in (",", "."):
            role, state = f"'{t}' (go on / stop)", "total"
        elif t == " ":
            role = "space"
        else:
            role = "other"
        out.append(role)
    return out


def role_table(responses: list[tuple[list[str], list[float]]]) -> str:
    """Markdown: per role, tokens, mean entropy, share of the top-20% entropy tokens (threshold: the
    80th percentile over all tokens) and share of the summed entropy; most entropy mass first."""
    by_role: dict[str, list[float]] = collections.defaultdict(list)
    for tokens, entropy in responses:
        for role, e in zip(roles(tokens), entropy):
            by_role[role].append(float(e))
    every = np.concatenate([np.asarray(v) for v in by_role.values()]) if by_role else np.zeros(0)
    if every.size == 0:
        return "no tokens"
    threshold = float(np.quantile(every, 1.0 - TOP_SHARE))
    top, mass = int((every >= threshold).sum()), float(every.sum())
    lines = [f"{len(responses)} responses, {every.size} tokens; top-20% threshold {threshold:.3f} nats", "",
             "| token role | tokens | mean entropy (nats) | share of top-20% tokens | share of entropy mass |",
             "|---|---|---|---|---|"]
    for role, values in sorted(by_role.items(), key=lambda kv: -sum(kv[1])):
        v = np.asarray(values)
        lines.append(f"| {role} | {v.size} | {v.mean():.3f} | {100 * (v >= threshold).sum() / top:.1f}% "
                     f"| {100 * v.sum() / mass if mass else 0:.1f}% |")
    return "\n".join(lines)


def run_responses(run_dir: Path) -> list[tuple[list[str], list[float]]]:
    """(tokens, entropies) of every dumped response of a run, tokens decoded with its saved tokenizer."""
    decode = token_decoder(run_dir)
    if decode is None:
        raise SystemExit(f"{run_dir}: no checkpoint with a tokenizer to decode the token ids "
                         "(the run writes one at its end; set trainer.checkpoint_every>0)")
    cols = read_tokens(load_run(run_dir)).select(["step", "sample", "position", "token_id", "entropy"]).to_pydict()
    rows: dict[tuple[int, int], list[tuple[int, int, float]]] = collections.defaultdict(list)
    for step, sample, pos, tid, ent in zip(*cols.values()):
        rows[(step, sample)].append((pos, tid, ent))
    vocab: dict[int, str] = {}
    out = []
    for toks in rows.values():
        toks.sort()
        out.append(([vocab.setdefault(t, decode(t)) for _, t, _ in toks], [e for *_, e in toks]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rlvr_exp.analysis.chain_roles", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args(argv).runs:
        print(f"## {run}\n\n{role_table(run_responses(run))}\n")


if __name__ == "__main__":
    main()
