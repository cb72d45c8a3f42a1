"""Entropy-based advantage: add a clipped, detached entropy bonus to every token's advantage.

Math (arXiv 2506.14758, section "Entropy-based advantage shaping"):

    psi_{i,t} = min(alpha * H_{i,t}.detach(), |A_{i,t}| / kappa)
    A'_{i,t}  = A_{i,t} + psi_{i,t}

Conventions: as in the paper the bonus is *added*, not signed. For A > 0 it grows the advantage;
for A < 0 it shrinks the penalty towards 0 (by at most |A| / kappa, so with kappa > 1 the sign is
never flipped; with kappa <= 1 a negative advantage may reach 0 or turn positive). Tokens with
A = 0 are unchanged (the clip is 0). The entropy is detached so no gradient flows through the
bonus. Computed in the advantages' dtype. Metrics: ``bonus_{mean,std,min,max}`` of psi over
response tokens.
"""
from __future__ import annotations

import torch

from rlvr_exp.shapers.base import (
    ShaperContext,
    ShaperOutput,
    check_range,
    need,
    prefixed_stats,
    zero_padding,
)


class EntropyAdvantageShaper:
    """A' = A + min(alpha * H, |A| / kappa), H detached."""

    requires: frozenset[str] = frozenset({"entropy"})

    def __init__(self, alpha: float = 0.4, kappa: float = 2.0):
        self.alpha = check_range("alpha", alpha, 0.0)
        self.kappa = check_range("kappa", kappa, 0.0, low_open=True)

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        entropy = need(ctx.entropy, "entropy", type(self).__name__).detach()
        adv = ctx.advantages
        bonus = torch.minimum(self.alpha * entropy.to(adv.dtype), adv.abs() / self.kappa)  # [B, T]
        bonus = zero_padding(bonus, ctx.response_mask)
        shaped = zero_padding(adv + bonus, ctx.response_mask)
        metrics = prefixed_stats("bonus", bonus, ctx.response_mask)
        return ShaperOutput(advantages=shaped, metrics=metrics)
