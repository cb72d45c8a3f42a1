"""The shaper interface: what a shaper receives, what it returns, and how shapers stack.

A shaper turns the batch's token advantages into shaped token advantages and may narrow the
loss mask. It declares the optional inputs it reads in ``requires``; ``build.py`` checks them
against what the pipeline provides before any model loads. The trainer never learns a
shaper's name: it builds one :class:`ShaperContext` per step and calls the stack.

A shaper that must act inside the update, on the live log-probs of each micro-batch (Clip-Cov,
KL-Cov), also returns a per-token loss term, ``ShaperOutput.token_loss``
(:mod:`rlvr_exp.algos.token_terms`): the loss calls it and rescales or adds to each token's loss.

Shapes: B = P*G responses, T response tokens.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch

from rlvr_exp.algos.token_terms import TokenLoss

#: Optional inputs a pipeline may provide to shapers (names of :class:`ShaperContext` fields).
OPTIONAL_INPUTS = frozenset({"logp_old", "entropy", "group_ids", "rel_position", "rewards", "correct"})


def local_values(values: torch.Tensor) -> torch.Tensor:
    """The one-process ``ShaperContext.gather``: the values themselves."""
    return values


@dataclass(frozen=True)
class ShaperContext:
    """Everything a shaper may read. Padding positions carry 0 (False for masks).

    advantages:    [B, T] float, token advantages as shaped so far by earlier shapers
    response_mask: [B, T] bool, True on response tokens (never on padding)
    loss_mask:     [B, T] bool, tokens that count in the loss so far (starts = response_mask)
    group_ids:     [B] long, responses with the same id share a prompt
    logp_old:      [B, T] float, log-prob of each sampled token under the sampling policy,
                   recomputed before the update at the rollout temperature (trainer.temperature)
    entropy:       [B, T] float, full-vocabulary entropy of the sampling distribution (nats, at the
                   rollout temperature: the model's own at the paper's 1.0), detached
    rel_position:  [B, T] float, (t - 1) / L_i for 1-based token index t and response length L_i
    response_len:  [B] long, L_i
    rewards:       [B] float; correct: [B] bool
    step:          the training step (1-based: step k is the k-th update); stage: "rising" or "plateau"
    gather:        [n] -> [n_all]: a 1-D tensor's values on every rank, concatenated in rank order
                   (a quantity defined over the whole batch, like a quantile, is computed on
                   these; in one process it returns its input)
    """

    advantages: torch.Tensor
    response_mask: torch.Tensor
    loss_mask: torch.Tensor
    response_len: torch.Tensor
    step: int
    stage: str
    group_ids: torch.Tensor | None = None
    logp_old: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    rel_position: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    gather: Callable[[torch.Tensor], torch.Tensor] = local_values

    def replace(self, **changes: object) -> ShaperContext:
        return replace(self, **changes)


@dataclass
class ShaperOutput:
    """advantages: [B, T] shaped (0 on padding); loss_mask: [B, T] bool or None (unchanged);
    metrics: flat dict of floats, un-namespaced (the stack prefixes ``shaper/<name>/``);
    token_loss: a per-token loss term the loss calls on each micro-batch, or None (none). Its
    stats are un-namespaced too (the stack prefixes them the same way)."""

    advantages: torch.Tensor
    loss_mask: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    token_loss: TokenLoss | None = None


@runtime_checkable
class Shaper(Protocol):
    """A swappable advantage shaper. Pure: no state across steps, no side effects."""

    requires: frozenset[str]

    def __call__(self, ctx: ShaperContext) -> ShaperOutput: ...


def masked_stats(values: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """mean, population std, min, max of ``values`` where ``mask``; zeros when the mask is empty."""
    sel = values[mask.bool()].detach().double()
    if sel.numel() == 0:
        return {"mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": sel.mean().item(),
        "std": sel.std(unbiased=False).item(),
        "min": sel.min().item(),
        "max": sel.max().item(),
    }


# ---------------------------------------------------------------------------------------------
# Small helpers shared by several shapers.


def check_range(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float, or raise ``ValueError`` naming it, its value and the range.

    Bounds are closed unless ``low_open``/``high_open``. Non-finite and non-numeric values fail.
    Example message: ``alpha must be >= 0, got -1.0``.
    """
    if low is not None and high is not None:
        valid = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        valid = f"{'>' if low_open else '>='} {low:g}"
    elif high is not None:
        valid = f"{'<' if high_open else '<='} {high:g}"
    else:
        valid = "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {valid}, got {value!r}")
    v = float(value)
    too_low = low is not None and (v <= low if low_open else v < low)
    too_high = high is not None and (v >= high if high_open else v > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be {valid}, got {value!r}")
    return v


def need(value: torch.Tensor | None, name: str, shaper: str) -> torch.Tensor:
    """Return an optional :class:`ShaperContext` input, or raise naming what is missing."""
    if value is None:
        raise ValueError(f"{shaper} needs ctx.{name}, got None (declare it in `requires`)")
    return value


def zero_padding(advantages: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``advantages`` with exactly 0 wherever ``response_mask`` is False (dtype, device kept)."""
    return torch.where(response_mask.bool(), advantages, torch.zeros_like(advantages))


def prefixed_stats(prefix: str, values: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """:func:`masked_stats` with keys ``<prefix>_mean``, ``_std``, ``_min``, ``_max``."""
    return {f"{prefix}_{k}": v for k, v in masked_stats(values, mask).items()}


def removed_share(keep: torch.Tensor, response_mask: torch.Tensor) -> float:
    """Share of response tokens that ``keep`` drops from the loss (0.0 when there are none)."""
    resp = response_mask.bool()
    n = int(resp.sum().item())
    if n == 0:
        return 0.0
    return (resp & ~keep.bool()).sum().item() / n


def sorted_quantile(
    sorted_values: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, q: float
) -> torch.Tensor:
    """Linear-interpolation ``q``-quantile of segments of an ascending-sorted 1-D tensor.

    Segment j is ``sorted_values[starts[j] : starts[j] + counts[j]]`` (counts >= 1). Same rule as
    ``torch.quantile``/numpy's default: rank = q * (n - 1), lerp between floor and ceil ranks.
    Unlike ``torch.quantile`` it has no input-size limit and does all segments at once.
    """
    rank = q * (counts - 1).to(torch.float64)  # [N]
    below = rank.floor().long()
    above = rank.ceil().long()
    frac = (rank - below.to(torch.float64)).to(sorted_values.dtype)
    return torch.lerp(sorted_values[starts + below], sorted_values[starts + above], frac)
