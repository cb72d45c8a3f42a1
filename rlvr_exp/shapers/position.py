"""Position-based advantage bonus: push the advantage of late tokens further from zero.

Math (arXiv 2508.02260, method "position-based advantage bonus"; docs/method.md section 4). For token
t = 1..L_i of response i, r = (t - 1) / L_i (``ctx.rel_position``):

    b = alpha * sigmoid(k * (r - 0.5))          (front=True: sigmoid(-k * (r - 0.5)))
    b = min(b, cap * |A|)
    A' = A + sign(A) * b

Conventions: tokens with A = 0 are unchanged (sign(0) = 0 and the cap is 0); the bonus never
flips a sign, it only grows |A|. Positive and negative samples alike. When to apply it (the
plateau stage, or the released 200 < step < 300 window) is the schedule's job, not the shaper's.
Computed in the advantages' dtype. Metrics: ``bonus_{mean,std,min,max}`` of the applied (capped,
unsigned) bonus b over response tokens.
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


class PositionShaper:
    """A' = A + sign(A) * min(alpha * sigmoid(+-k (r - 0.5)), cap * |A|)."""

    requires: frozenset[str] = frozenset({"rel_position"})

    def __init__(self, alpha: float = 0.05, k: float = 15.0, cap: float = 0.5, front: bool = False):
        self.alpha = check_range("alpha", alpha, 0.0)
        self.k = check_range("k", k, 0.0)
        self.cap = check_range("cap", cap, 0.0)
        if not isinstance(front, bool):
            raise ValueError(f"front must be a bool (true or false), got {front!r}")
        self.front = front

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        r = need(ctx.rel_position, "rel_position", type(self).__name__)
        adv = ctx.advantages
        slope = -self.k if self.front else self.k
        bonus = self.alpha * torch.sigmoid(slope * (r.to(adv.dtype) - 0.5))  # [B, T]
        bonus = torch.minimum(bonus, self.cap * adv.abs())
        bonus = zero_padding(bonus, ctx.response_mask)
        shaped = zero_padding(adv + torch.sign(adv) * bonus, ctx.response_mask)
        metrics = prefixed_stats("bonus", bonus, ctx.response_mask)
        return ShaperOutput(advantages=shaped, metrics=metrics)
