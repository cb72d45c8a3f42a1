"""The rollout interface: generate token ids for prompts; an engine with its own copy of the
weights (vLLM) also implements ``sync_weights`` so each step samples from the current policy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class SamplingParams:
    """n: samples per prompt (G); temperature, top_p: nucleus sampling; max_new_tokens: the
    response length limit."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int


@runtime_checkable
class Rollout(Protocol):
    def bind(self, model: torch.nn.Module, pad_id: int, eos_id: int) -> None:
        """Attach the policy once it is loaded (an engine may start here, never in __init__)."""
        ...

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        """Return ``len(prompts) * sampling.n`` responses, prompt-major (the n samples of prompt
        0 first). Each response holds its sampled ids, ending with EOS when it finished."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...

    def close(self) -> None:
        """Release the engine (the run has ended)."""
        ...
