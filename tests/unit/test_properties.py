"""Property tests (hypothesis) over the advantage, shaper and loss functions: random ragged
batches with padding, all-equal groups, single-token responses and extreme log-probs give finite
results, exact zeros on padding, and the bounds of docs/method.md (PPL weights in [w_min, w_max]
= [0.8, 1.2], position bonus at most cap |A| = 0.5 |A|, masks only ever remove tokens)."""
from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlvr_exp.algos.advantages import group_advantages
from rlvr_exp.algos.losses import LOSS_AGG_MODES, Normaliser, aggregate, ppo_clip_loss
from rlvr_exp.shapers.base import ShaperContext
from rlvr_exp.shapers.confident_mask import ConfidentMaskShaper
from rlvr_exp.shapers.position import PositionShaper
from rlvr_exp.shapers.ppl import PPLShaper

LOGP = st.one_of(st.floats(-1.0e4, 0.0), st.sampled_from([-1.0e30, -80.0, -1.0e-12, 0.0]))


@st.composite
def batches(draw):
    """A ragged batch: G groups of n responses, lengths 1..T (right-padded), rewards often
    all-equal within a group, log-probs from 0 down to -1e30 on response tokens, 0 on padding."""
    groups, n, t = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    b = groups * n
    lengths = draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    mask = torch.tensor([[i < length for i in range(t)] for length in lengths])
    rewards = torch.tensor(draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=b, max_size=b)))
    if draw(st.booleans()):  # all-equal groups
        rewards = torch.ones(b)
    logp = torch.tensor(draw(st.lists(st.lists(LOGP, min_size=t, max_size=t), min_size=b, max_size=b)),
                        dtype=torch.float64) * mask
    group_ids = torch.arange(groups).repeat_interleave(n)
    return mask, rewards.double(), logp, group_ids


def context(mask, rewards, logp, group_ids) -> ShaperContext:
    adv = group_advantages(rewards, group_ids).unsqueeze(-1) * mask
    lengths = mask.sum(-1)
    rel = torch.arange(mask.shape[1]).expand_as(mask) / lengths.clamp(min=1).unsqueeze(-1) * mask
    return ShaperContext(advantages=adv, response_mask=mask, loss_mask=mask.clone(), response_len=lengths, step=1,
                         stage="plateau", group_ids=group_ids, logp_old=logp, rel_position=rel.double(),
                         rewards=rewards, correct=rewards > 0)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_advantages_finite_zero_mean_and_zero_for_equal_groups(batch):
    mask, rewards, _, group_ids = batch
    adv = group_advantages(rewards, group_ids)
    assert torch.isfinite(adv).all()
    for g in group_ids.unique():
        members = adv[group_ids == g]
        assert abs(float(members.sum())) < 1e-9
        if bool((rewards[group_ids == g] == rewards[group_ids == g][0]).all()):
            assert bool((members == 0).all())


@settings(max_examples=150, deadline=None)
@given(batches(), st.floats(0.0, 1.0))
def test_ppl_weights_in_bounds_and_padding_exactly_zero(batch, alpha):
    ctx = context(*batch)
    shaper = PPLShaper(alpha=alpha)
    w, _, _ = shaper.weights(ctx)
    assert torch.isfinite(w).all() and bool(((w >= 0.8) & (w <= 1.2)).all())
    out = shaper(ctx)
    assert torch.isfinite(out.advantages).all()
    assert bool((out.advantages[~ctx.response_mask] == 0).all())
    assert bool((out.advantages * ctx.advantages >= 0).all())  # a positive weight never flips a sign


@settings(max_examples=150, deadline=None)
@given(batches(), st.floats(0.0, 10.0), st.floats(0.0, 50.0), st.booleans())
def test_position_bonus_at_most_half_abs_advantage(batch, alpha, k, front):
    ctx = context(*batch)
    out = PositionShaper(alpha=alpha, k=k, cap=0.5, front=front)(ctx)
    bonus = (out.advantages.abs() - ctx.advantages.abs())
    assert torch.isfinite(out.advantages).all()
    assert bool((bonus >= 0).all()) and bool((bonus <= 0.5 * ctx.advantages.abs() + 1e-12).all())
    assert bool((out.advantages[~ctx.response_mask] == 0).all())


@settings(max_examples=150, deadline=None)
@given(batches(), st.floats(0.01, 1.0))
def test_masks_only_remove_tokens(batch, threshold):
    ctx = context(*batch)
    out = ConfidentMaskShaper(threshold=threshold)(ctx)
    assert not bool((out.loss_mask & ~ctx.response_mask).any())


@settings(max_examples=150, deadline=None)
@given(batches(), st.lists(LOGP, min_size=1, max_size=1), st.sampled_from(LOSS_AGG_MODES))
def test_loss_finite_for_extreme_log_probs(batch, shift, mode):
    mask, rewards, logp_old, group_ids = batch
    adv = group_advantages(rewards, group_ids).unsqueeze(-1) * mask
    logp = (logp_old + shift[0]).clamp(min=-1.0e30) * mask
    loss_tok, info = ppo_clip_loss(logp, logp_old, adv, 0.2, 0.28)
    norm = Normaliser(tokens=float(mask.sum()), seqs=float(mask.shape[0]), max_len=float(mask.shape[1]))
    loss = aggregate(loss_tok, mask, mode, norm)
    assert torch.isfinite(loss) and torch.isfinite(info["kl"]).all()
    assert bool((loss_tok[~mask] * 0 == 0).all())  # no NaN hides under padding either
