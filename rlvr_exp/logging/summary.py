"""The end-of-run summary (``summary.json``), computed from the logged rows."""
from __future__ import annotations

ENTROPY_WINDOW = 10
#: evaluations averaged into ``val/accuracy_final``
FINAL_EVALS = 3


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def final_accuracy(val: list[tuple[int, float]]) -> float:
    """Mean of the last ``FINAL_EVALS`` evaluations after step 0 (fewer when the run has fewer: one
    gives itself). Only without any evaluation after step 0 is it the mean of the step-0 ones.
    ``val``: (step, accuracy) in logging order, non-empty."""
    trained = [a for s, a in val if s > 0]
    return _mean(trained[-FINAL_EVALS:] if trained else [a for _, a in val])


def run_summary(rows: list[dict]) -> dict[str, float]:
    """``val/accuracy_initial`` (the step-0 evaluation, before RL), ``val/accuracy_last``,
    ``val/accuracy_final`` (:func:`final_accuracy`: mean of the last three evaluations after step 0,
    since a tiny policy's accuracy swings between evaluations; on a short run the ones it has, so the
    untrained policy never counts in a trained run's "final" accuracy; docs/method.md section 7),
    ``val/accuracy_gain`` (final - initial), ``entropy/mean_initial`` and
    ``entropy/mean_final`` (mean over the first and the last ``ENTROPY_WINDOW`` training steps),
    the plateau step when one was found, and the last value of every other metric."""
    out: dict[str, float] = {}
    for row in rows:
        out.update({k: v for k, v in row.items() if k != "step"})
    val = [(r["step"], r["val/accuracy"]) for r in rows if "val/accuracy" in r]
    if val:
        out["val/accuracy_initial"] = val[0][1]
        out["val/accuracy_last"] = val[-1][1]
        out["val/accuracy_final"] = final_accuracy(val)
        out["val/accuracy_gain"] = out["val/accuracy_final"] - out["val/accuracy_initial"]
    ent = [r["entropy/mean"] for r in rows if "entropy/mean" in r]
    if ent:
        out["entropy/mean_initial"] = _mean(ent[:ENTROPY_WINDOW])
        out["entropy/mean_final"] = _mean(ent[-ENTROPY_WINDOW:])
    out["train/steps_logged"] = float(sum(1 for r in rows if r["step"] > 0))
    return out
