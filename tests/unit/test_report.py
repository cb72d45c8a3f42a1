"""The analysis numbers (rlvr_exp/analysis/report_numbers.py, negative_section.py, compare.py, runs.py) on
hand-made rows and tables."""
from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr_exp import run_files as rf
from rlvr_exp.analysis import plots
from rlvr_exp.analysis import report_numbers as report
from rlvr_exp.analysis.compare import compare_runs
from rlvr_exp.analysis.negative_section import section_b
from rlvr_exp.analysis.runs import (
    AnalysisInputError,
    Run,
    expand,
    load_run,
    read_tokens,
    series,
    strategy_label,
    strategy_labels,
)
from rlvr_exp.analysis.update_section import landing, quantile_buckets, section_d


def test_bucket_means_hand_computed():
    # rel 0.0 and 0.1 -> bucket 0, 0.25 -> 1, 0.5 -> 2, nothing in 3, 0.99 -> 4
    got = report.bucket_means(np.array([0.0, 0.1, 0.25, 0.5, 0.99]), np.array([1.0, 3.0, 5.0, 7.0, 9.0]), 5)
    np.testing.assert_allclose(got, [2.0, 5.0, 7.0, np.nan, 9.0])


def test_bucket_means_against_loop():
    rng = np.random.default_rng(0)
    rel, ent = rng.random(500), rng.random(500)
    for n in (5, 10):
        want = [ent[(rel >= i / n) & (rel < (i + 1) / n)].mean() for i in range(n)]
        np.testing.assert_allclose(report.bucket_means(rel, ent, n), want)


def rows_falling():
    """Step 0 is the evaluation row; steps 1..10 have pos = 10..1 and neg = 20, 18, ..., 2."""
    rows = [{"step": 0, "val/accuracy": 0.5}]
    rows += [{"step": s, "entropy/pos": 11.0 - s, "entropy/neg": 2.0 * (11 - s)} for s in range(1, 11)]
    return rows


def test_change_to_boundary():
    c = report.change_to(rows_falling(), "entropy/pos", end_step=6, edge=2)
    # start: mean(10, 9) = 9.5; end: steps 5, 6 -> mean(6, 5) = 5.5
    assert c["start"] == 9.5 and c["end"] == 5.5 and c["change"] == -4.0
    assert c["relative"] == pytest.approx(-4.0 / 9.5)
    assert report.change_to(rows_falling(), "missing", 6) is None


def test_value_at_and_series():
    rows = rows_falling()
    assert report.value_at(rows, "entropy/pos", 4) == (4, 7.0)
    assert report.value_at(rows, "val/accuracy", 10) == (0, 0.5)
    assert report.value_at(rows, "entropy/pos", 0) is None
    steps, values = series(rows + [{"step": 11, "entropy/pos": "not a number"}], "entropy/pos")
    assert steps.tolist() == list(range(1, 11)) and values[0] == 10.0


def test_stage_of_and_halves():
    steps = np.array([1, 5, 10, 15])
    assert report.stage_of(steps, 10).tolist() == ["rising", "rising", "plateau", "plateau"]
    assert report.stage_of(steps, None).tolist() == ["rising"] * 4
    first, second = report.halves(np.array([5, 5, 10, 15, 20]))
    assert first.tolist() == [True, True, True, False, False] and second.tolist() == [False, False, False, True, True]
    first, second = report.halves(np.array([5, 10, 15]))  # odd: the later half takes the middle step
    assert first.tolist() == [True, False, False] and second.tolist() == [False, True, True]
    first, second = report.halves(np.array([5, 5]))
    assert not first.any() and not second.any()


def test_stage_windows():
    steps = np.array([5, 5, 10, 15, 20, 25])
    w = report.stage_windows(steps, boundary=15)
    assert w["rising"].tolist() == [True, True, True, False, False, False]
    assert w["rising 1st half"].tolist() == [True, True, False, False, False, False]
    assert w["plateau 2nd half"].tolist() == [False, False, False, False, True, True]
    assert set(report.stage_windows(steps, None)) == {"rising", "rising 1st half", "rising 2nd half"}


