"""The identity shaper: advantages pass through unchanged (the GRPO baseline).

Math: A'_{i,t} = A_{i,t} (no paper; the baseline of arXiv 2508.02260, docs/method.md section 2).

Conventions: the loss mask is left as it is (None); padding is forced to exactly 0, which is the
identity on any valid batch since padding already carries 0. No metrics.
"""
from __future__ import annotations

from rlvr_exp.shapers.base import ShaperContext, ShaperOutput, zero_padding


class NoShaper:
    """Return the advantages as they are."""

    requires: frozenset[str] = frozenset()

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        return ShaperOutput(advantages=zero_padding(ctx.advantages, ctx.response_mask))
