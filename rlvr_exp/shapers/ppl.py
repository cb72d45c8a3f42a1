"""PPL-based advantage weighting: scale each response's advantages by a weight from its perplexity.

Math (arXiv 2508.02260, method "PPL-based advantage weighting"; docs/method.md section 3). For response i with
response mask m and old-policy token log-probs l:

    logPPL_i = -(sum_t m_t l_t) / (sum_t m_t)
    per group g(i): Q1, Q3 of the group's logPPL values (linear interpolation), IQR = Q3 - Q1;
        kept = values inside [Q1 - 1.5 IQR, Q3 + 1.5 IQR]   (all values if none survive)
        mu = mean(kept), sigma = population std(kept)        (sigma <= 1e-6 -> 1)
    z_i = (logPPL_i - mu) / sigma                            (outliers included)
    w_i = clamp(1 + direction * alpha * z_i, w_min, w_max)   (direction = -1: low PPL -> w > 1)
    A'_{i,t} = A_{i,t} * w_i on every response token

Conventions: the outlier filter only shapes the statistics; every response gets a z. A singleton
group has mu = its value and sigma = 1, so z = 0 and w = 1; an all-equal group has sigma = 0 -> 1
and z = 0. Group statistics are computed in float64 whatever the input dtype; the weight is cast
back to the advantages' dtype. A response with no tokens gets logPPL 0 (it has no advantages to
scale, but it still counts in its group's statistics). The weight applies to positive and negative
samples alike (it never changes a sign: w >= w_min > 0). The released ``.py`` forgets to multiply
by w; the compiled file that ran multiplies, and so do we.
Metrics: ``weight_{mean,std,min,max}`` over response tokens, ``logppl_mean`` over non-empty
responses, ``outlier_share`` (share of responses left out of their group's statistics).
"""
from __future__ import annotations

import torch

from rlvr_exp.algos.stats import log_ppl
from rlvr_exp.shapers.base import (
    ShaperContext,
    ShaperOutput,
    check_range,
    need,
    prefixed_stats,
    sorted_quantile,
    zero_padding,
)

#: sigma at or below this counts as zero spread (docs/method.md section 3).
SIGMA_FLOOR = 1e-6
#: Tukey fence factor of the outlier filter.
IQR_FENCE = 1.5


def group_zscores(x: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-scores of ``x`` [B] within groups, with IQR-filtered mean and population std.

    Returns (z [B], kept [B] bool: the value entered its group's statistics). Vectorised: values
    are sorted by (group, value) once, quartiles read per group, sums scattered with index_add.
    """
    # inv [B]: dense group index of each response; counts [N]: responses per group
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n_groups = counts.numel()
    order = torch.argsort(x, stable=True)
    order = order[torch.argsort(inv[order], stable=True)]  # by group, ascending value within
    starts = torch.cumsum(counts, dim=0) - counts
    q1 = sorted_quantile(x[order], starts, counts, 0.25)
    q3 = sorted_quantile(x[order], starts, counts, 0.75)
    iqr = q3 - q1
    kept = (x >= (q1 - IQR_FENCE * iqr)[inv]) & (x <= (q3 + IQR_FENCE * iqr)[inv])

    def per_group_sum(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, inv, v)

    none_kept = per_group_sum(kept.to(x.dtype)) == 0
    kept = kept | none_kept[inv]
    keep_f = kept.to(x.dtype)
    n_kept = per_group_sum(keep_f)
    mu = per_group_sum(x * keep_f) / n_kept
    dev = x - mu[inv]
    sigma = (per_group_sum(dev.square() * keep_f) / n_kept).sqrt()
    sigma = torch.where(sigma <= SIGMA_FLOOR, torch.ones_like(sigma), sigma)
    return dev / sigma[inv], kept


class PPLShaper:
    """Weight a response's advantages by clamp(1 + direction*alpha*z(logPPL), w_min, w_max)."""

    requires: frozenset[str] = frozenset({"logp_old", "group_ids"})

    def __init__(
        self, alpha: float = 0.01, w_min: float = 0.8, w_max: float = 1.2, direction: int = -1
    ):
        self.alpha = check_range("alpha", alpha, 0.0)
        self.w_min = check_range("w_min", w_min, 0.0, 1.0, low_open=True)
        self.w_max = check_range("w_max", w_max, 1.0)
        if isinstance(direction, bool) or direction not in (-1, 1):
            raise ValueError(f"direction must be -1 or +1, got {direction!r}")
        self.direction = int(direction)

    def weights(self, ctx: ShaperContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w [B] float64, logPPL [B] float64, kept [B] bool) for the batch in ``ctx``."""
        name = type(self).__name__
        logp = need(ctx.logp_old, "logp_old", name)
        group_ids = need(ctx.group_ids, "group_ids", name)
        x = log_ppl(logp, ctx.response_mask)
        z, kept = group_zscores(x, group_ids)
        w = (1.0 + self.direction * self.alpha * z).clamp(self.w_min, self.w_max)
        return w, x, kept

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        w, x, kept = self.weights(ctx)
        adv = ctx.advantages
        w_tok = w.to(adv.dtype).unsqueeze(-1).expand_as(adv)  # [B, T]
        shaped = zero_padding(adv * w_tok, ctx.response_mask)
        nonempty = ctx.response_mask.bool().any(dim=-1)
        metrics = prefixed_stats("weight", w_tok, ctx.response_mask)
        metrics["logppl_mean"] = x[nonempty].mean().item() if bool(nonempty.any()) else 0.0
        metrics["outlier_share"] = (~kept).to(torch.float64).mean().item() if kept.numel() else 0.0
        return ShaperOutput(advantages=shaped, metrics=metrics)
