"""Stage schedules: when a stage-gated shaper (e.g. the position bonus) is on.

The position bonus of arXiv 2508.02260 ("GRPO + POSITION", docs/method.md section 4) acts only in the
plateau stage. The released code hard-codes 200 < step < 300 for it, while the results figure
is consistent with "from the plateau onward"; so the gate is its own component:
:class:`WindowSchedule` reproduces a fixed window, :class:`PlateauSchedule` follows the online
detector (:mod:`rlvr_exp.stages.detector`). Steps are the trainer's 1-based counter: step k is
the k-th policy update (step 0 is the evaluation before RL, where no shaper runs).
"""
from __future__ import annotations

from rlvr_exp.stages.base import PLATEAU, StageState


class AlwaysSchedule:
    """Active at every step (the shaper is never gated)."""

    uses_stage = False

    def active(self, step: int, state: StageState) -> bool:
        return True

    def __repr__(self) -> str:
        return "AlwaysSchedule()"


class WindowSchedule:
    """Active when ``start <= step < end``; ``end=None`` leaves the window open.

    The released code hard-codes 200 < step < 300 (on verl's 1-based step counter, like ours)
    for the position bonus; ``conf/stage/window.yaml`` reproduces it as [201, 300). The stage
    state is ignored.
    """

    uses_stage = False

    def __init__(self, start: int, end: int | None = None) -> None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"WindowSchedule: start={start!r} must be an integer >= 0")
        if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end <= start):
            raise ValueError(
                f"WindowSchedule: end={end!r} must be None or an integer > start={start}"
            )
        self.start = start
        self.end = end

    def active(self, step: int, state: StageState) -> bool:
        return self.start <= step and (self.end is None or step < self.end)

    def __repr__(self) -> str:
        return f"WindowSchedule(start={self.start}, end={self.end})"


class PlateauSchedule:
    """Active once the detector has declared the plateau (``state.name == PLATEAU``).

    docs/method.md section 10's default for the position bonus: from the detected plateau to the end of
    the run. The released code instead hard-codes 200 < step < 300 (see :class:`WindowSchedule`).
    """

    uses_stage = True

    def active(self, step: int, state: StageState) -> bool:
        return state.name == PLATEAU

    def __repr__(self) -> str:
        return "PlateauSchedule()"


class RisingSchedule:
    """Active while the run is still in the rising stage (not yet plateau); a control arm.

    The complement of :class:`PlateauSchedule`; the released code's position-bonus window is
    the hard-coded 200 < step < 300 instead.
    """

    uses_stage = True

    def active(self, step: int, state: StageState) -> bool:
        return state.name != PLATEAU

    def __repr__(self) -> str:
        return "RisingSchedule()"
