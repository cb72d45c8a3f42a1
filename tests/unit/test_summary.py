"""``run_summary`` (rlvr_exp/logging/summary.py) on hand-made metric histories: what
``val/accuracy_final`` (the metric sweeps optimise) is on long and on short runs."""
from __future__ import annotations

import pytest

from rlvr_exp.logging.summary import run_summary


def history(evals: dict[int, float], steps: int, entropy: float = 0.5) -> list[dict]:
    rows = [{"step": 0, "val/accuracy": evals[0]}] if 0 in evals else []
    for step in range(1, steps + 1):
        row = {"step": step, "entropy/mean": entropy}
        if step in evals:
            row["val/accuracy"] = evals[step]
        rows.append(row)
    return rows


def test_long_run_averages_the_last_three_evaluations():
    s = run_summary(history({0: 0.1, 10: 0.2, 20: 0.4, 30: 0.5, 40: 0.9}, 40))
    assert s["val/accuracy_initial"] == 0.1
    assert s["val/accuracy_last"] == 0.9
    assert s["val/accuracy_final"] == pytest.approx((0.4 + 0.5 + 0.9) / 3)
    assert s["val/accuracy_gain"] == pytest.approx((0.4 + 0.5 + 0.9) / 3 - 0.1)
    assert s["train/steps_logged"] == 40.0


def test_short_run_never_averages_in_the_step_0_evaluation():
    # two evaluations after step 0: their mean (the old rule gave (0.1 + 0.3 + 0.5) / 3 = 0.3)
    s = run_summary(history({0: 0.1, 10: 0.3, 20: 0.5}, 20))
    assert s["val/accuracy_final"] == pytest.approx(0.4)
    assert s["val/accuracy_gain"] == pytest.approx(0.3)


def test_one_evaluation_after_step_0_is_the_final_accuracy():
    s = run_summary(history({0: 0.25, 20: 0.75}, 20))
    assert s["val/accuracy_final"] == 0.75
    assert s["val/accuracy_gain"] == 0.5


def test_only_the_step_0_evaluation():
    s = run_summary(history({0: 0.25}, 5))
    assert s["val/accuracy_final"] == 0.25 and s["val/accuracy_gain"] == 0.0


def test_resumed_run_counts_each_evaluation_once_in_order():
    # a resumed run's history holds the step-0 row once, then the later steps in order
    rows = history({0: 0.0, 5: 0.2, 10: 0.4, 15: 0.6, 20: 1.0}, 20)
    assert run_summary(rows)["val/accuracy_final"] == pytest.approx((0.4 + 0.6 + 1.0) / 3)


def test_entropy_windows_and_last_values():
    rows = [{"step": s, "entropy/mean": float(s), "train/loss": -s} for s in range(1, 26)]
    s = run_summary(rows)
    assert s["entropy/mean_initial"] == pytest.approx(5.5)   # mean of 1..10
    assert s["entropy/mean_final"] == pytest.approx(20.5)    # mean of 16..25
    assert s["train/loss"] == -25
    assert "val/accuracy_final" not in s
