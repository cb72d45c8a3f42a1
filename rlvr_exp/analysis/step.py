"""The per-step analysis a run carries along: live metrics of the scored batch, the probe set,
and W&B media. The trainer calls these hooks and knows nothing else about them."""
from __future__ import annotations

import torch

from rlvr_exp.analysis.live import batch_metrics
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.logging.meters import MeanMeter


class StepAnalysis:
    """Hooks, in the order the trainer calls them each step:
    ``observe(batch)`` after scoring (the probe set is captured from the first batch),
    ``batch_metrics(batch)`` after the update, ``probe_metrics(step, policy)`` every step
    (returns {} when the probe is not due), ``media(step, batch)`` when a W&B run exists."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def observe(self, batch: RolloutBatch) -> None:
        return None

    def batch_metrics(self, batch: RolloutBatch) -> MeanMeter:
        return batch_metrics(batch)

    def probe_metrics(self, step: int, policy: torch.nn.Module) -> dict[str, float]:
        return {}

    def media(self, step: int, batch: RolloutBatch) -> dict[str, object]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None
