"""Report section (a): where does the rising stage end? The plateau boundary from the offline stage
detector (docs/method.md section 6) and the entropy, accuracy and slope numbers around it."""
from __future__ import annotations

import numpy as np

from rlvr_exp import run_files as rf
from rlvr_exp.analysis.report_numbers import change_to, fmt, fmt_delta, value_at
from rlvr_exp.analysis.runs import Run, series
from rlvr_exp.stages.detector import detect_offline_file


def elbow_step(steps: np.ndarray, values: np.ndarray) -> int | None:
    """The hinge of the best continuous two-line fit y = a + b t + c max(0, t - h) (least squares over
    the observed steps; h runs over the interior steps): where a sharp fall turns into a slow one.
    It uses the whole curve, so it is a hindsight reference for the online detector's lag, not a
    detector. None with fewer than 5 points."""
    t, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if t.size < 5:
        return None
    best, best_sse = None, np.inf
    for h in t[1:-1]:
        design = np.stack([np.ones_like(t), t, np.maximum(0.0, t - h)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(np.sum((design @ coef - y) ** 2))
        if sse < best_sse - 1e-12:
            best, best_sse = int(h), sse
    return best


def stage_slopes(steps: np.ndarray, values: np.ndarray, boundary: int) -> tuple[float, float] | None:
    """Least-squares slopes (per step) of the raw signal before ``boundary`` and from it on; None
    when a stage has fewer than 2 points."""
    t, y = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    rising, plateau = t < boundary, t >= boundary
    if rising.sum() < 2 or plateau.sum() < 2:
        return None
    return float(np.polyfit(t[rising], y[rising], 1)[0]), float(np.polyfit(t[plateau], y[plateau], 1)[0])


def find_boundary(run: Run) -> tuple[int | None, str]:
    """The plateau boundary from the offline detector with the run's config (else the logged one)."""
    kwargs = run.detector_kwargs()
    if kwargs is None:
        logged = value_at(run.rows, "stage/plateau_step", 10**12)
        return (int(logged[1]) if logged else None), "the logged `stage/plateau_step` (no detector config)"
    boundary = detect_offline_file(run.path / rf.METRICS, **kwargs)
    return boundary, "offline stage detector on metrics.jsonl with the run's config: " + ", ".join(
        f"{k}={v}" for k, v in kwargs.items())


def section_a(run: Run, boundary: int | None, how: str) -> str:
    last = int(max(r["step"] for r in run.rows))
    lines = ["## (a) Where does the rising stage end?", ""]
    if boundary is not None:
        lines.append(f"**The rising stage ends at step {boundary}**: the plateau starts at step {boundary} of {last}, "
                     f"found by the {how}.")
    else:
        lines.append(f"**No plateau detected within {last} steps** ({how}); the whole run counts as the rising stage.")
    logged = value_at(run.rows, "stage/plateau_step", last)
    lines += ["", f"- The online detector logged `stage/plateau_step` = {int(logged[1]) if logged else 'none'}."]
    entropy = series(run.rows, "entropy/mean")
    slopes = stage_slopes(*entropy, boundary) if boundary is not None else None
    if slopes is not None:
        ratio = f" ({slopes[0] / slopes[1]:.1f}x)" if slopes[1] < 0 else " (the plateau's entropy does not fall)"
        lines.append(f"- Entropy per step (least-squares slope of `entropy/mean`): {slopes[0]:+.5f} in the rising stage, "
                     f"{slopes[1]:+.5f} in the plateau{ratio}.")
    elbow = elbow_step(*entropy)
    if elbow is not None:
        lag = f"; the boundary comes {boundary - elbow} steps after it" if boundary is not None else ""
        lines.append(f"- Elbow of the entropy curve (best two-line fit, in hindsight): step {elbow}{lag}.")
    steps, slope = series(run.rows, "stage/slope")
    if len(slope):
        i = int(np.argmin(slope))
        steepest = value_at(run.rows, "stage/steepest_slope", last)
        lines.append(f"- Steepest fall of the smoothed entropy: {slope[i]:+.5f} nats/step (the window ending at step {steps[i]})"
                     + (f"; noise-corrected (the detector's F): {steepest[1]:+.5f} nats/step." if steepest else "."))
    end = boundary if boundary is not None else last
    for key, name in (("entropy/mean", "Mean entropy (nats)"), ("train/accuracy", "Train accuracy")):
        c = change_to(run.rows, key, end)
        if c:
            lines.append(f"- {name}: {fmt(c['start'])} at the start -> {fmt(c['end'])} at step {end} ({fmt_delta(c['change'])}).")
    val0, val_end = value_at(run.rows, "val/accuracy", 0), value_at(run.rows, "val/accuracy", end)
    if val0 and val_end:
        lines.append(f"- Validation accuracy: {val0[1]:.3f} at step 0 -> {val_end[1]:.3f} at step {val_end[0]}.")
    return "\n".join(lines)
