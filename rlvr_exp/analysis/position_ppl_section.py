"""Report section (c): how do entropy and its change depend on token position and sample perplexity
in the plateau? From the per-token record (docs/method.md section 8)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from rlvr_exp.analysis import plots
from rlvr_exp.analysis.report_numbers import (
    N_BUCKETS,
    PLATEAU,
    RISING,
    bucket_means,
    fmt,
    fmt_delta,
    halves,
    median_split,
    stage_of,
    stage_windows,
)


def _position_part(tokens: pa.Table, windows: dict[str, np.ndarray]) -> tuple[str, dict[str, np.ndarray]]:
    rel, ent = tokens.column("rel_position").to_numpy(), tokens.column("entropy").to_numpy()
    prof = {name: bucket_means(rel[m], ent[m]) for name, m in windows.items()}
    cols = [c for c in (RISING, PLATEAU) if c in prof]
    nan = np.full(N_BUCKETS, np.nan)
    delta = {c: prof[f"{c} 2nd half"] - prof[f"{c} 1st half"] if f"{c} 1st half" in prof else nan for c in cols}
    both = len(cols) == 2
    rows = ["| position | " + " | ".join(f"{c} | Δ within {c}" for c in cols) + (" | plateau − rising" if both else "")
            + " |", "|" + "---|" * (1 + 2 * len(cols) + both)]
    for i, label in enumerate(plots.bucket_labels(N_BUCKETS)):
        cells = [f"{fmt(prof[c][i])} | {fmt_delta(delta[c][i])}" for c in cols]
        cells += [fmt_delta(prof[PLATEAU][i] - prof[RISING][i])] if both else []
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    st = cols[-1]
    late_early = {c: prof[c][-1] - prof[c][0] for c in cols}
    text = ["### Position (mean token entropy in nats; Δ within a stage = later half of its dumps − earlier half)", "",
            *rows, "",
            f"In the {st} stage the last position bucket has entropy {fmt(prof[st][-1])} vs {fmt(prof[st][0])} in the "
            f"first (late − early = {fmt_delta(late_early[st])}"
            + (f"; rising stage: {fmt_delta(late_early[RISING])})." if both else ").")
            + f" Within the {st} stage entropy changed by {fmt_delta(delta[st][-1])} at the end vs "
              f"{fmt_delta(delta[st][0])} at the start of the response."]
    return "\n".join(text), prof


def _ppl_part(samples: dict[str, np.ndarray], boundary: int | None) -> str:
    stages = stage_of(samples["step"], boundary)
    lines = ["### Perplexity (per-sample mean token entropy; samples split at the stage's median logPPL)", "",
             "| stage | logPPL group | samples | mean logPPL | accuracy | mean entropy (nats) | Δ within stage |",
             "|---|---|---|---|---|---|---|"]
    mean = lambda x: float(x.mean()) if len(x) else float("nan")
    summary = []
    for stage in (st for st in (RISING, PLATEAU) if (stages == st).any()):
        lp, ent, ok, steps = (samples[k][stages == stage] for k in ("logppl", "entropy", "correct", "step"))
        split = median_split(lp, ent)
        low = lp <= split["median"]
        first, second = halves(steps)
        deltas = {}
        for name, g, cmp in (("low", low, "≤"), ("high", ~low, ">")):
            deltas[name] = mean(ent[g & second]) - mean(ent[g & first])
            lines.append(f"| {stage} | {name} ({cmp} {split['median']:.3f}) | {int(g.sum())} | {fmt(mean(lp[g]))} | "
                         f"{fmt(mean(ok[g].astype(float)))} | {fmt(split[name])} | {fmt_delta(deltas[name])} |")
        summary.append(f"{stage}: low-logPPL samples {fmt(split['low'])} vs high-logPPL {fmt(split['high'])} nats "
                       f"(Δ within stage {fmt_delta(deltas['low'])} vs {fmt_delta(deltas['high'])})")
    return "\n".join(lines + ["", "Entropy by perplexity: " + "; ".join(summary) + "."])


def section_c(tokens: pa.Table, samples: dict[str, np.ndarray], boundary: int | None) -> tuple[str, dict]:
    windows = stage_windows(tokens.column("step").to_numpy(), boundary)
    position, profiles = _position_part(tokens, windows)
    head = ["## (c) How do entropy and its change depend on position and perplexity in the plateau?", ""]
    if boundary is None:
        head.append("No plateau was detected, so only the rising stage is described (its dumps are all of them).")
    elif PLATEAU not in windows:
        head.append(f"No token dump falls in the plateau (step >= {boundary}): only the rising stage is described.")
    return "\n\n".join(["\n".join(head).rstrip(), position, _ppl_part(samples, boundary)]), profiles
