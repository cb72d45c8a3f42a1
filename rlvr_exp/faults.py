"""Numerical faults: what the loop does when a number stops being finite.

- A non-finite loss or gradient norm skips that optimizer update: the gradients are dropped and
  ``optimizer.step`` is not called, so neither the parameters nor the optimizer state (moments,
  step count) change. Each skip is counted (``train/nonfinite_skips``, per step) and logged with
  its step; ``trainer.max_nonfinite_skips`` skipped updates in a row stop the run.
- A finite update can still wreck the policy (try ``trainer.lr=1.0e+30``). Non-finite parameters
  after an update, and non-finite logits met while sampling or scoring, stop the run at once. We
  stop rather than roll back: a rollback would need a second copy of the weights and optimizer
  state in memory, and the checkpoint named in the message is that copy on disk.

Every stop raises :class:`NumericalFault`, whose message names the step, the cause and the last
checkpoint saved before it. That checkpoint passed every check when it was saved, but a finite
update that wrecked the policy (``lr=1.0e+30``) is only caught at the next sampling, so the
checkpoint of the step before the fault may already hold the damage: the message says so.

Non-finite metric values are written to ``metrics.jsonl`` as the strings ``"nan"``, ``"inf"``
and ``"-inf"`` (``float()`` reads them back), never dropped: see :func:`json_safe`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import LogitsProcessor

log = logging.getLogger(__name__)


class NumericalFault(RuntimeError):
    """The run met a number it cannot train on; the message says where and how to go on."""


def fault_message(step: int, cause: str, last_checkpoint: Path | None) -> str:
    where = (f"the last checkpoint saved before it is {last_checkpoint} (resume from it, or from an older one "
             f"if the damage started earlier, with trainer.resume_from=<checkpoint>; a resume keeps the saved "
             f"config, so a lower trainer.lr means a new run)"
             if last_checkpoint is not None else "no checkpoint was saved before it (trainer.checkpoint_every)")
    return f"numerical fault at step {step}: {cause}; {where}"


class FaultGuard:
    """The trainer's record of numerical faults: the step being trained, the last checkpoint it
    saved, and the count of skipped optimizer updates (in a row, and in total)."""

    def __init__(self, max_consecutive_skips: int) -> None:
        self.max_consecutive_skips = max_consecutive_skips
        self.step = 0
        self.last_checkpoint: Path | None = None
        self.consecutive = 0
        self.total = 0

    def fault(self, cause: str) -> NumericalFault:
        return NumericalFault(fault_message(self.step, cause, self.last_checkpoint))

    def admit(self, loss: float, grad_norm: float) -> bool:
        """True when an update with this summed loss and gradient norm may be applied; counts a
        skip otherwise and raises after ``max_consecutive_skips`` of them in a row."""
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        log.warning("step %d: non-finite loss %s or gradient norm %s; optimizer update skipped "
                    "(%d in a row, %d in all)", self.step, loss, grad_norm, self.consecutive, self.total)
        if self.consecutive >= self.max_consecutive_skips:
            raise self.fault(f"{self.consecutive} optimizer updates in a row had a non-finite loss or "
                             f"gradient norm (trainer.max_nonfinite_skips={self.max_consecutive_skips})")
        return False

    def check_parameters(self, params: Iterable[torch.Tensor]) -> None:
        """Raise when any parameter holds a NaN or an infinity (one device sync)."""
        flags = [torch.isfinite(p).all() for p in params]
        if flags and not bool(torch.stack(flags).all()):
            raise self.fault("the parameters hold NaN or infinite values after the optimizer update "
                             "(the update was finite but too large: lower trainer.lr)")

    def check_scores(self, what: str, *tensors: torch.Tensor | None) -> None:
        """Raise when a scored tensor (log-probs, entropies) [B, T] holds a non-finite value."""
        for t in tensors:
            if t is not None and not bool(torch.isfinite(t).all()):
                raise self.fault(f"the policy's logits gave non-finite {what} while scoring the batch")


class CheckpointError(RuntimeError):
    """Writing a checkpoint failed (a full disk, a lost mount). The run stops rather than train on
    without a way back; the write went to a temporary folder, so the previous checkpoint is intact."""

    def __init__(self, step: int, folder: Path, cause: OSError, previous: Path | None) -> None:
        back = (f"the previous checkpoint {previous} is intact: resume from it with trainer.resume_from={previous}"
                if previous is not None else "no earlier checkpoint of this run exists")
        super().__init__(f"writing the checkpoint of step {step} under {folder} failed ({cause}); the run stops "
                         f"here; {back} once the disk has room")


class NonFiniteLogitsError(NumericalFault):
    """Raised by a rollout that met non-finite logits; the trainer adds the step and checkpoint."""


class NonFiniteLogits(LogitsProcessor):
    """A ``generate`` logits processor that notes rows whose logits hold NaN, +inf or only -inf
    (``torch.multinomial`` would fail on them, on CUDA with a device-side assert) and replaces
    those rows by zeros so sampling can finish; the caller raises after ``generate`` when
    :attr:`seen` is set. It reads no value back to the host while sampling."""

    def __init__(self) -> None:
        self.flag: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | torch.isneginf(scores).all(-1)  # [N]
        self.flag = bad.any() if self.flag is None else self.flag | bad.any()
        return torch.where(bad.unsqueeze(-1), torch.zeros_like(scores), scores)

    @property
    def seen(self) -> bool:
        return self.flag is not None and bool(self.flag)


def json_safe(value: float | str) -> float | str:
    """A metric value JSON can hold: finite floats as floats, NaN and infinities as the strings
    ``"nan"``, ``"inf"``, ``"-inf"`` (what ``float()`` reads back); strings unchanged."""
    if isinstance(value, str):
        return value
    value = float(value)
    return value if math.isfinite(value) else str(value)
