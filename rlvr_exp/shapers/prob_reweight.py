"""Advantage reweighting by token probability: damp the advantages of low-probability tokens.

Math (arXiv 2505.12929, section "Advantage Reweighting"):

    w_{i,t} = alpha * pi_old(y_t) + (1 - alpha),   pi_old = exp(logp_old)
    A'_{i,t} = w_{i,t} * A_{i,t}

Conventions: w lies in [1 - alpha, 1], so the sign of A is kept (alpha = 1 can zero a token whose
probability is 0) and alpha = 0 is the identity. pi_old is detached. Computed in the advantages'
dtype. Metrics: ``weight_{mean,std,min,max}`` of w over response tokens.
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


class ProbReweightShaper:
    """A' = [alpha * exp(logp_old) + (1 - alpha)] * A."""

    requires: frozenset[str] = frozenset({"logp_old"})

    def __init__(self, alpha: float = 0.1):
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        logp = need(ctx.logp_old, "logp_old", type(self).__name__).detach()
        adv = ctx.advantages
        weight = self.alpha * torch.exp(logp.to(adv.dtype)) + (1.0 - self.alpha)  # [B, T]
        weight = zero_padding(weight, ctx.response_mask)
        shaped = zero_padding(adv * weight, ctx.response_mask)
        metrics = prefixed_stats("weight", weight, ctx.response_mask)
        return ShaperOutput(advantages=shaped, metrics=metrics)
