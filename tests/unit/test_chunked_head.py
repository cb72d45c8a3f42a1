"""The chunked LM head (algos/chunked_head.py) equals the unchunked computation: values,
entropies and gradients, float32 and bfloat16, at temperatures 1 and 0.6, with tied and untied
heads; padding is exactly 0; heads it cannot reproduce are refused."""
from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rlvr_exp.algos.chunked_head import chunked_logprob_entropy
from rlvr_exp.algos.logprobs import LogProbSpec, forward_response, logprob_and_entropy_from_logits, score_batch
from rlvr_exp.collect import build_batch
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder


def unchunked(hidden, weight, labels, temperature):
    """Today's path: the full [M, V] logits, then log-softmax and entropy."""
    logits = torch.nn.functional.linear(hidden, weight).unsqueeze(0)
    logp, ent = logprob_and_entropy_from_logits(logits, labels.unsqueeze(0), temperature=temperature)
    return logp[0], ent[0]


def grads(fn, hidden, weight, labels, temperature, upstream):
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    logp, ent = fn(h, w, labels, temperature)
    (logp * upstream).sum().backward()
    return logp.detach(), ent, h.grad, w.grad


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_equals_unchunked_float32(temperature, chunk):
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(23, 16, generator=g), torch.randn(50, 16, generator=g) * 0.5
    labels, upstream = torch.randint(0, 50, (23,), generator=g), torch.randn(23, generator=g)
    chunked = lambda h, w, y, t: chunked_logprob_entropy(h, w, y, t, chunk, True)  # noqa: E731
    got = grads(chunked, hidden, weight, labels, temperature, upstream)
    want = grads(unchunked, hidden, weight, labels, temperature, upstream)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert got[1].requires_grad is False  # entropy is a detached metric


def test_against_hand_computed_gradient():
    """One token, V = 2, z = (0, log 3) at temperature 1: p = (1/4, 3/4), label 0:
    logp = log(1/4), d logp / d z = (1 - 1/4, -3/4), H = -(1/4 log 1/4 + 3/4 log 3/4)."""
    hidden = torch.tensor([[1.0]], requires_grad=True)
    weight = torch.tensor([[0.0], [float(torch.log(torch.tensor(3.0)))]], requires_grad=True)
    logp, ent = chunked_logprob_entropy(hidden, weight, torch.tensor([0]), 1.0, 1, True)
    logp.sum().backward()
    assert torch.allclose(logp, torch.log(torch.tensor([0.25])))
    assert torch.allclose(ent, torch.tensor([-(0.25 * torch.log(torch.tensor(0.25)) + 0.75 * torch.log(torch.tensor(0.75)))]))
    assert torch.allclose(weight.grad, torch.tensor([[0.75], [-0.75]]))  # d z / d W = hidden = 1
    assert torch.allclose(hidden.grad, torch.tensor([[-0.75 * float(torch.log(torch.tensor(3.0)))]]))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_equals_unchunked_bfloat16(temperature):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(37, 32, generator=g).bfloat16()
    weight = (torch.randn(200, 32, generator=g) * 0.3).bfloat16()
    labels, upstream = torch.randint(0, 200, (37,), generator=g), torch.randn(37, generator=g)
    chunked = lambda h, w, y, t: chunked_logprob_entropy(h, w, y, t, 8, True)  # noqa: E731
    got = grads(chunked, hidden, weight, labels, temperature, upstream)
    want = grads(unchunked, hidden, weight, labels, temperature, upstream)
    assert got[0].dtype == torch.float32 and got[2].dtype == got[3].dtype == torch.bfloat16
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])  # the same bf16 logits
    assert torch.equal(got[2], want[2])  # per-token products, the same rounding
    assert torch.allclose(got[3].float(), want[3].float(), atol=2e-2, rtol=2e-2)  # summed by chunk


def small_batch(tokenizer):
    enc = PromptEncoder(tokenizer, chat_template=False, max_prompt_tokens=64)
    problems = [Problem("1+1=", "2"), Problem("12+345=", "357")]
    ids = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    responses = [ids("\\boxed{2}"), ids("\\boxed{357} ok"), ids("so \\boxed{357}"), ids("7")]
    return build_batch(problems, responses, 2, enc, tokenizer, 32)


def model_grads(model, batch, spec):
    model = copy.deepcopy(model).train()
    logp, ent = forward_response(model, batch, slice(0, batch.size), True, spec)
    weights = torch.linspace(-1, 1, logp.numel()).view_as(logp)
    (logp.float() * weights).sum().backward()
    return logp.detach(), ent, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def llama(tie: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("which", ["qwen2_tied", "llama_untied", "llama_tied"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_model_path_equals_unchunked(tiny_model, char_tokenizer, which, temperature):
    model = {"qwen2_tied": tiny_model, "llama_untied": llama(False), "llama_tied": llama(True)}[which]
    batch = small_batch(char_tokenizer)  # 4 rows x 14 positions, 36 response tokens
    got = model_grads(model, batch, LogProbSpec(temperature, 5))
    want = model_grads(model, batch, LogProbSpec(temperature, 0))
    mask = batch.response_mask
    assert torch.all(got[0][~mask] == 0) and torch.all(got[1][~mask] == 0)
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-5)
    assert got[2].keys() == want[2].keys()
    for name, grad in got[2].items():
        assert torch.allclose(grad, want[2][name], atol=1e-5, rtol=1e-4), name


def test_model_path_bfloat16(char_tokenizer):
    model = llama(False).to(torch.bfloat16)
    batch = small_batch(char_tokenizer)
    got = model_grads(model, batch, LogProbSpec(0.6, 7))
    want = model_grads(model, batch, LogProbSpec(0.6, 0))
    assert torch.all(got[0][~batch.response_mask] == 0)
    assert torch.allclose(got[0], want[0], atol=2e-2) and torch.allclose(got[1], want[1], atol=2e-2)
    for name, grad in got[2].items():
        scale = float(want[2][name].float().abs().max())
        assert torch.allclose(grad.float(), want[2][name].float(), atol=2e-2 * scale + 1e-6), name


def test_score_batch_in_passes(tiny_model, char_tokenizer):
    batch = small_batch(char_tokenizer)
    got = score_batch(tiny_model, batch, 3, True, LogProbSpec(0.6, 4))
    want = score_batch(tiny_model, batch, 3, True, LogProbSpec(0.6, 0))
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-5)


def test_small_blocks_take_the_unchunked_path(tiny_model, char_tokenizer):
    """N*T <= chunk_tokens: the model's own logits, bit for bit the unchunked numbers."""
    batch = small_batch(char_tokenizer)
    got = score_batch(tiny_model, batch, 4, True, LogProbSpec(1.0, batch.response_mask.numel()))
    want = score_batch(tiny_model, batch, 4, True, LogProbSpec(1.0, 0))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_head_it_cannot_reproduce_is_refused(char_tokenizer):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="trainer.logprob_chunk_tokens=0"):
        forward_response(model, small_batch(char_tokenizer), slice(0, 4), False, LogProbSpec(1.0, 4))
    with pytest.raises(ValueError, match="'gpt2'"):
        LogProbSpec(1.0, 4).check(model)
    LogProbSpec(1.0, 0).check(model)  # unchunked: any causal LM
