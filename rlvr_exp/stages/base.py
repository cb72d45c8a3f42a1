"""Stage state and the schedule interface that switches a shaper on by stage."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

RISING = "rising"
PLATEAU = "plateau"


@dataclass(frozen=True)
class StageState:
    """The detector's view after the last update. ``plateau_step`` is None until found."""

    name: str = RISING
    plateau_step: int | None = None


@runtime_checkable
class Schedule(Protocol):
    """Decides whether a shaper is active at ``step`` given the current stage state."""

    def active(self, step: int, state: StageState) -> bool: ...
