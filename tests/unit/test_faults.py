"""Numerical faults: skipped updates leave no trace in the weights, named stops, NaN kept in logs."""
from __future__ import annotations

import copy
import importlib.machinery
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.faults import FaultGuard, NonFiniteLogitsError, NumericalFault, json_safe
from rlvr_exp.logging.run_logger import RunLogger
from rlvr_exp.rollout.base import SamplingParams
from rlvr_exp.rollout.hf import HFRollout
from rlvr_exp.rollout.vllm_engine import VLLMRollout, responses
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


# ------------------------------------------------- rollout=vllm, with a fake engine (vLLM not needed)
def completion(index, ids, finish, logprobs, cumulative=True):
    """A vLLM ``CompletionOutput`` as the engine reports it with ``logprobs=0``: one
    ``{token_id: Logprob}`` per sampled token, and their sum (absent in some vLLM versions)."""
    steps = [{t: SimpleNamespace(logprob=lp)} for t, lp in zip(ids, logprobs)]
    total = sum(logprobs) if cumulative else None
    return SimpleNamespace(index=index, token_ids=tuple(ids), finish_reason=finish, logprobs=steps,
                           cumulative_logprob=total)


def request(*completions):
    return SimpleNamespace(outputs=list(completions))


EOS = 2


def test_vllm_responses_are_prompt_major_and_keep_eos():
    outputs = [request(completion(1, [5, 6], "length", [-0.1, -0.2]), completion(0, [7], "stop", [-0.3])),
               request(completion(0, [8, EOS], "stop", [-0.4, -0.5]))]
    assert responses(outputs, EOS) == [[7, EOS], [5, 6], [8, EOS]]


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), float("inf")])
@pytest.mark.parametrize("cumulative", [True, False])
def test_vllm_non_finite_sampled_logprob_is_a_named_fault(bad, cumulative):
    outputs = [request(completion(0, [5, 6], "length", [-0.1, -0.2], cumulative)),
               request(completion(0, [7, 8], "length", [-0.3, bad], cumulative))]
    with pytest.raises(NonFiniteLogitsError, match="NaN or infinite while sampling"):
        responses(outputs, EOS)


def test_vllm_rollout_asks_for_logprobs_and_stops_on_nan(monkeypatch):
    """The whole ``VLLMRollout.generate`` on a fake ``vllm`` module and engine: each request asks
    for the sampled tokens' log-probs, and a NaN among them raises before any ids are returned."""
    asked = []
    fake = types.ModuleType("vllm")
    fake.__spec__ = importlib.machinery.ModuleSpec("vllm", None)  # "installed", for VLLMRollout's check
    fake.SamplingParams = lambda **kw: asked.append(kw) or kw
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)

    class Engine:
        def __init__(self, logprob):
            self.logprob = logprob

        def generate(self, prompts, params, use_tqdm):
            return [request(*(completion(i, [4, EOS], "stop", [-0.5, self.logprob]) for i in range(p["n"])))
                    for p in params]

    rollout = VLLMRollout()
    rollout.eos_id = EOS
    sampling = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4)
    rollout.llm = Engine(-0.25)
    assert rollout.generate([[1, 3], [3]], sampling) == [[4, EOS]] * 4
    assert [kw["logprobs"] for kw in asked] == [0, 0]
    rollout.llm = Engine(float("nan"))
    with pytest.raises(NonFiniteLogitsError):
        rollout.generate([[1, 3]], sampling)
