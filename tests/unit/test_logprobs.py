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
