"""The trainer scores samples on the distribution the rollout sampled them from: at temperature
0.6 the log-prob ``score_batch`` assigns to each sampled token equals the sampler's own."""
from __future__ import annotations

import copy

import pytest
import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.collect import build_batch
from rlvr_exp.config import ConfigError, TrainerConfig
from rlvr_exp.faults import FaultGuard
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder
from rlvr_exp.update import ppo_update

TEMPERATURE = 0.6


def sample_with_scores(model, tokenizer, prompt: list[int], n: int, new_tokens: int):
    """n samples at TEMPERATURE (full distribution: top_p 1, top_k 0) and, per sampled token,
    the log-prob the sampler drew it with (log-softmax of generate's processed scores)."""
    torch.manual_seed(0)
    out = model.generate(
        input_ids=torch.tensor([prompt] * n), attention_mask=torch.ones(n, len(prompt), dtype=torch.long),
        do_sample=True, temperature=TEMPERATURE, top_p=1.0, top_k=0, max_new_tokens=new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        output_scores=True, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[:, len(prompt):]  # [n, T]
    scores = torch.stack(out.scores, 1)  # [n, T, V], logits / TEMPERATURE
    assert torch.allclose(scores, torch.stack(out.logits, 1) / TEMPERATURE)  # nothing truncated
    sampler_logp = torch.log_softmax(scores.float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    responses = []
    for row in tokens.tolist():
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        responses.append(row[:end])
    return responses, sampler_logp


@pytest.mark.parametrize("chunk_tokens", [0, 4])
def test_scores_equal_the_samplers_log_probs(tiny_model, char_tokenizer, chunk_tokens):
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    problem = Problem("12+34=", "46")
    responses, sampler_logp = sample_with_scores(tiny_model, char_tokenizer, enc(problem), 6, 12)
    batch = build_batch([problem], responses, 6, enc, char_tokenizer, 12)
    mask = batch.response_mask
    logp, ent = score_batch(tiny_model, batch, 4, True, LogProbSpec(TEMPERATURE, chunk_tokens))
    t = logp.shape[1]
    assert torch.allclose(logp[mask], sampler_logp[:, :t][mask], atol=1e-5)
    assert torch.all(logp[~mask] == 0) and torch.all(ent[~mask] == 0)
    # the model's own distribution (temperature 1) is not what was sampled: far off
    plain, _ = score_batch(tiny_model, batch, 4, False, LogProbSpec(1.0, 0))
    assert (plain[mask] - sampler_logp[:, :t][mask]).abs().max() > 0.1


def test_entropy_is_that_of_the_sampling_distribution(tiny_model, char_tokenizer):
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    problem = Problem("3+4=", "7")
    ids = char_tokenizer("\\boxed{7}", add_special_tokens=False)["input_ids"]
    batch = build_batch([problem], [ids], 1, enc, char_tokenizer, 12)
    _, ent = score_batch(tiny_model, batch, 4, True, LogProbSpec(TEMPERATURE, 0))
    full = torch.cat([batch.prompt_ids, batch.response_ids], 1)
    with torch.no_grad():
        z = tiny_model(full).logits[:, batch.prompt_ids.shape[1] - 1 : -1] / TEMPERATURE
    p = torch.softmax(z, -1)
    assert torch.allclose(ent, -(p * torch.log_softmax(z, -1)).sum(-1), atol=1e-5)


@pytest.mark.parametrize("chunk_tokens", [0, 4])
@pytest.mark.parametrize("update_temperature, zero", [(TEMPERATURE, True), (1.0, False)])
def test_update_and_reference_use_the_same_temperature(tiny_model, char_tokenizer, update_temperature, zero,
                                                       chunk_tokens):
    """Before the optimizer step the policy is the sampling policy: the update's ratio is 1
    (k3 KL to pi_old 0) and, with the reference a copy, KL to the reference is 0, only when the
    update scores at the rollout temperature too."""
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    problem = Problem("12+34=", "46")
    responses, _ = sample_with_scores(tiny_model, char_tokenizer, enc(problem), 4, 10)
    batch = build_batch([problem], responses, 4, enc, char_tokenizer, 10)
    spec = LogProbSpec(TEMPERATURE, 0)
    batch.logp_old, _ = score_batch(tiny_model, batch, 4, False, spec)
    batch.ref_logp, _ = score_batch(tiny_model, batch, 4, False, spec)
    batch.advantages = torch.tensor([1.0, -1.0, 0.5, -0.5]).unsqueeze(-1) * batch.response_mask
    batch.loss_mask = batch.response_mask.clone()
    model = copy.deepcopy(tiny_model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    meter = ppo_update(model, optimizer, PolicyGradient(kl_coef=0.1), batch, 4, 4, 10, 1.0, FaultGuard(1),
                       LogProbSpec(update_temperature, chunk_tokens))
    means = meter.means()
    assert (abs(means["train/kl"]) < 1e-10 and abs(means["train/kl_ref"]) < 1e-10) == zero, means


def test_training_temperature_must_be_positive():
    with pytest.raises(ConfigError, match="trainer.temperature must be > 0"):
        TrainerConfig(temperature=0.0)
    assert TrainerConfig(val_temperature=0.0).val_temperature == 0.0  # greedy validation is fine
