"""Group-relative advantages (GRPO, arXiv 2402.03300; DAPO, arXiv 2503.14476)."""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool = True, eps: float = 1.0e-6) -> torch.Tensor:
    """A_i = (r_i - mean_g(r)) / (std_g(r) + eps), per response; [B] -> [B].

    std is the unbiased (n-1) std of the group (docs/method.md section 2). With ``scale=False`` it is the
    Dr. GRPO advantage r_i - mean_g(r) (arXiv 2503.20783). An all-equal group gets 0; a singleton
    group gets 0 (nothing to compare against). Group ids need not be contiguous.
    """
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    r = rewards.to(torch.float64)
    sums = torch.zeros(len(counts), dtype=torch.float64, device=r.device).index_add_(0, inv, r)
    mean = sums / counts
    dev = r - mean[inv]
    if not scale:
        out = dev
    else:
        sq = torch.zeros_like(sums).index_add_(0, inv, dev * dev)
        std = torch.sqrt(sq / (counts - 1).clamp(min=1))
        out = dev / (std[inv] + eps)
    out = torch.where(counts[inv] > 1, out, torch.zeros_like(out))
    return out.to(rewards.dtype)
