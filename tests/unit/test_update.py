"""``ppo_update`` (rlvr_exp/update.py): micro-batch accumulation gives the gradient of the whole
mini-batch; hand-computed on a model whose logits are one learnable bias vector, then checked on a
real (tiny, random) Qwen2 for every loss aggregation."""
from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec
from rlvr_exp.algos.token_terms import LossTokens, TokenTerms
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.faults import FaultGuard
from rlvr_exp.update import ppo_update

SPEC = LogProbSpec(1.0, 0)  # unchunked: BiasLM has no decoder


def update(model: torch.nn.Module, optimizer: torch.optim.Optimizer, algo: PolicyGradient, batch: RolloutBatch,
           rows_per_minibatch: int, rows_per_microbatch: int, max_len: int, grad_clip: float):
    """``ppo_update`` at temperature 1; every update here is finite, so the fault guard admits them all."""
    return ppo_update(model, optimizer, algo, batch, rows_per_minibatch, rows_per_microbatch, max_len, grad_clip,
                      FaultGuard(max_consecutive_skips=1), SPEC)


class BiasLM(torch.nn.Module):
    """Logits = the same bias vector b [V] at every position, whatever the input."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, input_ids: torch.Tensor, logits_to_keep: int, **_: object) -> SimpleNamespace:
        return SimpleNamespace(logits=self.bias.expand(input_ids.shape[0], logits_to_keep, -1))


def make_batch(response_ids: list[list[int]], mask: list[list[bool]], adv: list[list[float]],
               logp_old: torch.Tensor, prompt_len: int = 1) -> RolloutBatch:
    ids = torch.tensor(response_ids)
    m = torch.tensor(mask)
    b = ids.shape[0]
    batch = RolloutBatch(
        prompt_ids=torch.full((b, prompt_len), 3), prompt_mask=torch.ones(b, prompt_len, dtype=torch.bool),
        response_ids=ids, response_mask=m, group_ids=torch.zeros(b, dtype=torch.long),
        truncated=torch.zeros(b, dtype=torch.bool), problems=[None] * b, texts=[""] * b)
    batch.logp_old, batch.loss_mask = logp_old * m, m.clone()
    batch.advantages = torch.tensor(adv) * m
    return batch


def bias_case() -> RolloutBatch:
    # V = 2, b = 0: p = (0.5, 0.5), log p = log 0.5 = logp_old, so every ratio is 1 (no clipping).
    # Response 0: tokens [0, 1], A = +1; response 1: token [0] then padding, A = -1. 3 loss tokens.
    return make_batch([[0, 1], [0, 0]], [[True, True], [True, False]], [[1.0, 1.0], [-1.0, -1.0]],
                      torch.full((2, 2), math.log(0.5)))


@pytest.mark.parametrize("rows_per_microbatch", [1, 2])
def test_hand_computed_step(rows_per_microbatch):
    # token-mean loss = (1/3) sum_t -A_t * ratio_t = (1/3)(-1 - 1 + 1) = -1/3.
    # d/db_0 of -A ratio = -A (1[y = 0] - 0.5): tokens give -0.5, +0.5, +0.5 -> grad b_0 = 0.5 / 3 = 1/6,
    # grad b_1 = -1/6. SGD with lr 1: b = (-1/6, +1/6); grad norm sqrt(2) / 6.
    model = BiasLM(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    meter = update(model, optimizer, PolicyGradient(), bias_case(), rows_per_minibatch=2,
                       rows_per_microbatch=rows_per_microbatch, max_len=2, grad_clip=100.0)
    assert torch.allclose(model.bias.detach(), torch.tensor([-1 / 6, 1 / 6]), atol=1e-6)
    means = meter.means()
    assert means["loss/policy"] == pytest.approx(-1 / 3, abs=1e-6)
    assert means["train/grad_norm"] == pytest.approx(math.sqrt(2) / 6, abs=1e-6)
    assert means["train/optimizer_steps"] == 1.0
    assert means["train/clip_low"] == 0.0 and means["train/clip_high"] == 0.0
    assert means["train/kl"] == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("rows_per_microbatch", [1, 2])
def test_a_per_token_loss_term_acts_on_each_micro_batch(rows_per_microbatch):
    # The term (a shaper's ShaperOutput.token_loss) zeroes the loss of A < 0 tokens (scale 0) and adds
    # 0.3 l to the first token of A > 0 rows (extra); it sees each micro-batch's rows only.
    #   tokens: (0,0) y=0 A=+1: -1 + 0.3 log 0.5; (0,1) y=1 A=+1: -1; (1,0) y=0 A=-1: 0 (was +1)
    #   loss = (-2 + 0.3 log 0.5) / 3 = -0.7359814: the zeroed token still counts in the /3
    #   grad b_0 = [-0.5 (0,0) + 0.3 * 0.5 (extra) + 0.5 (0,1) + 0 (1,0)] / 3 = 0.05, grad b_1 = -0.05
    #   SGD lr 1: b = (-0.05, +0.05)   (without the term: (-1/6, +1/6), test_hand_computed_step)
    calls = []

    def term(t: LossTokens) -> TokenTerms:
        calls.append(t.logp.shape[0])
        assert t.logp.requires_grad and not t.clipped.any()
        first = torch.zeros_like(t.loss_mask)
        first[:, 0] = True
        extra = torch.where(first & (t.advantages > 0), 0.3 * t.logp, 0.0)
        return TokenTerms(scale=(t.advantages >= 0).double(), extra=extra,
                          stats={"shaper/spy/first": first.float()})

    model = BiasLM(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    batch = bias_case()
    batch.token_loss = term
    meter = update(model, optimizer, PolicyGradient(), batch, rows_per_minibatch=2,
                   rows_per_microbatch=rows_per_microbatch, max_len=2, grad_clip=100.0)
    assert calls == [rows_per_microbatch] * (2 // rows_per_microbatch)
    assert torch.allclose(model.bias.detach(), torch.tensor([-0.05, 0.05]), atol=1e-6)
    means = meter.means()
    assert means["loss/policy"] == pytest.approx((-2 + 0.3 * math.log(0.5)) / 3, abs=1e-6)
    assert means["shaper/spy/first"] == pytest.approx(2 / 3)  # a mean over the 3 loss tokens
    assert means["train/clip_low"] == 0.0


def test_one_optimizer_step_per_minibatch():
    # Mini-batches of one row. Row 0 alone: tokens y = 0 and 1 with A = +1 -> gradients cancel, b stays 0,
    # loss (1/2)(-1 - 1) = -1. Row 1 alone (b still 0): loss +1, grad b_0 = +1 * 0.5 = 0.5 -> b = (-0.5, 0.5).
    model = BiasLM(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    meter = update(model, optimizer, PolicyGradient(), bias_case(), rows_per_minibatch=1,
                       rows_per_microbatch=1, max_len=2, grad_clip=100.0)
    assert torch.allclose(model.bias.detach(), torch.tensor([-0.5, 0.5]), atol=1e-6)
    means = meter.means()
    assert means["train/optimizer_steps"] == 2.0
    assert means["loss/policy"] == pytest.approx((-1.0 + 1.0) / 2, abs=1e-6)  # mean over the two updates


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_microbatches_equal_the_full_minibatch_on_a_real_model(tiny_model, loss_agg):
    torch.manual_seed(0)
    b, t = 6, 5
    ids = torch.randint(4, 90, (b, t))
    lengths = [5, 3, 1, 4, 2, 5]
    mask = [[j < n for j in range(t)] for n in lengths]
    adv = torch.randn(b, 1).expand(b, t)
    # logp_old away from the current log-probs, so some ratios leave [0.8, 1.28] and clip
    logp_old = torch.randn(b, t) * 0.5 - 4.0
    batch = make_batch(ids.tolist(), mask, adv.tolist(), logp_old, prompt_len=3)
    algo = PolicyGradient(loss_agg=loss_agg)
    results = []
    for micro in (b, 2, 1):
        model = copy.deepcopy(tiny_model).float()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        meter = update(model, optimizer, algo, batch, rows_per_minibatch=b, rows_per_microbatch=micro,
                           max_len=t, grad_clip=1.0e6)
        results.append((torch.cat([p.detach().flatten() for p in model.parameters()]), meter.means()))
    (full, m_full), *others = results
    assert not torch.equal(full, torch.cat([p.detach().flatten() for p in tiny_model.parameters()]))
    for params, means in others:
        assert torch.allclose(params, full, atol=1e-6, rtol=1e-5)
        assert means["loss/policy"] == pytest.approx(m_full["loss/policy"], rel=1e-5, abs=1e-7)
        assert means["train/grad_norm"] == pytest.approx(m_full["train/grad_norm"], rel=1e-5)
        assert means["train/clip_low"] == pytest.approx(m_full["train/clip_low"])
