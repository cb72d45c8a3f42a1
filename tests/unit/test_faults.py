"""Numerical faults: skipped updates leave no trace in the weights, named stops, NaN kept in logs."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.faults import FaultGuard, NonFiniteLogitsError, NumericalFault, json_safe
from rlvr_exp.logging.run_logger import RunLogger
from rlvr_exp.rollout.base import SamplingParams
from rlvr_exp.rollout.hf import HFRollout
from rlvr_exp.update import ppo_update

SPEC = LogProbSpec(1.0, 0)


def test_guard_skips_then_stops_naming_step_and_checkpoint():
    guard = FaultGuard(max_consecutive_skips=2)
    guard.step, guard.last_checkpoint = 7, Path("/runs/a/checkpoints/step_000005")
    assert guard.admit(1.0, 0.5)
    assert not guard.admit(float("nan"), 0.5)
    assert guard.admit(1.0, 0.5)  # a good update resets the run of skips
    assert not guard.admit(1.0, float("inf"))
    with pytest.raises(NumericalFault, match=r"step 7: 2 optimizer updates in a row.*step_000005"):
        guard.admit(float("-inf"), 1.0)
    assert guard.total == 3


def test_guard_without_checkpoint_says_so():
    guard = FaultGuard(1)
    guard.step = 3
    with pytest.raises(NumericalFault, match="step 3.*no checkpoint was saved"):
        guard.check_parameters([torch.ones(2), torch.tensor([1.0, float("nan")])])
    guard.check_parameters([torch.ones(2)])  # finite: no fault
    with pytest.raises(NumericalFault, match="non-finite log-probs"):
        guard.check_scores("log-probs", torch.zeros(2, 3), torch.tensor([[float("inf")]]))


def test_json_safe_keeps_non_finite_as_strings():
    assert [json_safe(v) for v in (1.5, float("nan"), float("inf"), float("-inf"), "ppl")] == [
        1.5, "nan", "inf", "-inf", "ppl"]
    assert float("nan") != float(json_safe(float("nan")))  # reads back as NaN


def test_run_logger_records_nan_instead_of_dropping_it(tmp_path):
    logger = RunLogger(mode="disabled", progress_bar=False)
    logger.start(tmp_path, {}, total_steps=1)
    logger.log(1, {"loss/policy": float("nan"), "train/grad_norm": float("inf"), "reward/mean": 0.5})
    logger.finish()
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row == {"step": 1, "loss/policy": "nan", "train/grad_norm": "inf", "reward/mean": 0.5}


def _batch(model: torch.nn.Module, advantages: torch.Tensor) -> RolloutBatch:
    """4 responses of 3 tokens after a 2-token prompt; the last response has 1 padding token."""
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    batch = RolloutBatch(
        prompt_ids=torch.randint(3, 20, (4, 2), generator=gen), prompt_mask=torch.ones(4, 2, dtype=torch.bool),
        response_ids=torch.randint(3, 20, (4, 3), generator=gen) * mask, response_mask=mask,
        group_ids=torch.tensor([0, 0, 1, 1]), truncated=torch.zeros(4, dtype=torch.bool),
        problems=[], texts=[])
    with torch.no_grad():
        batch.logp_old, _ = score_batch(model, batch, 4, False, SPEC)
    batch.advantages, batch.loss_mask = advantages * mask, mask
    return batch


def test_non_finite_update_changes_neither_weights_nor_optimizer(tiny_model):
    model = copy.deepcopy(tiny_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0e-2)
    before = copy.deepcopy(model.state_dict())
    bad = torch.full((4, 3), float("nan"))
    guard = FaultGuard(max_consecutive_skips=5)
    meter = ppo_update(model, opt, PolicyGradient(), _batch(model, bad), 2, 2, 3, 1.0, guard, SPEC)
    means = meter.means()
    assert means["train/nonfinite_skips"] == 2.0 and means["train/optimizer_steps"] == 0.0
    assert guard.consecutive == 2
    assert opt.state_dict()["state"] == {}  # no Adam moments, no step count
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    good = ppo_update(model, opt, PolicyGradient(), _batch(model, torch.ones(4, 3)), 2, 2, 3, 1.0, guard, SPEC)
    assert good.means()["train/optimizer_steps"] == 2.0 and guard.consecutive == 0


def test_sampling_with_nan_weights_is_a_named_error(tiny_model, char_tokenizer):
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    rollout = HFRollout()
    rollout.bind(model, char_tokenizer.pad_token_id, char_tokenizer.eos_token_id)
    prompt = char_tokenizer("1+2=")["input_ids"]
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite while sampling"):
        rollout.generate([prompt], SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4))
