"""Per-response statistics of token log-probs, shared by shapers, analysis and the token record.

logPPL_i = -(sum_t m_t l_t) / (sum_t m_t) for response i with response mask m and old-policy
token log-probs l (docs/method.md section 3). Computed in float64; a response with no tokens gets 0.
"""
from __future__ import annotations

import torch


def log_ppl(logp: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """[B] float64 mean negative log-prob over response tokens ([B, T] inputs); 0 for an empty response."""
    mask = response_mask.bool()
    logp64 = torch.where(mask, logp.to(torch.float64), logp.new_zeros((), dtype=torch.float64))
    n_tok = mask.sum(dim=-1).clamp(min=1).to(torch.float64)
    return -logp64.sum(dim=-1) / n_tok
