"""Loss only on the tokens of negative samples (the instance-level analysis switch).

Math (arXiv 2508.02260, instance-level analysis "negative samples only"; docs/method.md section 5):
keep_{i,t} = m_{i,t} and A_{i,t} < 0; A' = A.

Conventions: the sign is read per token (under GRPO all tokens of a response share it). Samples
with A = 0 (all-equal groups) are dropped too. Metrics: ``masked_share``, the share of response
tokens this shaper's mask removes (counted on its own, whatever earlier shapers removed).
"""
from __future__ import annotations

from rlvr_exp.shapers.base import ShaperContext, ShaperOutput, removed_share, zero_padding


class NegativeOnlyShaper:
    """Mask the loss to tokens with A < 0; advantages unchanged."""

    requires: frozenset[str] = frozenset()

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        keep = ctx.response_mask.bool() & (ctx.advantages < 0)  # [B, T]
        return ShaperOutput(
            advantages=zero_padding(ctx.advantages, ctx.response_mask),
            loss_mask=keep,
            metrics={"masked_share": removed_share(keep, ctx.response_mask)},
        )
