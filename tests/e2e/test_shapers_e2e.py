"""Shapers end to end: the dumped per-token record obeys each formula (docs/method.md section 3, 4, 8), the
schedules switch shapers on and off, and bad settings fail before any model loads."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from rlvr_exp.build import build
from rlvr_exp.config import ConfigError
from tests.conftest import FAST, compose


def records(run_dir, step):
    t = pq.read_table(run_dir / "tokens" / f"step_{step:06d}.parquet").to_pydict()
    return {k: np.asarray(v) for k, v in t.items()}


def ppl_weights(rec, alpha=0.01):
    """Per-token weight from the dumped per-sample logppl, computed independently with numpy."""
    samples = sorted(set(rec["sample"].tolist()))
    first = {s: int(np.argmax(rec["sample"] == s)) for s in samples}
    logppl = {s: float(rec["logppl"][first[s]]) for s in samples}
    group = {s: int(rec["group"][first[s]]) for s in samples}
    weight = {}
    for g in set(group.values()):
        members = [s for s in samples if group[s] == g]
        x = np.array([logppl[s] for s in members], dtype=np.float64)
        q1, q3 = np.percentile(x, [25, 75])
        keep = x[(x >= q1 - 1.5 * (q3 - q1)) & (x <= q3 + 1.5 * (q3 - q1))]
        keep = keep if keep.size else x
        mu, sigma = keep.mean(), keep.std()
        sigma = 1.0 if sigma <= 1e-6 else sigma
        for s, v in zip(members, x):
            weight[s] = float(np.clip(1 - alpha * (v - mu) / sigma, 0.8, 1.2))
    return np.array([weight[s] for s in rec["sample"].tolist()])


def position_bonus(adv, rel, alpha=0.05, k=15.0):
    b = alpha / (1 + np.exp(-k * (rel - 0.5)))
    return adv + np.sign(adv) * np.minimum(b, 0.5 * np.abs(adv))


def test_ppl(run_inprocess):
    _, run_dir, _ = run_inprocess(["shaper=ppl", "trainer.steps=2"])
    for step in (1, 2):
        rec = records(run_dir, step)
        expected = rec["advantage_raw"] * ppl_weights(rec)
        assert np.allclose(rec["advantage"], expected, atol=1e-5)
        assert not np.allclose(rec["advantage"], rec["advantage_raw"])  # the shaper did something


def test_position_in_its_window_only(run_inprocess):
    _, run_dir, _ = run_inprocess(["shaper=position", "stage=window", "stage.schedule.start=2",
                                   "stage.schedule.end=3", "trainer.steps=3"])
    for step in (1, 3):  # outside [2, 3): unshaped
        rec = records(run_dir, step)
        assert np.array_equal(rec["advantage"], rec["advantage_raw"])
    rec = records(run_dir, 2)
    assert np.allclose(rec["advantage"], position_bonus(rec["advantage_raw"], rec["rel_position"]), atol=1e-6)
    assert not np.allclose(rec["advantage"], rec["advantage_raw"])
    assert np.all(np.sign(rec["advantage"]) == np.sign(rec["advantage_raw"]))


def test_ppl_then_position_stack(run_inprocess):
    summary, run_dir, _ = run_inprocess(["shaper=[ppl,position]", "trainer.steps=1"])
    rec = records(run_dir, 1)
    a1 = rec["advantage_raw"] * ppl_weights(rec)
    assert np.allclose(rec["advantage"], position_bonus(a1, rec["rel_position"]), atol=1e-5)
    for key in ("shaper/ppl/weight_mean", "shaper/position/bonus_mean", "shaper/ppl/active"):
        assert key in summary


def test_mask_shapers_narrow_in_loss(run_inprocess):
    _, run_dir, _ = run_inprocess(["shaper=positive_only", "trainer.steps=1"])
    rec = records(run_dir, 1)
    assert np.array_equal(rec["in_loss"], rec["advantage_raw"] > 0)


def _no_model_load(monkeypatch):
    from rlvr_exp.models.tiny import TinyQwen2

    def boom(self, task):
        raise AssertionError("the model was loaded before the config was checked")

    monkeypatch.setattr(TinyQwen2, "load", boom)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["shaper=ppl", "shaper.ppl.alpha=-1.0"], ["shaper.ppl", "alpha"]),
        (["shaper=high_entropy", "shaper.high_entropy.rho=1.5"], ["shaper.high_entropy", "rho"]),
        (["shaper=position", "stage=window", "stage.schedule.start=300", "stage.schedule.end=200"], ["stage.schedule", "end"]),
        (["shaper=high_entropy", "trainer.score_entropy=false"], ["entropy", "trainer.score_entropy"]),
        # the detector watches entropy/mean: without entropies a stage gate would never switch
        (["shaper=position", "stage=plateau", "trainer.score_entropy=false"], ["stage.schedule", "trainer.score_entropy"]),
        (["shaper=position", "stage=rising", "trainer.score_entropy=false"], ["stage.schedule", "trainer.score_entropy"]),
        (["experiment=ppl_position", "trainer.score_entropy=false"], ["shaper.position.schedule", "trainer.score_entropy"]),
        (["trainer.prompts_per_step=10", "trainer.prompts_per_minibatch=4"], ["trainer.prompts_per_step"]),
        (["algo.loss_agg=sum"], ["algo.loss_agg"]),
    ],
)
def test_bad_settings_fail_before_the_model_loads(monkeypatch, tmp_path, overrides, words):
    _no_model_load(monkeypatch)
    with pytest.raises(ConfigError) as err:
        build(compose(FAST + overrides), tmp_path)
    for word in words:
        assert word in str(err.value)


def test_unknown_shaper_names_the_options():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="shaper"):
        compose(FAST + ["shaper=nonexistent"])
