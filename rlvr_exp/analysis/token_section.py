"""Report section: which tokens are high-entropy in each stage? The most frequent tokens at or above
the stage's top-20% entropy threshold, as a Markdown table and as CSV rows."""
from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from rlvr_exp.analysis.report_numbers import PLATEAU, RISING, TOP_SHARE, stage_of, top_tokens

CSV_HEADER = ["stage", "rank", "token_id", "token", "count", "share", "mean_entropy"]


def section_tokens(tokens: pa.Table, boundary: int | None, decode: Callable[[int], str] | None,
                   csv_name: str) -> tuple[str, list[list]]:
    """The Markdown section and its rows for ``csv_name`` (stage, rank, token id, token, count,
    share of the stage's high-entropy tokens, mean entropy); tokens as ids without ``decode``."""
    ids, ent = tokens.column("token_id").to_numpy(), tokens.column("entropy").to_numpy()
    stages = stage_of(tokens.column("step").to_numpy(), boundary)
    text = (lambda i: repr(decode(i))) if decode else (lambda i: f"id {i}")
    lines = [f"## High-entropy tokens per stage (top {TOP_SHARE:.0%} by entropy within each stage's dumps)", ""]
    if decode is None:
        lines += ["No checkpoint with a tokenizer: tokens are shown as ids.", ""]
    records = []
    for stage in (RISING, PLATEAU):
        m = stages == stage
        if not m.any():
            continue
        threshold, top = top_tokens(ids[m], ent[m])
        n_top = int((ent[m] >= threshold).sum())
        lines += [f"### {stage} stage: {n_top} of {int(m.sum())} tokens have entropy >= {threshold:.3f} nats", "",
                  "| rank | token | count | share of high-entropy tokens | mean entropy (nats) |", "|---|---|---|---|---|"]
        for rank, (tid, count, mean) in enumerate(top, 1):
            shown = text(tid).replace("|", "\\|").replace("`", "'")
            lines.append(f"| {rank} | `{shown}` | {count} | {count / n_top:.1%} | {mean:.3f} |")
            records.append([stage, rank, tid, text(tid), count, f"{count / n_top:.4f}", f"{mean:.4f}"])
        lines.append("")
    return "\n".join(lines + [f"Saved as `{csv_name}`."]), records


def write_token_csv(path: Path, records: list[list]) -> None:
    """Write the rows of :func:`section_tokens` under :data:`CSV_HEADER`."""
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([CSV_HEADER, *records])
