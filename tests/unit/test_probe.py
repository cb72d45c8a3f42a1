"""The probe set: the same token ids re-scored, exact zero change under an unchanged policy,
non-zero after an update, checkpoint round trip, and capture of a side missing at first."""
from __future__ import annotations

import copy
import io

import pytest
import torch

from rlvr_exp.algos.logprobs import LogProbSpec, forward_response, score_batch
from rlvr_exp.analysis.step import StepAnalysis
from rlvr_exp.collect import build_batch
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

PROBLEMS = [Problem("1+1=", "2"), Problem("12+345=", "357"), Problem("3+4=", "7")]
RESPONSES = ["\\boxed{2}", "\\boxed{3} and more", "\\boxed{357}", "357", "\\boxed{7}", "no answer here"]
SPEC = LogProbSpec(1.0, 0)
KEYS = {f"probe/{m}_{s}" for m in ("entropy", "logp", "entropy_change", "logp_change") for s in ("pos", "neg")}


def scored_batch(model, tokenizer, correct: list[bool]):
    enc = PromptEncoder(tokenizer, chat_template=False, max_prompt_tokens=64)
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in RESPONSES]
    batch = build_batch(PROBLEMS, ids, 2, enc, tokenizer, 32)
    batch.logp_old, batch.entropy = score_batch(model, batch, 4, True, SPEC)
    batch.correct = torch.tensor(correct)
    return batch


def stored_ids(analysis: StepAnalysis) -> dict[str, torch.Tensor]:
    return {s: p.response_ids.clone() for s, p in analysis.probe.sides.items() if p is not None}


def test_same_ids_every_time_and_zero_change(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_every=5, probe_samples_per_side=2, probe_rows_per_pass=1)
    batch = scored_batch(tiny_model, char_tokenizer, [True, False, True, False, True, False])
    analysis.observe(batch)
    ids = stored_ids(analysis)
    assert analysis.probe_metrics(3, tiny_model, SPEC) == {}  # not due
    first = analysis.probe_metrics(5, tiny_model, SPEC)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False, True] * 3))  # already captured
    second = analysis.probe_metrics(10, tiny_model, SPEC)
    assert set(first) == KEYS and first == second
    for key in KEYS:
        if "change" in key:
            assert first[key] == 0.0, key
    after = stored_ids(analysis)
    assert all(torch.equal(ids[s], after[s]) for s in ("pos", "neg"))
    # rows 0 and 2 are the positives; the stored ids are theirs, trimmed of padding
    pos = batch.select(torch.tensor([0, 2]))
    assert torch.equal(after["pos"], pos.response_ids[:, : int(pos.response_len.max())])
    assert first["probe/logp_pos"] == pytest.approx(float(pos.logp_old.sum() / pos.response_mask.sum()))


def test_changes_after_one_optimizer_step(tiny_model, char_tokenizer):
    model = copy.deepcopy(tiny_model)
    analysis = StepAnalysis(probe_every=1, probe_samples_per_side=3)
    batch = scored_batch(model, char_tokenizer, [True, False, True, False, True, False])
    analysis.observe(batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    logp, _ = forward_response(model.train(), batch, slice(0, batch.size), False, SPEC)
    (-(logp * batch.response_mask).sum() / batch.response_mask.sum()).backward()  # raise their log-probs
    optimizer.step()
    out = analysis.probe_metrics(1, model.eval(), SPEC)
    assert all(out[f"probe/{m}_change_{s}"] != 0.0 for m in ("entropy", "logp") for s in ("pos", "neg"))
    assert out["probe/logp_change_pos"] > 0 and out["probe/logp_change_neg"] > 0


def test_state_dict_round_trip(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=2)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, False, True, False, True, False]))
    buffer = io.BytesIO()
    torch.save(analysis.state_dict(), buffer)
    buffer.seek(0)
    resumed = StepAnalysis(probe_samples_per_side=2)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.probe_metrics(10, tiny_model, SPEC) == analysis.probe_metrics(10, tiny_model, SPEC)
    resumed.observe(scored_batch(tiny_model, char_tokenizer, [False, True] * 3))  # complete: no recapture
    assert all(torch.equal(a, b) for a, b in zip(stored_ids(resumed).values(), stored_ids(analysis).values()))


def test_capture_waits_for_a_missing_side(tiny_model, char_tokenizer):
    analysis = StepAnalysis(probe_samples_per_side=16)
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False] * 6))
    neg_ids = stored_ids(analysis)["neg"]
    assert analysis.probe.sides["pos"] is None and neg_ids.shape[0] == 6
    assert set(analysis.probe_metrics(10, tiny_model, SPEC)) == {k for k in KEYS if k.endswith("neg")}
    analysis.observe(scored_batch(tiny_model, char_tokenizer, [False, False, False, True, False, True]))
    ids = stored_ids(analysis)
    assert ids["pos"].shape[0] == 2 and torch.equal(ids["neg"], neg_ids)
    assert set(analysis.probe_metrics(20, tiny_model, SPEC)) == KEYS


def test_no_probe_when_off(tiny_model, char_tokenizer):
    for analysis in (StepAnalysis(enabled=False), StepAnalysis(probe_every=0)):
        analysis.observe(scored_batch(tiny_model, char_tokenizer, [True, False] * 3))
        assert analysis.probe.sides == {"pos": None, "neg": None}
        assert analysis.probe_metrics(10, tiny_model, SPEC) == {}