def token_table() -> pa.Table:
    """Step 5: sample 0 (3 tokens, correct), sample 1 (2 tokens, wrong); step 10: sample 0 (1 token)."""
    return pa.table({
        "step": pa.array([5, 5, 5, 5, 5, 10], pa.int64()),
        "sample": pa.array([0, 0, 0, 1, 1, 0], pa.int32()),
        "entropy": pa.array([0.3, 0.6, 0.9, 0.2, 0.4, 1.0], pa.float32()),
        "correct": pa.array([True, True, True, False, False, True]),
        "logppl": pa.array([0.5, 0.5, 0.5, 1.5, 1.5, 0.1], pa.float32()),
        "response_len": pa.array([3, 3, 3, 2, 2, 1], pa.int32()),
    })


def test_per_sample():
    s = report.per_sample(token_table())
    assert s["step"].tolist() == [5, 5, 10]
    assert s["correct"].tolist() == [True, False, True]
    np.testing.assert_allclose(s["entropy"], [0.6, 0.3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(s["logppl"], [0.5, 1.5, 0.1], rtol=1e-6)
    assert s["response_len"].tolist() == [3, 2, 1]


def test_median_split():
    got = report.median_split(np.array([0.1, 0.2, 0.3, 0.4]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert got == {"median": pytest.approx(0.25), "low": 1.5, "high": 3.5, "n_low": 2, "n_high": 2}
    ties = report.median_split(np.array([1.0, 1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0, 10.0]))
    assert (ties["n_low"], ties["low"], ties["high"]) == (3, 2.0, 10.0)  # ties go low


def test_top_tokens_hand_computed():
    ids = np.array([1, 1, 2, 3, 3, 3, 4, 4, 4, 4])
    ent = np.array([0.9, 0.8, 0.1, 0.7, 0.6, 0.2, 0.3, 0.1, 0.1, 0.1])
    threshold, top = report.top_tokens(ids, ent, share=0.5, k=20)
    assert threshold == pytest.approx(0.25)  # linear interpolation between 0.2 and 0.3
    assert [(i, c) for i, c, _ in top] == [(1, 2), (3, 2), (4, 1)]  # by count, then mean entropy
    np.testing.assert_allclose([m for *_, m in top], [0.85, 0.65, 0.3])
    assert report.top_tokens(ids, ent, share=0.5, k=1)[1][0][0] == 1
    assert report.top_tokens(np.array([], int), np.array([]))[1] == []


def test_strategy_label():
    assert strategy_label({"shaper": "[ppl,position]", "stage": "plateau"}) == "ppl+position @plateau"
    assert strategy_label({"shaper": "none", "stage": "always"}) == "none @always"
    # Hydra leaves list-valued choices out of runtime.choices: fall back to the config's shaper keys
    config = {"shaper": {"ppl": {}, "position": {}}}
    assert strategy_label({"stage": "plateau"}, config) == "ppl+position @plateau"


def make_run(path, overrides):
    return Run(path=path, rows=[], summary=None, config={}, choices={"shaper": "ppl", "stage": "always"},
               overrides=overrides)


def test_strategy_labels_add_only_varying_strategy_overrides(tmp_path):
    runs = [make_run(tmp_path, ["seed=0", "shaper.ppl.alpha=0.01", "hydra.run.dir=a", "trainer.steps=9"]),
            make_run(tmp_path, ["seed=1", "shaper.ppl.alpha=0.05", "hydra.run.dir=b", "trainer.steps=9"])]
    assert strategy_labels(runs) == ["ppl @always shaper.ppl.alpha=0.01", "ppl @always shaper.ppl.alpha=0.05"]


def test_strategy_labels_ignore_how_a_job_ran(tmp_path):
    # a sweep job (parallel launcher) and its rerun alone (local, one thread) are the same arm
    runs = [make_run(tmp_path, ["seed=0", "sweep=controls", "launcher=parallel"]),
            make_run(tmp_path, ["seed=1", "trainer.num_threads=1", "logger.group=x"]),
            make_run(tmp_path, ["seed=2", "shaper.ppl.alpha=0.02", "trainer.num_threads=1"])]
    assert strategy_labels(runs) == ["ppl @always", "ppl @always", "ppl @always shaper.ppl.alpha=0.02"]


def section_b_text(pos_end: float, neg_end: float, probe: dict[int, dict] | None = None, config=None) -> str:
    rows = [{"step": 0}] + [{"step": s, "entropy/pos": 1.0, "entropy/neg": 1.0} for s in range(1, 6)]
    rows += [{"step": s, "entropy/pos": pos_end, "entropy/neg": neg_end} for s in range(6, 21)]
    for step, values in (probe or {}).items():
        rows[step].update(values)
    run = Run(path=None, rows=rows, summary=None, config=config or {}, choices={})
    return section_b(run, boundary=15)


def probe_row(neg: float, gap_lo: float, gap_hi: float) -> dict:
    return {"probe/entropy_change_neg": neg, "probe/entropy_change_neg_lo": neg - 0.1,
            "probe/entropy_change_neg_hi": neg + 0.1, "probe/entropy_change_pos": -0.05,
            "probe/entropy_change_pos_lo": -0.1, "probe/entropy_change_pos_hi": 0.0,
            "probe/entropy_change_neg_minus_pos": neg + 0.05, "probe/entropy_change_neg_minus_pos_lo": gap_lo,
            "probe/entropy_change_neg_minus_pos_hi": gap_hi,
            "probe/capture_first_pos": 1, "probe/capture_last_pos": 3, "probe/capture_first_neg": 1,
            "probe/capture_last_neg": 1, "probe/responses_neg": 32, "probe/prompts_neg": 20,
            "probe/responses_pos": 30, "probe/prompts_pos": 18}


def test_section_b_probe_names_the_capture_steps_and_the_interval():
    config = {"analysis": {"probe_bootstrap_resamples": 1000, "probe_bootstrap_seed": 0}}
    # probe steps 10 and 20; the rising stage ends at 15, so the numbers are step 10's
    text = section_b_text(0.9, 0.5, {10: probe_row(-0.2, -0.25, -0.05), 20: probe_row(-0.9, -1.0, -0.8)}, config)
    assert ("**Yes** (fixed probe set, change from capture to step 10; captured at step 1-3; 32 negative "
            "responses from 20 prompts; 30 positive responses from 18 prompts): negative samples -0.2000 "
            "[95% CI -0.3000, -0.1000] nats, positive samples -0.0500 [95% CI -0.1000, +0.0000] nats; "
            "negative − positive -0.1500 [95% CI -0.2500, -0.0500]: the entropy change on negative samples is "
            "below that on positive samples beyond the bootstrap noise (the interval excludes 0).") in text
    assert "over the probe's prompts (each prompt's responses resampled together, 1000 resamples, seed 0" in text
    within = section_b_text(0.9, 0.5, {10: probe_row(-0.2, -0.25, 0.05)})
    assert "no difference beyond the bootstrap noise (the interval includes 0)" in within
    # both rose, negatives more: "above", not a statement about falling
    rose = section_b_text(0.9, 0.5, {10: probe_row(0.3, 0.1, 0.5)})
    assert "is above that on positive samples beyond the bootstrap noise" in rose
    # a run from before the bootstrap and the capture keys: the numbers without intervals, said so
    old = section_b_text(0.9, 0.5, {10: {"probe/entropy_change_neg": -0.2, "probe/entropy_change_pos": -0.05}})
    assert "change from capture to step 10; capture step not logged" in old and "95% CI" not in old
    assert "negative samples -0.2000 nats" in old and "no interval logged" in old


def test_section_b_answers_with_numbers():
    yes = section_b_text(pos_end=0.9, neg_end=0.5)
    assert "**Yes** (batch metrics)" in yes and "-0.5000" in yes and "-0.1000" in yes and "-50.0%" in yes
    assert "**No** (batch metrics)" in section_b_text(pos_end=0.5, neg_end=0.9)
    # both rose, negative less: not a "yes" to "fell more on negative samples"
    assert "**No: entropy did not fall on negative samples" in section_b_text(pos_end=1.5, neg_end=1.2)
    assert "were not logged" in yes  # no probe metrics in these rows


def write_run(path, choices, summary, rows=({"step": 0, "val/accuracy": 0.1}, {"step": 1, "entropy/mean": 1.0})):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (path / "choices.json").write_text(json.dumps(choices))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_compare_runs_mean_std_over_seeds_and_failed_jobs(tmp_path):
    base = {"shaper": "none", "stage": "always"}
    dirs = [write_run(tmp_path / "sweep" / "0", base, {"val/accuracy_final": 0.2, "val/accuracy_gain": 0.1,
                                                       "entropy/mean_final": 1.0}),
            write_run(tmp_path / "sweep" / "1", base, {"val/accuracy_final": 0.4, "val/accuracy_gain": 0.3,
                                                       "entropy/mean_final": 0.5}),
            write_run(tmp_path / "sweep" / "2", {"shaper": "[ppl]", "stage": "plateau"}, None),
            tmp_path / "sweep" / "3"]
    dirs[-1].mkdir()
    table = compare_runs(expand([tmp_path / "sweep"]), tmp_path / "out")
    lines = table.splitlines()
    # 0.2, 0.4 -> mean 0.3, std (ddof 1) 0.1414
    assert lines[2] == "| none @always | 2 | 0.300 ± 0.141 | 0.200 ± 0.141 | 0.750 ± 0.354 | 0 |"
    assert lines[3] == "| ppl @plateau | 0 | n/a | n/a | n/a | 1 |"
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "sweep/3`: no metrics.jsonl" in md and "sweep/2` (ppl @plateau): no summary.json" in md
    assert (tmp_path / "out" / "compare_curves.png").stat().st_size > 1000
    assert "Identical curves" not in md  # the same rows, but two seeds against one: not the same arm's curves


def test_compare_runs_names_identical_arms(tmp_path):
    dirs = [write_run(tmp_path / "sweep" / "0", {"shaper": "none", "stage": "always"}, {}),
            write_run(tmp_path / "sweep" / "1", {"shaper": "position", "stage": "plateau"}, {})]
    compare_runs(dirs, tmp_path / "out")
    md = (tmp_path / "out" / "comparison.md").read_text()
    assert "Identical curves (validation accuracy and entropy, every seed): `none @always` = `position @plateau`." in md


def test_coinciding_arms_share_a_legend_entry():
    a = [{"step": 0, "val/accuracy": 0.1}, {"step": 1, "entropy/mean": 1.0}]
    b = [{"step": 0, "val/accuracy": 0.2}, {"step": 1, "entropy/mean": 0.9}]
    c = [{"step": 0, "val/accuracy": 0.2}, {"step": 1, "entropy/mean": 0.8}]
    # grpo and position_plateau: the same two runs, seeds in another order; ppl differs in one value
    runs = [("grpo", a), ("grpo", b), ("ppl", a), ("ppl", c), ("position_plateau", b), ("position_plateau", a)]
    groups = plots.coinciding(runs)
    assert groups == [["grpo", "position_plateau"], ["ppl"]]
    assert plots.legend_labels(groups) == {"grpo": "grpo = position_plateau (identical)", "ppl": "ppl",
                                           "position_plateau": "grpo = position_plateau (identical)"}


def test_position_profile_halves_are_told_apart():
    names = [f"{stage}{half}" for stage in ("rising", "plateau") for half in ("", " 1st half", " 2nd half")]
    styles = {name: plots.profile_style(name) for name in names}
    assert len({(s["color"], s["linestyle"], s["marker"]) for s in styles.values()}) == 6
    for stage in ("rising", "plateau"):  # a stage's halves: its colour, each its own line style and marker
        whole, first, second = (styles[f"{stage}{h}"] for h in ("", " 1st half", " 2nd half"))
        assert whole["color"] == first["color"] == second["color"]
        assert len({whole["linestyle"], first["linestyle"], second["linestyle"]}) == 3
        assert len({whole["marker"], first["marker"], second["marker"]}) == 3


def test_not_a_run_folder(tmp_path):
    with pytest.raises(AnalysisInputError, match="has no metrics.jsonl"):
        expand([tmp_path])
    with pytest.raises(AnalysisInputError, match="does not exist"):
        load_run(tmp_path / "missing")
    assert math.isnan(report.change_to([{"step": 1, "x": 0.0}], "x", 1)["relative"])


# ------------------------------------------------------------------ section (d): delta_logp
def test_landing_hand_computed():
    got = landing(np.array([0, 0, 1, 1, 1]), np.array([0.1, -0.3, 0.2, 0.2, -0.4]), np.array([1.0, -1.0, -1.0, 0.0, 1.0]), 3)
    # bucket 0: |0.1|, |-0.3| -> 0.2; toward 0.1*1 + (-0.3)*(-1) = 0.4 -> 0.2
    # bucket 1: (0.2 + 0.2 + 0.4) / 3; toward 0.2*(-1) + 0.2*0 + (-0.4)*1 = -0.6 -> -0.2; bucket 2 empty
    assert got["tokens"].tolist() == [2, 3, 0]
    np.testing.assert_allclose(got["abs"], [0.2, 0.8 / 3, np.nan])
    np.testing.assert_allclose(got["toward"], [0.2, -0.2, np.nan])


def test_quantile_buckets():
    bucket, edges = quantile_buckets(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2)
    assert edges.tolist() == [1.0, 3.0, 5.0] and bucket.tolist() == [0, 0, 1, 1, 1]  # the maximum in the last


def delta_table(delta: list | None = None) -> pa.Table:
    """Step 5 (rising): tokens at rel 0.0 and 0.9, both advantage +1; step 20 (plateau): rel 0.1 and
    0.5, both advantage -1."""
    data = {"step": pa.array([5, 5, 20, 20], pa.int64()), "rel_position": pa.array([0.0, 0.9, 0.1, 0.5], pa.float32()),
            "advantage": pa.array([1.0, 1.0, -1.0, -1.0], pa.float32()),
            "entropy": pa.array([0.1, 0.2, 0.3, 0.4], pa.float32()), "logppl": pa.array([0.5, 0.5, 1.0, 1.0], pa.float32())}
    if delta is not None:
        data["delta_logp"] = pa.array(delta, pa.float32())
    return pa.table(data)


def test_section_d_hand_computed_report_table():
    text = section_d(delta_table([0.2, -0.1, -0.4, 0.05]), boundary=15)
    # |Δ| mean (0.2 + 0.1 + 0.4 + 0.05) / 4; toward (0.2 - 0.1 + 0.4 - 0.05) / 4
    assert "1 rising dump steps (5-5); 1 plateau dump steps (20-20), 4 tokens. Mean |Δ| 0.1875" in text
    assert "mean signed change toward the reward +0.1125" in text
    assert ("| position | rising tokens | rising mean abs Δ | rising toward reward | plateau tokens | "
            "plateau mean abs Δ | plateau toward reward |") in text
    assert "| 0.0-0.2 | 1 | 0.2000 | +0.2000 | 1 | 0.4000 | +0.4000 |" in text
    assert "| 0.4-0.6 | 0 | n/a | n/a | 1 | 0.0500 | -0.0500 |" in text
    assert "| 0.8-1.0 | 1 | 0.1000 | -0.1000 | 0 | n/a | n/a |" in text
    assert ("By position, mean |Δ| in the last fifth vs the first fifth of the response: rising 0.1000 vs 0.2000 "
            "(0.50x); plateau n/a vs 0.4000 (ratio n/a).") in text
    for heading in ("### By position", "### By response logPPL", "### By token entropy"):
        assert heading in text
    # no column, or a column of nulls (a writer without it): no tables, said so
    for old in (delta_table(), delta_table([None] * 4)):
        assert "No `delta_logp` in the token records" in section_d(old, boundary=15)


def test_read_tokens_accepts_records_without_delta_logp(tmp_path):
    (tmp_path / "tokens").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    new = pa.table({name: pa.array([1.0], pa.float32()) for name in rf.TOKEN_COLUMNS})
    old = new.drop_columns(["delta_logp"])
    pq.write_table(old, rf.token_file(tmp_path, 1))
    pq.write_table(new, rf.token_file(tmp_path, 2))
    tokens = read_tokens(load_run(tmp_path))
    assert tokens.column_names == list(rf.TOKEN_COLUMNS) and tokens.column("delta_logp").to_pylist() == [None, 1.0]


def test_update_spread_says_over_1000x_when_the_low_bucket_hardly_moved():
    import numpy as np

    from rlvr_exp.analysis.update_section import _spread

    per = {"rising": {"abs": np.array([0.00001, 0.5])}, "plateau": {"abs": np.array([0.1, 0.2])}}
    # 0.5 / 0.00001 = 50000 -> "over 1000x"; 0.2 / 0.1 = 2
    assert _spread(per, "entropy", "lowest", "highest") == (
        "By entropy, mean |Δ| in the highest vs the lowest: rising 0.5000 vs 0.0000 (over 1000x); "
        "plateau 0.2000 vs 0.1000 (2.00x).")
