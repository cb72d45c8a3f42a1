"""Per-token loss terms: how a shaper acts inside the policy loss, on the live log-probs.

Most shapers act before the update (advantages, loss mask). Some act on quantities that exist only
inside it: Clip-Cov and KL-Cov (arXiv 2505.22617 section 4) select tokens by the covariance of the
advantage with the *current* log-prob of each micro-batch and then zero that token's loss or add a
penalty to it. A shaper returns such a term as ``ShaperOutput.token_loss``, a callable
``(LossTokens) -> TokenTerms``; the loss calls it once per micro-batch and sets

    l'_{i,t} = scale_{i,t} * l_{i,t} + extra_{i,t}

on the PPO-clip token loss l (before the loss aggregation and before any KL-to-reference term), so
a term never changes the aggregation's normaliser: a token with scale 0 still counts in the
token-mean's denominator, as in verl. Several terms (a shaper stack) apply in stack order
(:func:`chain`). The trainer only passes the callable through; it never learns which shaper made it.

Shapes: N rows of one micro-batch, T response tokens.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LossTokens:
    """What a per-token term reads, for one micro-batch (this rank's rows only).

    logp:       [N, T] float, log-probs of the sampled tokens under the policy being updated (live:
                carries the gradient; detach it for anything but the term's own gradient)
    logp_old:   [N, T] float, under the sampling policy (``ShaperContext.logp_old``)
    advantages: [N, T] float, as shaped by the whole stack (0 on padding)
    loss_mask:  [N, T] bool, the tokens that count in the loss
    clipped:    [N, T] bool, True where the PPO clip is active (the clipped branch of the max is the
                larger: A > 0 and r > 1 + eps_high, or A < 0 and r < 1 - eps_low)
    """

    logp: torch.Tensor
    logp_old: torch.Tensor
    advantages: torch.Tensor
    loss_mask: torch.Tensor
    clipped: torch.Tensor


@dataclass
class TokenTerms:
    """scale: [N, T] detached multiplier of the token loss, or None (1); extra: [N, T] added after
    the scale (may carry gradient), or None (0); stats: [N, T] per-token values under their metric
    names (``shaper/<name>/<key>`` once :func:`chain` has named them), which the update logs as
    means over the loss tokens of the step."""

    scale: torch.Tensor | None = None
    extra: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    def apply(self, loss_tok: torch.Tensor) -> torch.Tensor:
        """scale * loss_tok + extra ([N, T]); raises naming the term whose shape does not fit."""
        for name, value in (("scale", self.scale), ("extra", self.extra)):
            if value is not None and value.shape != loss_tok.shape:
                raise ValueError(f"a per-token loss term's {name} has shape {tuple(value.shape)}, "
                                 f"the token loss {tuple(loss_tok.shape)}; return one value per token")
        if self.scale is not None:
            loss_tok = loss_tok * self.scale.detach().to(loss_tok.dtype)
        if self.extra is not None:
            loss_tok = loss_tok + self.extra.to(loss_tok.dtype)
        return loss_tok


TokenLoss = Callable[[LossTokens], TokenTerms]


def chain(entries: list[tuple[str, TokenLoss]]) -> TokenLoss | None:
    """One term applying ``entries`` in order, their stats named ``shaper/<name>/<key>``; None when empty.

    Applying (s_1, e_1) then (s_2, e_2) is l -> s_2 (s_1 l + e_1) + e_2 = (s_1 s_2) l + (s_2 e_1 + e_2):
    a later scale also scales an earlier term's extra. Every term reads the same :class:`LossTokens`.
    """
    if not entries:
        return None

    def chained(tokens: LossTokens) -> TokenTerms:
        out = TokenTerms()
        for name, term in entries:
            t = term(tokens)
            if t.scale is not None:
                out.scale = t.scale if out.scale is None else out.scale * t.scale
                out.extra = None if out.extra is None else out.extra * t.scale
            if t.extra is not None:
                out.extra = t.extra if out.extra is None else out.extra + t.extra
            out.stats.update({f"shaper/{name}/{key}": value for key, value in t.stats.items()})
        return out

    return chained


def centered_covariance(advantages: torch.Tensor, logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token cov_{i,t} = (A_{i,t} - mean A) (l_{i,t} - mean l), both means over the tokens of
    ``mask`` ([N, T]); 0 off the mask and everywhere when the mask is empty. ``logp`` is detached.

    The per-token summand of the covariance of log-prob and advantage that drives the entropy
    change under policy gradient (arXiv 2505.22617, section 3); Clip-Cov and KL-Cov (its section 4,
    verl's ``compute_policy_loss_clip_cov``/``_kl_cov``) rank tokens by it over the valid tokens of
    one micro-batch. Means are exact (verl's clip-cov divides by count + 1e-8)."""
    m = mask.bool()
    n = m.sum()
    if int(n) == 0:
        return torch.zeros_like(advantages)
    a = advantages.detach()
    lp = logp.detach().to(a.dtype)
    mean_a = torch.where(m, a, 0.0).sum() / n
    mean_l = torch.where(m, lp, 0.0).sum() / n
    return torch.where(m, (a - mean_a) * (lp - mean_l), 0.0)
