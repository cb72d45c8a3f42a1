"""The probe set: the selection rule (many prompts, a few responses each, filled over steps), the
same token ids re-scored with exact zero change under an unchanged policy, non-zero after an update,
the prompt bootstrap behind each change's interval, checkpoint round trip, and capture of a side
missing at first."""
from __future__ import annotations

import copy
import io
from collections import Counter

import numpy as np
import pytest
import torch

from rlvr_exp.algos.logprobs import LogProbSpec, forward_response, score_batch
from rlvr_exp.analysis.bootstrap import percentile_interval, resample_counts, resampled_means
from rlvr_exp.analysis.probe import pick_rows
from rlvr_exp.analysis.step import StepAnalysis
from rlvr_exp.collect import build_batch
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

PROBLEMS = [Problem("1+1=", "2"), Problem("12+345=", "357"), Problem("3+4=", "7")]
RESPONSES = ["\\boxed{2}", "\\boxed{3} and more", "\\boxed{357}", "357", "\\boxed{7}", "no answer here"]
SPEC = LogProbSpec(1.0, 0)
MEASURES = ("entropy", "logp")
VALUES = {f"probe/{m}_{s}" for m in MEASURES for s in ("pos", "neg")}
CHANGES = {f"probe/{m}_change_{s}" for m in MEASURES for s in ("pos", "neg")}
SIZES = {f"probe/{k}_{s}" for k in ("responses", "prompts", "capture_first", "capture_last") for s in ("pos", "neg")}
GAPS = {f"probe/{m}_change_neg_minus_pos" for m in MEASURES}
KEYS = VALUES | SIZES | {f"{k}{e}" for k in CHANGES | GAPS for e in ("", "_lo", "_hi")}


def scored_batch(model, tokenizer, correct: list[bool], problems=PROBLEMS, responses=RESPONSES, samples=2):
    enc = PromptEncoder(tokenizer, chat_template=False, max_prompt_tokens=64)
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    batch = build_batch(problems, ids, samples, enc, tokenizer, 32)
    batch.logp_old, batch.entropy = score_batch(model, batch, 4, True, SPEC)
    batch.correct = torch.tensor(correct)
    return batch


def stored_ids(analysis: StepAnalysis) -> dict[str, torch.Tensor]:
    return {s: p.response_ids.clone() for s, p in analysis.probe.sides.items() if p is not None}


# ------------------------------------------------------------------------------ selection rule
def test_pick_rows_round_robin_over_prompts():
    prompts = ["a", "a", "b", "c", "c", "c"]
    every = [True] * 6
    # first row of a, b, c, then the second of a and of c; c's third is over the cap of 2
    assert pick_rows(prompts, every, Counter(), max_per_prompt=2, room=10) == [0, 2, 3, 1, 4]
    assert pick_rows(prompts, every, Counter(), max_per_prompt=2, room=4) == [0, 2, 3, 1]
    assert pick_rows(prompts, every, Counter(), max_per_prompt=1, room=10) == [0, 2, 3]
    # only eligible rows; "a" already gave one response earlier, so it may give one more
    eligible = [False, True, True, True, False, True]
    assert pick_rows(prompts, eligible, Counter({"a": 1}), max_per_prompt=2, room=10) == [1, 2, 3, 5]
    assert pick_rows(prompts, eligible, Counter({"a": 2, "c": 2}), max_per_prompt=2, room=10) == [2]
    assert pick_rows(prompts, [False] * 6, Counter(), max_per_prompt=2, room=10) == []


def test_one_response_per_prompt_when_capped(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=3, probe_max_per_prompt=1)
    # prompt 0 has two positives (rows 0, 1): only row 0 is taken, then one of each other prompt
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, True, True, False, True, False]), step=1)
    pos = analysis.probe.sides["pos"]
    assert pos.prompt_index.tolist() == [0, 1, 2] and pos.capture_step.tolist() == [1, 1, 1]
    assert analysis.probe.prompts == [p.question for p in PROBLEMS]


