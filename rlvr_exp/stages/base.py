"""Stage state, the stage detector interface, and the schedule interface that switches a
shaper on by stage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

RISING = "rising"
PLATEAU = "plateau"


@dataclass(frozen=True)
class StageState:
    """The detector's view after the last update. ``plateau_step`` is None until found."""

    name: str = RISING
    plateau_step: int | None = None


@runtime_checkable
class StageDetector(Protocol):
    """Follows the run's stage from each step's metrics (docs/method.md section 6). The trainer
    reads ``state`` before shaping, calls ``update`` once per step after it and logs ``signals``;
    a checkpoint holds ``state_dict``. ``requires``: the optional pipeline inputs (names of
    :data:`rlvr_exp.shapers.base.OPTIONAL_INPUTS`) that the watched metric is computed from;
    ``build.py`` refuses a stage-gated schedule when the pipeline does not compute them."""

    requires: frozenset[str]

    @property
    def state(self) -> StageState: ...

    def update(self, step: int, metrics: dict[str, float]) -> StageState: ...

    def signals(self) -> dict[str, float]:
        """``stage/*`` metrics of the detector's internals (logged every step)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class Schedule(Protocol):
    """Decides whether a shaper is active at ``step`` (1-based, the trainer's counter) given the
    current stage state. ``uses_stage``: whether the answer depends on ``state`` (then the stage
    detector must see its signal)."""

    uses_stage: bool

    def active(self, step: int, state: StageState) -> bool: ...
