"""Report section (d): where does the update land? From the per-token record's ``delta_logp``
(docs/method.md section 8): how far one step's update moved each sampled token's log-prob.

Numbers: over the tokens of a stage's dump steps (every dumped response token, in the loss or not)
that fall in a bucket,

    mean |delta|           = mean_t |delta_logp_t|
    mean toward the reward = mean_t delta_logp_t * sign(A_t)

with A_t the token's advantage after the shaper stack (the one the update used; a token with
A_t = 0 counts as 0). Positive "toward the reward" means the update raised the log-probs of tokens
with positive advantage and lowered those with negative advantage on average. Buckets: relative
position (t-1)/L in ``N_BUCKETS`` equal buckets of [0, 1), as in section (c); the response's
logPPL and the token's entropy in ``N_BUCKETS`` quantile buckets whose edges are the quantiles of
all the tokens of both stages (so a bucket is the same range in both stages; a bucket may be empty
in one). A record without the column (written before it existed) gives no table.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rlvr_exp.analysis import plots
from rlvr_exp.analysis.report_numbers import N_BUCKETS, PLATEAU, RISING, fmt, fmt_delta, stage_of

COLUMN = "delta_logp"


def position_buckets(rel_position: np.ndarray, n: int = N_BUCKETS) -> np.ndarray:
    """Bucket i of [i/n, (i+1)/n) for each relative position."""
    return np.clip((np.asarray(rel_position) * n).astype(np.int64), 0, n - 1)


def quantile_buckets(values: np.ndarray, n: int = N_BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """(bucket per value, the n + 1 edges): bucket i holds edge_i <= x < edge_{i+1} (the last bucket
    also its upper edge), edges the 0, 1/n, ..., 1 quantiles (linear interpolation)."""
    values = np.asarray(values, dtype=np.float64)
    edges = np.quantile(values, np.linspace(0.0, 1.0, n + 1))
    return np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n - 1), edges


def landing(bucket: np.ndarray, delta: np.ndarray, advantage: np.ndarray, n: int = N_BUCKETS) -> dict[str, np.ndarray]:
    """Per bucket 0..n-1: ``tokens``, ``abs`` (mean |delta|) and ``toward`` (mean delta * sign(A));
    NaN means where a bucket is empty."""
    counts = np.bincount(bucket, minlength=n).astype(np.float64)
    toward = np.asarray(delta, np.float64) * np.sign(advantage)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"tokens": counts,
                "abs": np.bincount(bucket, weights=np.abs(delta), minlength=n) / counts,
                "toward": np.bincount(bucket, weights=toward, minlength=n) / counts}


def _table(title: str, labels: list[str], bucket: np.ndarray, stages: np.ndarray, delta: np.ndarray,
           advantage: np.ndarray) -> tuple[list[str], dict[str, dict[str, np.ndarray]]]:
    present = [s for s in (RISING, PLATEAU) if (stages == s).any()]
    per = {s: landing(bucket[stages == s], delta[stages == s], advantage[stages == s], len(labels)) for s in present}
    lines = [f"| {title} | " + " | ".join(f"{s} tokens | {s} mean abs Δ | {s} toward reward" for s in present) + " |",
             "|" + "---|" * (1 + 3 * len(present))]
    for i, label in enumerate(labels):
        cells = [f"{int(per[s]['tokens'][i])} | {fmt(per[s]['abs'][i], '.4f')} | {fmt_delta(per[s]['toward'][i])}"
                 for s in present]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines, per


def _spread(per: dict[str, dict[str, np.ndarray]], what: str, low: str, high: str) -> str:
    """Mean |Δ| of the last bucket against the first, per stage."""
    parts = []
    for stage, numbers in per.items():
        first, last = numbers["abs"][0], numbers["abs"][-1]
        ratio = last / first if np.isfinite(first) and first > 0 and np.isfinite(last) else float("nan")
        times = (f"{ratio:.2f}x" if ratio < 1000 else "over 1000x") if np.isfinite(ratio) else "ratio n/a"
        parts.append(f"{stage} {fmt(last, '.4f')} vs {fmt(first, '.4f')} ({times})")
    return f"By {what}, mean |Δ| in the {high} vs the {low}: " + "; ".join(parts) + "."


def _edges(edges: np.ndarray) -> list[str]:
    return [f"{a:.3g}-{b:.3g}" for a, b in zip(edges[:-1], edges[1:])]


def has_update_column(tokens: pa.Table) -> bool:
    """Whether some token of the record has a ``delta_logp`` (records before the column have none)."""
    return COLUMN in tokens.column_names and tokens.column(COLUMN).null_count < tokens.num_rows


def section_d(tokens: pa.Table, boundary: int | None) -> str:
    head = ["## (d) Where does the update land? (how far one step moved each token's log-prob)", ""]
    if not has_update_column(tokens):
        return "\n".join(head + [f"No `{COLUMN}` in the token records (written before the column existed): "
                                 "no update tables. Re-run to get them."])
    keep = tokens.filter(pc.is_valid(tokens.column(COLUMN)))
    col = {k: keep.column(k).to_numpy() for k in ("step", COLUMN, "advantage", "rel_position", "entropy", "logppl")}
    delta, adv = col[COLUMN].astype(np.float64), col["advantage"].astype(np.float64)
    stages = stage_of(col["step"], boundary)
    steps = {s: np.unique(col["step"][stages == s]).tolist() for s in (RISING, PLATEAU) if (stages == s).any()}
    overall = landing(np.zeros(len(delta), np.int64), delta, adv, 1)
    head += [f"From `{COLUMN}` (log-prob after the step's update − `logp_old`, same tokens) on "
             + "; ".join(f"{len(v)} {s} dump steps ({v[0]}-{v[-1]})" for s, v in steps.items())
             + f", {len(delta)} tokens. Mean |Δ| {overall['abs'][0]:.4f}, mean signed change toward the reward "
             f"{overall['toward'][0]:+.4f} (Δ · sign(advantage); > 0: the update moved tokens the way their "
             "advantage asked). Every dumped response token counts, in the loss or not."]
    logppl_bucket, logppl_edges = quantile_buckets(col["logppl"])
    entropy_bucket, entropy_edges = quantile_buckets(col["entropy"])
    parts = []
    for title, labels, bucket, what, low, high in (
            ("position", plots.bucket_labels(N_BUCKETS), position_buckets(col["rel_position"]),
             "position", "first fifth of the response", "last fifth"),
            ("logPPL (quantile bucket)", _edges(logppl_edges), logppl_bucket, "response logPPL",
             "lowest-logPPL fifth", "highest-logPPL fifth"),
            ("entropy (quantile bucket, nats)", _edges(entropy_edges), entropy_bucket, "token entropy",
             "lowest-entropy fifth", "highest-entropy fifth")):
        lines, per = _table(title, labels, bucket, stages, delta, adv)
        parts.append("\n".join([f"### By {what}", "", *lines, "", _spread(per, what, low, high)]))
    return "\n\n".join(["\n".join(head), *parts])
