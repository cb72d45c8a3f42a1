"""Drop confidently predicted tokens from the loss (the token-level analysis switch).

Math (arXiv 2508.02260, token-level analysis "mask confident tokens"; docs/method.md section 5):
keep_{i,t} = m_{i,t} and not (pi_old(y_t) > threshold), pi_old = exp(logp_old); A' = A.

Conventions: docs/method.md speaks of the current policy's probability. We read ``logp_old``, the sampling
policy's log-prob recomputed before the update: with one PPO epoch (the paper's setting) that
*is* the current policy at the start of the update; with several epochs or mini-batches the mask
stays fixed at its start-of-step value. The comparison is strict, so threshold = 1 keeps every
token. Metrics: ``masked_share``, the share of response tokens this shaper's mask removes.
"""
from __future__ import annotations

import torch

from rlvr_exp.shapers.base import (
    ShaperContext,
    ShaperOutput,
    check_range,
    need,
    removed_share,
    zero_padding,
)


class ConfidentMaskShaper:
    """Mask out tokens whose sampling probability exceeds ``threshold``."""

    requires: frozenset[str] = frozenset({"logp_old"})

    def __init__(self, threshold: float = 0.95):
        self.threshold = check_range("threshold", threshold, 0.0, 1.0, low_open=True)

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        logp = need(ctx.logp_old, "logp_old", type(self).__name__)
        confident = torch.exp(logp) > self.threshold  # [B, T]
        keep = ctx.response_mask.bool() & ~confident
        return ShaperOutput(
            advantages=zero_padding(ctx.advantages, ctx.response_mask),
            loss_mask=keep,
            metrics={"masked_share": removed_share(keep, ctx.response_mask)},
        )