def test_fills_from_following_steps_within_the_window(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=4, probe_max_per_prompt=1, probe_fill_steps=3)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, False] * 3), step=2)  # 3 pos, 3 neg
    assert analysis.probe.sides["pos"].size == 3 and analysis.probe.room("pos", 3) == 1
    # the same three prompts again: each already gave its one response, nothing is taken
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True] * 6), step=3)
    assert analysis.probe.sides["pos"].size == 3
    new = [Problem("2+2=", "4"), Problem("5+5=", "10"), Problem("6+1=", "7")]
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True] * 6, problems=new), step=4)
    pos = analysis.probe.sides["pos"]
    assert pos.size == 4 and pos.prompt_index.tolist() == [0, 1, 2, 3] and pos.capture_step.tolist() == [2, 2, 2, 4]
    assert analysis.probe.room("neg", 5) == 0  # the window (steps 2, 3, 4) is over: neg keeps its 3
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False] * 6, problems=new), step=5)
    assert analysis.probe.sides["neg"].size == 3
    out = analysis.probe_metrics(10, tiny_model, SPEC)
    assert (out["probe/capture_first_pos"], out["probe/capture_last_pos"], out["probe/responses_pos"]) == (2, 4, 4)
    assert (out["probe/prompts_neg"], out["probe/responses_neg"], out["probe/capture_last_neg"]) == (3, 3, 2)
    # rows captured from batches of different widths, padded to one: still exactly zero change
    assert all(out[k] == 0.0 for k in CHANGES | GAPS)


# ------------------------------------------------------------------------------ re-scoring
def test_same_ids_every_time_and_zero_change(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_every=5, probe_samples_per_side=2, probe_rows_per_pass=1)
    batch = scored_batch(tiny_model, char_tokenizer, [True, False, True, False, True, False])
    analysis.observe(batch, step=1)
    ids = stored_ids(analysis)
    assert analysis.probe_metrics(3, tiny_model, SPEC) == {}  # not due
    first = analysis.probe_metrics(5, tiny_model, SPEC)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False, True] * 3), step=2)  # full: nothing taken
    second = analysis.probe_metrics(10, tiny_model, SPEC)
    assert set(first) == KEYS and first == second
    for key in KEYS:
        if "change" in key:
            assert first[key] == 0.0, key  # every resample of all-zero changes is zero: a zero-width interval
    after = stored_ids(analysis)
    assert all(torch.equal(ids[s], after[s]) for s in ("pos", "neg"))
    # rows 0 and 2 are the positives (prompts 0 and 1); the stored ids are theirs, trimmed of padding
    pos = batch.select(torch.tensor([0, 2]))
    assert torch.equal(after["pos"], pos.response_ids[:, : int(pos.response_len.max())])
    assert first["probe/logp_pos"] == pytest.approx(float(pos.logp_old.sum() / pos.response_mask.sum()))


