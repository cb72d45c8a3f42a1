"""The rollout interface: generate token ids for prompts; an engine with its own copy of the
weights (vLLM) also implements ``sync_weights`` so each step samples from the current policy. An
engine that samples with the policy's own forward pass (HF) can also hand back the log-prob and
entropy of each sampled token (``generate_scored``), which spares the trainer a scoring pass
(``trainer.old_logprobs``, docs/performance.md)."""
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


@dataclass
class ScoredResponses:
    """Responses with the sampling pass's own scores. ``responses``: as :meth:`Rollout.generate`
    returns them. ``logp`` [B, T]: log-probability of each sampled token and ``entropy`` [B, T]
    (None unless asked for): full-vocabulary entropy (nats), both of softmax(z / temperature) at the
    sampling temperature over the whole vocabulary (nucleus truncation is not modelled, as in
    scoring: rlvr_exp/algos/logprobs.py), float32, exactly 0 past each response's end; T is the
    longest response (at least 1), the width :func:`rlvr_exp.collect.build_batch` gives the batch."""

    responses: list[list[int]]
    logp: torch.Tensor
    entropy: torch.Tensor | None


@runtime_checkable
class Rollout(Protocol):
    scores_samples: bool  # whether generate_scored is available (the sampler runs the policy's own forward)

    def bind(self, model: torch.nn.Module, pad_id: int, eos_id: int) -> None:
        """Attach the policy once it is loaded (an engine may start here, never in __init__)."""
        ...

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        """Return ``len(prompts) * sampling.n`` responses, prompt-major (the n samples of prompt
        0 first). Each response holds its sampled ids, ending with EOS when it finished."""
        ...

    def generate_scored(self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool) -> ScoredResponses:
        """``generate`` plus the sampling pass's log-prob (and entropy) of each sampled token;
        ``sampling.temperature`` must be > 0. Only where ``scores_samples`` is true."""
        ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""
        ...

    def close(self) -> None:
        """Release the engine (the run has ended)."""
        ...
