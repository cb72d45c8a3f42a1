"""Log-probs and entropies from logits and from the model, against direct computation."""
from __future__ import annotations

import torch

from rlvr_exp.algos.logprobs import LogProbSpec, forward_response, logprob_and_entropy_from_logits
from rlvr_exp.collect import build_batch
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

SPEC = LogProbSpec(1.0, 0)


def test_against_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 11, (3, 5), generator=g)
    logp, ent = logprob_and_entropy_from_logits(logits, labels, chunk_rows=2)
    ref = torch.log_softmax(logits, -1)
    assert torch.allclose(logp, ref.gather(-1, labels.unsqueeze(-1)).squeeze(-1))
    assert torch.allclose(ent, -(ref.exp() * ref).sum(-1))


def test_uniform_logits_have_entropy_log_v():
    logp, ent = logprob_and_entropy_from_logits(torch.zeros(1, 2, 8), torch.zeros(1, 2, dtype=torch.long))
    assert torch.allclose(ent, torch.full((1, 2), torch.log(torch.tensor(8.0)).item()))
    assert torch.allclose(logp, torch.full((1, 2), -torch.log(torch.tensor(8.0)).item()))


def test_padding_changes_nothing_and_stays_zero(tiny_model, char_tokenizer):
    """A response scored inside a padded batch equals the same response scored alone, and its
    padding positions are exactly 0."""
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    short, long_ = Problem("1+1=", "2"), Problem("12+345=", "357")
    ids = lambda s: char_tokenizer(s, add_special_tokens=False)["input_ids"]
    responses = [ids("\\boxed{2}"), ids("\\boxed{357} ok")]
    both = build_batch([short, long_], responses, 1, enc, char_tokenizer, 32)
    alone = build_batch([short], responses[:1], 1, enc, char_tokenizer, 32)
    with torch.no_grad():
        lp_b, ent_b = forward_response(tiny_model, both, slice(0, 2), True, SPEC)
        lp_a, ent_a = forward_response(tiny_model, alone, slice(0, 1), True, SPEC)
    n = len(responses[0])
    assert torch.allclose(lp_b[0, :n], lp_a[0, :n], atol=1e-5)
    assert torch.allclose(ent_b[0, :n], ent_a[0, :n], atol=1e-5)
    assert torch.all(lp_b[0, n:] == 0) and torch.all(ent_b[0, n:] == 0)
    assert both.prompt_mask[0].sum() == 4 and both.response_mask[0].sum() == n


def test_model_logprobs_match_full_log_softmax(tiny_model, char_tokenizer):
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    r = char_tokenizer("\\boxed{7}", add_special_tokens=False)["input_ids"]
    b = build_batch([Problem("3+4=", "7")], [r], 1, enc, char_tokenizer, 32)
    full = torch.cat([b.prompt_ids, b.response_ids], 1)
    with torch.no_grad():
        logits = tiny_model(full).logits[:, b.prompt_ids.shape[1] - 1 : -1]
        lp, _ = forward_response(tiny_model, b, slice(0, 1), False, SPEC)
    ref = torch.log_softmax(logits, -1).gather(-1, b.response_ids.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(lp, ref, atol=1e-5)


def group_batch(char_tokenizer, responses_per_prompt: int = 3):
    """Three prompts of 4, 7 and 2 tokens (left padding 3, 0, 5), each with its samples next to each
    other, responses of 1..9 tokens: as the collector builds a step's batch."""
    import random

    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    problems = [Problem("1+1=", "2"), Problem("12+345=", "357"), Problem("9=", "9")]
    rng = random.Random(0)
    responses = [[rng.randint(4, 99) for _ in range(rng.randint(1, 9))] for _ in range(3 * responses_per_prompt)]
    return build_batch(problems, responses, responses_per_prompt, enc, char_tokenizer, 9)


def test_prompt_runs_find_each_groups_first_row(char_tokenizer):
    from rlvr_exp.algos.logprobs import prompt_runs

    batch = group_batch(char_tokenizer)
    first, run = prompt_runs(batch, slice(0, 9))
    assert first.tolist() == [0, 3, 6] and run.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    first, run = prompt_runs(batch, torch.tensor([2, 3, 4, 8]))  # a micro-batch that splits groups
    assert first.tolist() == [0, 1, 3] and run.tolist() == [0, 1, 1, 2]
    assert prompt_runs(batch, torch.tensor([0, 3, 6])) is None  # no prompt repeats: no sharing


def test_shared_prompts_give_the_same_scores_and_gradients(tiny_model, char_tokenizer):
    """share_prompts: a group's prompt runs once and its KV cache serves its rows. Log-probs,
    entropies (both LM-head paths, chunk 5 and none) and the parameter gradients equal every row
    running its own prompt, to float32 round-off (tolerance 1e-5; measured ~1e-6)."""
    import copy

    batch = group_batch(char_tokenizer)
    rows = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])  # the first group split: 2 of its rows, then two whole groups
    for chunk in (0, 5):
        plain, shared = LogProbSpec(0.6, chunk, False), LogProbSpec(0.6, chunk, True)
        with torch.no_grad():
            lp_p, ent_p = forward_response(tiny_model, batch, rows, True, plain)
            lp_s, ent_s = forward_response(tiny_model, batch, rows, True, shared)
        assert (lp_p - lp_s).abs().max() < 1e-5 and (ent_p - ent_s).abs().max() < 1e-5
        assert torch.all(lp_s[~batch.response_mask[rows]] == 0)
        grads = []
        for spec in (plain, shared):
            model = copy.deepcopy(tiny_model).train()
            logp, _ = forward_response(model, batch, rows, False, spec)
            (logp * torch.linspace(-1, 1, logp.numel()).view_as(logp)).sum().backward()
            grads.append([q.grad for q in model.parameters()])
        for g_p, g_s in zip(*grads):
            assert (g_p - g_s).abs().max() <= 1e-5 * max(1.0, float(g_p.abs().max()))


def test_no_sharing_under_gradient_checkpointing_in_training(tiny_model, char_tokenizer, monkeypatch):
    """transformers turns the KV cache off under gradient checkpointing while training: the shared
    path would lose the prompt, so the plain path runs (the model is called once, on whole rows)."""
    import copy

    from rlvr_exp.algos import logprobs

    model = copy.deepcopy(tiny_model).train()
    model.gradient_checkpointing_enable()
    calls = []
    real = logprobs._decode
    monkeypatch.setattr(logprobs, "_decode", lambda *a, **k: calls.append(a[1]["input_ids"].shape) or real(*a, **k))
    batch = group_batch(char_tokenizer)
    tp, t = batch.prompt_ids.shape[1], batch.response_ids.shape[1]
    assert tp == 7
    forward_response(model, batch, slice(0, 9), False, LogProbSpec(1.0, 0, True))
    assert calls == [(9, tp + t)]
    model.eval()
    calls.clear()
    with torch.no_grad():
        forward_response(model, batch, slice(0, 9), False, LogProbSpec(1.0, 0, True))
    assert calls == [(3, tp), (9, t)]  # scoring (no grad): prompts once, then the responses on their cache
