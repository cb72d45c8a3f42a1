"""Keep in the loss only the batch's highest-entropy ("forking") tokens.

Math (arXiv 2506.01939, section "RLVR with high-entropy minority tokens" (the 80/20 rule); used
as a token-level analysis switch in arXiv 2508.02260, docs/method.md section 5):

    tau = Quantile_{1 - rho}({H_{i,t} : m_{i,t}})     over all response tokens of the batch
                                                      (of every rank's share, under torchrun)
    keep_{i,t} = m_{i,t} and H_{i,t} >= tau;  A' = A

Conventions: the quantile uses linear interpolation (``torch.quantile``'s rule, computed by sort
so it has no size limit) over response tokens only, padding excluded. Ties at tau are kept, so the
kept share can exceed rho; rho = 1 gives tau = min(H) and keeps every token. A batch without
response tokens keeps nothing and logs threshold 0. Metrics: ``masked_share`` (share of response
tokens removed) and ``threshold`` (tau).
"""
from __future__ import annotations

import torch

from rlvr_exp.shapers.base import (
    ShaperContext,
    ShaperOutput,
    check_range,
    need,
    removed_share,
    sorted_quantile,
    zero_padding,
)


class HighEntropyShaper:
    """Mask the loss to the top-``rho`` fraction of response tokens by entropy."""

    requires: frozenset[str] = frozenset({"entropy"})

    def __init__(self, rho: float = 0.2):
        self.rho = check_range("rho", rho, 0.0, 1.0, low_open=True)

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        entropy = need(ctx.entropy, "entropy", type(self).__name__).detach()
        resp = ctx.response_mask.bool()
        values = ctx.gather(entropy[resp])  # [n] response tokens of the whole batch (every rank)
        if values.numel() == 0:
            keep, tau = resp.clone(), 0.0
        else:
            n = torch.full((1,), values.numel(), dtype=torch.long, device=values.device)
            tau_t = sorted_quantile(values.sort().values, torch.zeros_like(n), n, 1.0 - self.rho)
            keep = resp & (entropy >= tau_t)
            tau = tau_t.item()
        return ShaperOutput(
            advantages=zero_padding(ctx.advantages, ctx.response_mask),
            loss_mask=keep,
            metrics={"masked_share": removed_share(keep, ctx.response_mask), "threshold": tau},
        )
