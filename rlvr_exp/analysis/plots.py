"""The analysis plots (PNG). Object-oriented matplotlib on the Agg canvas: no pyplot, no global
backend switch, so importing this module changes nothing for the caller.

Per-step metrics are noisy on small batches: curves are drawn raw (faint) with an exponential
moving average on top, s_t = SMOOTHING * s_{t-1} + (1 - SMOOTHING) * x_t (span ~10 steps).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from rlvr_exp.analysis.runs import series

SMOOTHING = 0.9
DPI = 110
DEFECT_KEYS = {"defect/no_boxed_share": "no boxed answer", "defect/repetition_share": "repetition",
               "defect/truncated_share": "truncated"}
STAGE_COLORS = {"rising": "tab:orange", "plateau": "tab:blue"}
Rows = list[dict[str, Any]]


def ema(values: np.ndarray, smoothing: float = SMOOTHING) -> np.ndarray:
    """Exponential moving average with s_0 = x_0."""
    out = np.empty_like(values, dtype=np.float64)
    for i, x in enumerate(values):
        out[i] = x if i == 0 else smoothing * out[i - 1] + (1.0 - smoothing) * x
    return out


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def _boundary(ax: Axes, boundary: int | None) -> None:
    if boundary is not None:
        ax.axvline(boundary, color="black", linestyle="--", linewidth=1.2, label=f"plateau starts (step {boundary})")


def _curve(ax: Axes, rows: Rows, key: str, label: str, color: str, smooth: bool = True) -> bool:
    """Raw values (faint) and their EMA; False when no row holds ``key``."""
    steps, values = series(rows, key)
    steps, values = steps[steps > 0], values[steps > 0]  # step 0 is the evaluation before RL
    if len(values) == 0:
        return False
    if smooth:
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, ema(values), color=color, linewidth=1.8, label=f"{label} (EMA)")
    else:
        ax.plot(steps, values, color=color, marker="o", markersize=3, linewidth=1.5, label=label)
    return True


def accuracy_entropy(rows: Rows, boundary: int | None, path: Path, temperature: float | None = None) -> Path:
    """Panel 1: train accuracy (EMA) and validation accuracy; panel 2: mean token entropy, of the
    sampling distribution at ``temperature`` (the run's ``trainer.temperature``; None: not known)."""
    fig = Figure(figsize=(9, 7))
    top, bottom = fig.subplots(2, 1, sharex=True)
    _curve(top, rows, "train/accuracy", "train accuracy", "tab:green")
    steps, val = series(rows, "val/accuracy")
    if len(val):
        top.plot(steps, val, color="tab:purple", marker="o", markersize=4, label="validation accuracy")
    _boundary(top, boundary)
    top.set(title="Accuracy over training", ylabel="accuracy")
    _curve(bottom, rows, "entropy/mean", "mean token entropy", "tab:red")
    _boundary(bottom, boundary)
    at = "" if temperature is None else f", sampling temperature {temperature:g}"
    bottom.set(title=f"Policy entropy over training (response tokens{at})", xlabel="step",
               ylabel="entropy (nats)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def pos_neg_entropy(rows: Rows, boundary: int | None, path: Path) -> tuple[Path, bool]:
    """Entropy of correct vs wrong samples; a second panel with the probe-set changes when
    ``probe/entropy_change_{pos,neg}`` were logged. Returns (path, probe panel drawn)."""
    has_probe = any("probe/entropy_change_pos" in r or "probe/entropy_change_neg" in r for r in rows)
    fig = Figure(figsize=(9, 7 if has_probe else 4.2))
    axes = fig.subplots(2 if has_probe else 1, 1, sharex=True, squeeze=False)[:, 0]
    _curve(axes[0], rows, "entropy/pos", "positive (correct) samples", "tab:green")
    _curve(axes[0], rows, "entropy/neg", "negative (wrong) samples", "tab:red")
    axes[0].set(title="Entropy of positive vs negative samples", ylabel="entropy (nats)")
    if has_probe:
        for side, name, color in (("pos", "positive", "tab:green"), ("neg", "negative", "tab:red")):
            key = f"probe/entropy_change_{side}"
            _curve(axes[1], rows, key, f"probe set, {name}", color, smooth=False)
            steps, lo = series(rows, f"{key}_lo")
            hi_steps, hi = series(rows, f"{key}_hi")
            if len(lo) and np.array_equal(steps, hi_steps):
                axes[1].fill_between(steps, lo, hi, color=color, alpha=0.15, linewidth=0)
        axes[1].axhline(0.0, color="grey", linewidth=0.8)
        axes[1].set(title="Entropy change on the fixed probe set (bands: 95% bootstrap intervals over prompts)",
                    ylabel="entropy change (nats)")
    for ax in axes:
        _boundary(ax, boundary)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("step")
    return _save(fig, path), has_probe


def bucket_labels(n_buckets: int) -> list[str]:
    edges = np.linspace(0.0, 1.0, n_buckets + 1)
    return [f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])]