def test_changes_after_one_optimizer_step(tiny_model, char_tokenizer):
    model = copy.deepcopy(tiny_model)
    analysis = StepAnalysis(probe_every=1, probe_samples_per_side=3)
    batch = scored_batch(model, char_tokenizer, [True, False, True, False, True, False])
    analysis.observe(batch, step=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logp, _ = forward_response(model.train(), batch, slice(0, batch.size), False, SPEC)
    (-(logp * batch.response_mask).sum() / batch.response_mask.sum()).backward()  # raise their log-probs
    optimizer.step()
    out = analysis.probe_metrics(1, model.eval(), SPEC)
    assert all(out[f"probe/{m}_change_{s}"] != 0.0 for m in MEASURES for s in ("pos", "neg"))
    assert out["probe/logp_change_pos"] > 0 and out["probe/logp_change_neg"] > 0
    for key in CHANGES | GAPS:
        assert out[f"{key}_lo"] <= out[key] <= out[f"{key}_hi"], key
    gap = out["probe/entropy_change_neg"] - out["probe/entropy_change_pos"]
    assert out["probe/entropy_change_neg_minus_pos"] == pytest.approx(gap, abs=1e-12)


# ------------------------------------------------------------------------------ the bootstrap
def test_bootstrap_of_all_equal_prompts_has_zero_width():
    draws = resample_counts(4, 200, seed=0)
    assert draws.shape == (200, 4) and (draws.sum(1) == 4).all()
    # every prompt's tokens average 0.5 (sums over counts): every resample is 0.5
    means = resampled_means(np.array([1.0, 0.5, 2.0, 1.5]), np.array([2, 1, 4, 3]), draws)
    assert percentile_interval(means) == (0.5, 0.5)


def test_bootstrap_of_two_prompts_spans_their_means():
    # prompt A: tokens 1, 1 (sum 2, 2 tokens); prompt B: token 4. Resamples are AA (mean 1), AB/BA
    # ((2 + 4) / 3 = 2) and BB (4), each of AA and BB with probability 1/4: the 2.5% and 97.5%
    # quantiles of 1000 resamples are 1 and 4 (P(fewer than 26 AA draws) < 1e-40).
    draws = resample_counts(2, 1000, seed=0)
    means = resampled_means(np.array([2.0, 4.0]), np.array([2.0, 1.0]), draws)
    assert set(np.unique(means)) == {1.0, 2.0, 4.0}
    assert percentile_interval(means) == (1.0, 4.0)
    # a resample without a token of the statistic has no value; none valued at all gives nan
    empty = resampled_means(np.array([0.0, 3.0]), np.array([0.0, 1.0]), np.array([[2, 0], [1, 1]]))
    assert np.isnan(empty[0]) and empty[1] == 3.0
    assert all(np.isnan(percentile_interval(np.array([np.nan]))))


def test_bootstrap_against_a_loop():
    rng = np.random.default_rng(1)
    tokens = [rng.normal(size=rng.integers(1, 6)) for _ in range(7)]  # 7 prompts' token values
    draws = resample_counts(7, 50, seed=3)
    fast = resampled_means(np.array([t.sum() for t in tokens]), np.array([t.size for t in tokens]), draws)
    for b in range(50):
        pooled = np.concatenate([tokens[p] for p in range(7) for _ in range(draws[b, p])])
        assert fast[b] == pytest.approx(pooled.mean(), rel=1e-12)
    assert np.array_equal(resample_counts(7, 50, seed=3), draws)  # seeded
    with pytest.raises(ValueError, match=">= 1 prompt"):
        resample_counts(0, 10, seed=0)


# ------------------------------------------------------------------------------ state
def test_state_dict_round_trip(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=2)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, False, True, False, True, False]), step=1)
    buffer = io.BytesIO()
    torch.save(analysis.state_dict(), buffer)
    buffer.seek(0)
    resumed = StepAnalysis(probe_samples_per_side=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.probe_metrics(10, tiny_model, SPEC) == analysis.probe_metrics(10, tiny_model, SPEC)
    resumed.observe(scored_batch(tiny_model, char_tokenizer, [False, True] * 3), step=2)  # full: no recapture
    assert all(torch.equal(a, b) for a, b in zip(stored_ids(resumed).values(), stored_ids(analysis).values()))
    assert resumed.probe.prompts == analysis.probe.prompts
    with pytest.raises(ValueError, match="predates the many-prompt probe"):
        resumed.load_state_dict({"probe": {"pos": None, "neg": None}})


def test_capture_waits_for_a_missing_side(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=16)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False] * 6), step=1)
    neg_ids = stored_ids(analysis)["neg"]
    assert analysis.probe.sides["pos"] is None and neg_ids.shape[0] == 6
    assert set(analysis.probe_metrics(10, tiny_model, SPEC)) == {k for k in KEYS if "_neg" in k and "minus" not in k}
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False, False, False, True, False, True]), step=9)
    ids = stored_ids(analysis)
    assert ids["pos"].shape[0] == 2 and torch.equal(ids["neg"], neg_ids)  # neg's fill window closed at step 6
    assert set(analysis.probe_metrics(20, tiny_model, SPEC)) == KEYS


def test_no_probe_when_off(tiny_model, char_tokenizer):
    for analysis in (StepAnalysis(enabled=False), StepAnalysis(probe_every=0)):
        analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, False] * 3), step=1)
        assert analysis.probe.sides == {"pos": None, "neg": None}
        assert analysis.probe_metrics(10, tiny_model, SPEC) == {}
