"""The high-PPL control of PPL weighting: high-perplexity responses get the larger weight.

Math (arXiv 2508.02260, method "PPL-based advantage weighting", high-PPL control; docs/method.md section 3):
the same logPPL, group IQR filter, mu, sigma and z as :class:`~rlvr_exp.shapers.ppl.PPLShaper`,
with w_i = clamp(1 + alpha * z_i, w_min, w_max) and A'_{i,t} = A_{i,t} * w_i.

Conventions: exactly those of ``PPLShaper`` with ``direction = +1`` fixed (not a parameter).
"""
from __future__ import annotations

from rlvr_exp.shapers.ppl import PPLShaper


class PPLHighShaper(PPLShaper):
    """PPL weighting with the sign flipped: w = clamp(1 + alpha*z, w_min, w_max)."""

    def __init__(self, alpha: float = 0.01, w_min: float = 0.8, w_max: float = 1.2):
        super().__init__(alpha=alpha, w_min=w_min, w_max=w_max, direction=1)
