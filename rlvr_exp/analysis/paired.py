"""Each arm of a sweep against the baseline, paired by seed: the mean difference of a final metric
with its 95% Student-t interval, and when each run's plateau-gated shapers switched on.

Math: seeds s = 1..n run in both arms; d_s = x_arm(s) - x_base(s). The interval is
mean(d) +- t_{0.975, n-1} * std(d, ddof 1) / sqrt(n) (the paired t-interval; a seed shares the
warm-start, the problems and the first samples across arms, so pairing removes that variance).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from rlvr_exp.analysis.runs import AnalysisInputError, Run

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond 30 the normal 1.960.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
BASELINE_PREFIX = "none @"  # plain GRPO: no shaper
PAIRED_KEYS = ("val/accuracy_final", "entropy/mean_final")


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a t-interval needs at least 2 pairs (df >= 1), got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.960


def paired_interval(diffs: list[float]) -> tuple[float, float, float, float]:
    """(mean, std ddof 1, low, high) of the paired differences; low/high are nan below 2 pairs."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        return (math.nan,) * 4
    if d.size == 1:
        return float(d[0]), math.nan, math.nan, math.nan
    mean, std = float(d.mean()), float(d.std(ddof=1))
    half = t975(d.size - 1) * std / math.sqrt(d.size)
    return mean, std, mean - half, mean + half


def _by_seed(runs: list[Run], labels: list[str], label: str, key: str) -> dict[Any, float]:
    return {r.seed: float(r.summary[key]) for r, lab in zip(runs, labels)
            if lab == label and r.summary is not None and key in r.summary}


def _gated_steps(run: Run) -> str:
    """' (position on 62 steps)' for each shaper that was active on some logged steps but not all
    (``shaper/<name>/active``); '' when no shaper was gated."""
    parts = []
    names = sorted({k.split("/")[1] for row in run.rows for k in row if k.startswith("shaper/") and k.endswith("/active")})
    for name in names:
        flags = [row[f"shaper/{name}/active"] for row in run.rows if f"shaper/{name}/active" in row]
        on = sum(1 for f in flags if f)
        if on < len(flags):
            parts.append(f"{name} on {on} steps")
    return f" ({', '.join(parts)})" if parts else ""


def _plateau_steps(runs: list[Run], labels: list[str], label: str) -> str:
    """'112 (position on 89 steps), 95, none' in seed order: the online ``stage/plateau_step`` and the
    steps each gated shaper was active."""
    cells = []
    arm = [r for r, lab in zip(runs, labels) if lab == label]
    for r in sorted(arm, key=lambda r: (not isinstance(r.seed, int), r.seed if isinstance(r.seed, int) else 0, str(r.seed))):
        steps = [row for row in r.rows if row.get("stage/plateau_step") is not None]
        cells.append((str(int(steps[-1]["stage/plateau_step"])) if steps else "none") + _gated_steps(r))
    return ", ".join(cells)


def _diff_cells(runs: list[Run], labels: list[str], label: str, base: str) -> list[str]:
    """One cell per PAIRED_KEYS: arm ``label`` minus arm ``base`` over the seeds both ran."""
    cells = []
    for key in PAIRED_KEYS:
        arm, ref = _by_seed(runs, labels, label, key), _by_seed(runs, labels, base, key)
        seeds = [s for s in arm if s in ref]
        mean, std, lo, hi = paired_interval([arm[s] - ref[s] for s in seeds])
        cells.append("n/a" if not seeds else f"{mean:+.3f} ± {std:.3f} [{lo:+.3f}, {hi:+.3f}] ({len(seeds)})"
                     if len(seeds) > 1 else f"{mean:+.3f} (1)")
    return cells


def paired_table(runs: list[Run], labels: list[str]) -> str:
    """Markdown: each arm minus the baseline (the label that starts with ``none @``), paired by seed;
    '' when the sweep has no baseline arm."""
    base = next((lab for lab in dict.fromkeys(labels) if lab.startswith(BASELINE_PREFIX)), None)
    if base is None:
        return ""
    head = ("| arm | " + " | ".join(f"{k} minus `{base}`: mean ± std [95% CI] (pairs)" for k in PAIRED_KEYS)
            + " | plateau step per seed (steps a plateau-gated shaper was on) |")
    table = [head, "|---|" + "---|" * len(PAIRED_KEYS) + "---|"]
    for label in dict.fromkeys(labels):
        cells = _diff_cells(runs, labels, label, base)
        table.append(f"| {label} | " + " | ".join(cells) + f" | {_plateau_steps(runs, labels, label)} |")
    return "\n".join(table)


def arm_label(runs: list[Run], labels: list[str], name: str) -> str:
    """The one arm that ``name`` names: its ``logger.job_type`` (the experiment preset's name, e.g.
    ``ppl_high``) or its full strategy label. Raises AnalysisInputError when it names none or several."""
    job_types = [(r.config.get("logger") or {}).get("job_type") for r in runs]
    found = list(dict.fromkeys(lab for job, lab in zip(job_types, labels) if lab == name or job == name))
    if len(found) != 1:
        arms = sorted({str(job) for job in job_types})
        what = "no arm" if not found else f"{len(found)} arms ({'; '.join(found)})"
        raise AnalysisInputError(f"--pair: {name!r} names {what} of these runs; name one arm by its "
                                 f"logger.job_type (here: {', '.join(arms)}) or by its full strategy label")
    return found[0]


def pairs_table(runs: list[Run], labels: list[str], pairs: list[tuple[str, str]]) -> str:
    """Markdown: for each (method, control), method minus control paired by seed (e.g. ``ppl`` minus
    ``ppl_high``: does the method beat the inverted weighting?); '' when no pairs are given."""
    if not pairs:
        return ""
    head = "| method minus control | " + " | ".join(f"{k}: mean ± std [95% CI] (pairs)" for k in PAIRED_KEYS) + " |"
    table = [head, "|---|" + "---|" * len(PAIRED_KEYS)]
    for method, control in pairs:
        a, b = arm_label(runs, labels, method), arm_label(runs, labels, control)
        table.append(f"| `{method}` minus `{control}` | " + " | ".join(_diff_cells(runs, labels, a, b)) + " |")
    return "\n".join(table)
