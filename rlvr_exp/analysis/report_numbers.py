"""The numbers behind a run's report (``<run>/analysis/report.md``), on metric rows and the per-token
record; no text, no files.

Conventions: a dump at step s belongs to the plateau when s >= boundary (the first step a
plateau-gated shaper is on); a change over a stage compares the mean of the first ``EDGE_STEPS``
logged values (step >= 1) with the mean of the last ``EDGE_STEPS`` values at or before the stage's
end; "within a stage" compares the later half of its dump steps with the earlier half; relative
positions (t-1)/L fall into ``N_BUCKETS`` equal buckets of [0, 1); the low/high-logPPL split is at
the median of the stage's samples (ties low).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from rlvr_exp.analysis.runs import series

EDGE_STEPS = 5
N_BUCKETS = 5
TOP_SHARE = 0.2
TOP_TOKENS = 20
RISING, PLATEAU = "rising", "plateau"
Rows = list[dict[str, Any]]


def change_to(rows: Rows, key: str, end_step: int, edge: int = EDGE_STEPS) -> dict[str, float] | None:
    """Change of ``key`` from the start of training to ``end_step``: mean of the first ``edge``
    values (step >= 1) vs mean of the last ``edge`` values at or before ``end_step``."""
    steps, values = series(rows, key)
    keep = steps >= 1
    steps, values = steps[keep], values[keep]
    upto = values[steps <= end_step]
    if len(upto) == 0:
        return None
    start, end = float(values[:edge].mean()), float(upto[-edge:].mean())
    return {"start": start, "end": end, "change": end - start,
            "relative": (end - start) / start if start else float("nan")}


def value_at(rows: Rows, key: str, step: int) -> tuple[int, float] | None:
    """(step, value) of the last row at or before ``step`` that holds ``key``."""
    steps, values = series(rows, key)
    upto = np.flatnonzero(steps <= step)
    return (int(steps[upto[-1]]), float(values[upto[-1]])) if len(upto) else None


def stage_of(steps: np.ndarray, boundary: int | None) -> np.ndarray:
    """"plateau" where step >= boundary, else "rising" (all rising without a boundary)."""
    plateau = np.zeros(len(steps), bool) if boundary is None else np.asarray(steps) >= boundary
    return np.where(plateau, PLATEAU, RISING)


def halves(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the earlier and the later half of the distinct steps (the later half takes the
    middle one when odd); both empty with fewer than two distinct steps."""
    distinct = np.unique(steps)
    if len(distinct) < 2:
        return np.zeros(len(steps), bool), np.zeros(len(steps), bool)
    cut = distinct[len(distinct) // 2]
    return steps < cut, steps >= cut


def bucket_means(rel_position: np.ndarray, values: np.ndarray, n_buckets: int = N_BUCKETS) -> np.ndarray:
    """Mean of ``values`` per relative-position bucket [i/n, (i+1)/n); NaN for an empty bucket."""
    idx = np.clip((np.asarray(rel_position) * n_buckets).astype(np.int64), 0, n_buckets - 1)
    sums = np.bincount(idx, weights=values, minlength=n_buckets)
    counts = np.bincount(idx, minlength=n_buckets)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def per_sample(tokens: pa.Table) -> dict[str, np.ndarray]:
    """One entry per (step, sample): its step, correct, logppl, length and mean token entropy."""
    col = {name: tokens.column(name).to_numpy() for name in ("step", "sample", "entropy")}
    key = col["step"].astype(np.int64) * (int(col["sample"].max()) + 1) + col["sample"]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    out = {name: tokens.column(name).to_numpy()[first] for name in ("step", "correct", "logppl", "response_len")}
    out["entropy"] = np.bincount(inverse, weights=col["entropy"]) / np.bincount(inverse)
    return out


def median_split(logppl: np.ndarray, values: np.ndarray) -> dict[str, float]:
    """Mean of ``values`` for samples with logPPL <= median ("low") and > median ("high")."""
    median = float(np.median(logppl))
    low = logppl <= median
    mean = lambda m: float(values[m].mean()) if m.any() else float("nan")
    return {"median": median, "low": mean(low), "high": mean(~low), "n_low": int(low.sum()), "n_high": int((~low).sum())}


def top_tokens(token_ids: np.ndarray, entropy: np.ndarray, share: float = TOP_SHARE,
               k: int = TOP_TOKENS) -> tuple[float, list[tuple[int, int, float]]]:
    """Tokens at or above the (1 - share) entropy quantile (linear interpolation): the threshold,
    and the ``k`` most frequent token ids there as (id, count, mean entropy), by count then entropy."""
    if len(entropy) == 0:
        return float("nan"), []
    threshold = float(np.quantile(entropy, 1.0 - share))
    sel = entropy >= threshold
    ids, inverse, counts = np.unique(token_ids[sel], return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=entropy[sel]) / counts
    order = np.lexsort((-means, -counts))[:k]
    return threshold, [(int(ids[i]), int(counts[i]), float(means[i])) for i in order]


def stage_windows(steps: np.ndarray, boundary: int | None) -> dict[str, np.ndarray]:
    """Masks of each stage present and, with >= 2 dump steps, of its earlier and later half."""
    out: dict[str, np.ndarray] = {}
    stages = stage_of(steps, boundary)
    for stage in (RISING, PLATEAU):
        mask = stages == stage
        if mask.any():
            out[stage] = mask
            first, second = halves(steps[mask])
            if first.any():
                out[f"{stage} 1st half"], out[f"{stage} 2nd half"] = mask.copy(), mask.copy()
                out[f"{stage} 1st half"][mask], out[f"{stage} 2nd half"][mask] = first, second
    return out


# ------------------------------------------------------------------------- text formatting
def fmt(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, fmt)


def fmt_delta(x: float | None) -> str:
    return fmt(x, "+.4f")
