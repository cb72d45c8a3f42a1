"""The PPO-clip policy loss with clip-higher, and the loss aggregation modes.

Clip-higher (DAPO, arXiv 2503.14476 section 3.1): ratio clipped to [1 - eps_low, 1 + eps_high].
Aggregation (verl's names): ``token-mean`` (DAPO: every token of the mini-batch weighs the same),
``seq-mean-token-mean`` (original GRPO), ``seq-mean-token-sum-norm`` (Dr. GRPO, arXiv 2503.20783:
token sums divided by a constant length).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class Normaliser:
    """Totals over the whole mini-batch, so that micro-batch losses add up to the mini-batch loss.

    tokens: loss-mask tokens in the mini-batch; seqs: responses in it; max_len: the constant of
    ``seq-mean-token-sum-norm`` (the response length limit)."""

    tokens: float
    seqs: float
    max_len: float


def aggregate(loss_tok: torch.Tensor, mask: torch.Tensor, mode: str, norm: Normaliser) -> torch.Tensor:
    """loss_tok [N, T], mask [N, T] -> this micro-batch's share of the mini-batch loss (scalar)."""
    m = mask.to(loss_tok.dtype)
    if mode == "token-mean":
        return (loss_tok * m).sum() / max(norm.tokens, 1.0)
    if mode == "seq-mean-token-mean":
        per_seq = (loss_tok * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.sum() / max(norm.seqs, 1.0)
    if mode == "seq-mean-token-sum-norm":
        return (loss_tok * m).sum() / (max(norm.seqs, 1.0) * norm.max_len)
    raise ValueError(f"algo.loss_agg must be one of {LOSS_AGG_MODES}, got {mode!r}")


def ppo_clip_loss(
    logp: torch.Tensor, logp_old: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token loss max(-A r, -A clip(r, 1-eps_low, 1+eps_high)) [N, T] and per-token indicators:
    ``clip_low`` (A < 0 and r < 1 - eps_low), ``clip_high`` (A > 0 and r > 1 + eps_high), ``kl``
    (k3 estimate of KL(pi_old || pi): r - 1 - log r), all [N, T]."""
    log_ratio = (logp - logp_old).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    with torch.no_grad():
        info = {
            "clip_low": ((adv < 0) & (ratio < 1.0 - eps_low)).float(),
            "clip_high": ((adv > 0) & (ratio > 1.0 + eps_high)).float(),
            "kl": ratio - 1.0 - log_ratio,
        }
    return loss, info


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(ref - logp) - (ref - logp) - 1 (>= 0)."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0
