"""The front-weighted control of the position bonus: early tokens get the larger bonus.

Math (arXiv 2508.02260, method "position-based advantage bonus", front control; docs/method.md section 4):
b = min(alpha * sigmoid(-k * (r - 0.5)), cap * |A|), A' = A + sign(A) * b.

Conventions: exactly those of :class:`~rlvr_exp.shapers.position.PositionShaper` with
``front = True`` fixed (not a parameter).
"""
from __future__ import annotations

from rlvr_exp.shapers.position import PositionShaper


class PositionFrontShaper(PositionShaper):
    """Position bonus mirrored to the front of the response."""

    def __init__(self, alpha: float = 0.05, k: float = 15.0, cap: float = 0.5):
        super().__init__(alpha=alpha, k=k, cap=cap, front=True)
