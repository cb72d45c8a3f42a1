"""The reward interface: score decoded responses against gold answers."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Reward(Protocol):
    def __call__(self, responses: list[str], golds: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """rewards [B] float32 and correct [B] bool."""
        ...

    def stats(self) -> dict[str, float]:
        """Counters since the last call (``reward/...`` keys): timeouts, errors, cache hits."""
        ...

    def close(self) -> None:
        """Release workers or connections; a later call may start them again."""
        ...