#: Line style of a stage's profile and of its halves' (the colour is the stage's).
WINDOW_STYLES = {"": {"linestyle": "-", "marker": "o", "linewidth": 2.0, "alpha": 1.0},
                 "1st half": {"linestyle": ":", "marker": "v", "linewidth": 1.3, "alpha": 0.8},
                 "2nd half": {"linestyle": "--", "marker": "^", "linewidth": 1.3, "alpha": 0.8}}


def profile_style(name: str) -> dict[str, object]:
    """Matplotlib style of a profile named ``<stage>`` or ``<stage> 1st half`` / ``2nd half``:
    the stage's colour, and a line style and marker of its own for the whole stage and each half."""
    stage, _, window = name.partition(" ")
    return {**WINDOW_STYLES[window], "color": STAGE_COLORS.get(stage, "grey")}


def entropy_by_position(profiles: dict[str, np.ndarray], rows: Rows, boundary: int | None,
                        path: Path) -> tuple[Path, bool]:
    """Panel 1: mean token entropy per relative-position bucket, one line per stage (and the
    halves of each stage: earlier dotted, later dashed, :func:`profile_style`). Panel 2, when
    ``entropy/pos_bucket_<i>`` were logged: those per-step bucket entropies. Returns (path,
    per-step panel drawn)."""
    bucket_keys = sorted({k for r in rows for k in r if k.startswith("entropy/pos_bucket_")},
                         key=lambda k: int(k.rsplit("_", 1)[1]))
    fig = Figure(figsize=(9, 7.5 if bucket_keys else 4.5))
    axes = fig.subplots(2 if bucket_keys else 1, 1, squeeze=False)[:, 0]
    n = len(next(iter(profiles.values())))
    x = np.arange(n)
    for name, means in profiles.items():
        axes[0].plot(x, means, **profile_style(name), label=f"{name} dumps")
    axes[0].set_xticks(x, bucket_labels(n))
    axes[0].set(title="Entropy by relative position in the response, per stage",
                xlabel="relative position in response ((t-1)/L)", ylabel="mean token entropy (nats)")
    if bucket_keys:
        for i, (key, span) in enumerate(zip(bucket_keys, bucket_labels(len(bucket_keys)))):
            _curve(axes[1], rows, key, f"position {span}", f"C{i}")
        _boundary(axes[1], boundary)
        axes[1].set(title="Per-step entropy by position bucket (logged)", xlabel="step", ylabel="entropy (nats)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path), bool(bucket_keys)


def logppl_by_correctness(samples: dict[str, np.ndarray], stages: np.ndarray, path: Path) -> Path:
    """Histograms of per-sample logPPL, correct vs wrong, one panel per stage present. logPPL is
    skewed (most samples near 0, a long tail), so bins and axis are logarithmic."""
    names = [s for s in STAGE_COLORS if (stages == s).any()]
    fig = Figure(figsize=(max(8.0, 5.0 * len(names)), 4.4))
    axes = fig.subplots(1, len(names), sharex=True, squeeze=False)[0]
    logppl = np.maximum(samples["logppl"], 1.0e-4)  # a sample sure of every token has logPPL ~ 0
    bins = np.geomspace(logppl.min(), max(logppl.max(), logppl.min() * 1.01), 40)
    for ax, stage in zip(axes, names):
        for correct, color, label in ((True, "tab:green", "correct"), (False, "tab:red", "wrong")):
            sel = (stages == stage) & (samples["correct"] == correct)
            if sel.any():
                mean = samples["logppl"][sel].mean()
                ax.hist(logppl[sel], bins=bins, color=color, alpha=0.45, density=False,
                        label=f"{label} (n={int(sel.sum())}, mean {mean:.3f})")
                ax.axvline(mean, color=color, linewidth=1.2)
        ax.set_xscale("log")
        ax.set(title=f"{stage} stage", xlabel="sample logPPL (nats/token, log scale)", ylabel="samples")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle("Per-sample logPPL of correct vs wrong samples (vertical lines: means)")
    return _save(fig, path)


def defect_keys(rows: Rows) -> dict[str, str]:
    """Defect metrics present; ``train/clipped_share`` stands in for a missing truncated share."""
    present = {k: v for k, v in DEFECT_KEYS.items() if any(k in r for r in rows)}
    if "defect/truncated_share" not in present and any("train/clipped_share" in r for r in rows):
        present["train/clipped_share"] = "truncated (train/clipped_share)"
    return present


def defects(rows: Rows, keys: dict[str, str], boundary: int | None, path: Path) -> Path:
    """Defect shares over steps, one line per ``keys`` entry (metric key -> label)."""
    fig = Figure(figsize=(9, 4.2))
    ax = fig.subplots()
    for i, (key, label) in enumerate(keys.items()):
        _curve(ax, rows, key, label, f"C{i}")
    _boundary(ax, boundary)
    ax.set(title="Defective outputs over training", xlabel="step", ylabel="share of samples")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def coinciding(runs: list[tuple[str, Rows]]) -> list[list[str]]:
    """Groups of strategy labels whose runs draw the same curves (every run's ``val/accuracy`` and
    ``entropy/mean`` series equal, as a set over seeds), in first-seen order; one label per group
    when no two coincide. Coinciding arms hide each other in :func:`compare_curves`."""
    curves: dict[str, list[tuple]] = {}
    for label, rows in runs:
        curves.setdefault(label, []).append(tuple(
            (tuple(steps.tolist()), tuple(values.tolist())) for steps, values in (
                series(rows, "val/accuracy"), series(rows, "entropy/mean"))))
    groups: dict[tuple, list[str]] = {}
    for label, per_run in curves.items():
        groups.setdefault(tuple(sorted(per_run)), []).append(label)
    return list(groups.values())


def legend_labels(groups: list[list[str]]) -> dict[str, str]:
    """label -> its legend entry: the label, or ``a = b (identical)`` for every label of a group."""
    return {label: " = ".join(g) + " (identical)" if len(g) > 1 else label for g in groups for label in g}


def compare_curves(runs: list[tuple[str, Rows]], path: Path) -> Path:
    """Validation accuracy and mean entropy of several runs, one colour per strategy label
    (seeds of one strategy share its colour). Arms whose curves coincide exactly (:func:`coinciding`)
    share one colour and one legend entry, ``a = b (identical)``: the last one drawn hides the others."""
    groups = coinciding(runs)
    legend_of = legend_labels(groups)
    colors = {label: f"C{i % 10}" for i, group in enumerate(groups) for label in group}  # one per group
    fig = Figure(figsize=(10, 7.5 + 0.25 * len(groups)))
    top, bottom = fig.subplots(2, 1, sharex=True)
    seen: set[str] = set()
    for label, rows in runs:
        legend = legend_of[label] if legend_of[label] not in seen else None
        seen.add(legend_of[label])
        steps, val = series(rows, "val/accuracy")
        top.plot(steps, val, color=colors[label], marker="o", markersize=3, linewidth=1.2, alpha=0.8, label=legend)
        steps, ent = series(rows, "entropy/mean")
        keep = steps > 0
        bottom.plot(steps[keep], ema(ent[keep]), color=colors[label], linewidth=1.4, alpha=0.8)
    top.set(title="Validation accuracy by strategy (one line per run)", ylabel="accuracy")
    bottom.set(title="Mean token entropy by strategy (EMA)", xlabel="step", ylabel="entropy (nats)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    # one legend under both panels: strategy labels can be long
    fig.legend(*top.get_legend_handles_labels(), loc="lower center", fontsize=8, title="strategy")
    fig.tight_layout(rect=(0, (0.35 + 0.2 * len(groups)) / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=DPI)
    return path
