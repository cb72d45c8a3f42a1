"""KL-Cov: penalise the log-ratio of the tokens with the largest advantage-log-prob covariance.

Math (Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv 2505.22617, section 4; as verl implements it in ``verl/trainer/ppo/core_algos.py``,
``compute_policy_loss_kl_cov``; docs/method.md section 5). Inside the loss, per micro-batch, over
its loss tokens V (n = |V| > 0), with l the live log-probs:

    cov_{i,t} = (A_{i,t} - mean_V A) (l_{i,t} - mean_V l)          (l detached)
    S = the k = max(1, floor(ratio * n)) tokens of V with the largest cov
    l'_{i,t} = loss_{i,t} + coef |l_{i,t} - l_old_{i,t}| on S, loss_{i,t} elsewhere

Conventions: the penalty carries the gradient coef sign(l - l_old) grad l (0 where l = l_old
exactly, torch's convention for |x| at 0). **Departure from verl:** verl's KL-Cov replaces the
whole policy loss with the unclipped surrogate -A r (+ the penalty on S); we keep the run's PPO
clip on every token and add the penalty, so the arm differs from GRPO by the method's term only.
With one mini-batch per step the two agree (r = 1 there, where the clip is inactive). Ties in cov
are broken by ``torch.topk``. Selection is local to each micro-batch of each rank, as verl's is,
so it depends on ``trainer.samples_per_microbatch``. Metrics (means over the step's loss tokens):
``selected`` (share penalised) and ``penalty`` (the added loss per token: its share of a
token-mean loss).
"""
from __future__ import annotations

import torch

from rlvr_exp.algos.token_terms import LossTokens, TokenTerms, centered_covariance
from rlvr_exp.shapers.base import ShaperContext, ShaperOutput, check_range, zero_padding


class KLCovShaper:
    """Add coef |logp - logp_old| to the loss of the top max(1, floor(ratio * n)) tokens by covariance."""

    requires: frozenset[str] = frozenset()

    def __init__(self, ratio: float = 2.0e-4, coef: float = 0.1):
        self.ratio = check_range("ratio", ratio, 0.0, 1.0, low_open=True)
        self.coef = check_range("coef", coef, 0.0)

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        return ShaperOutput(advantages=zero_padding(ctx.advantages, ctx.response_mask), token_loss=self.token_terms)

    def token_terms(self, tokens: LossTokens) -> TokenTerms:
        """extra = coef |logp - logp_old| on the selected tokens, 0 elsewhere ([N, T])."""
        valid = tokens.loss_mask
        n = int(valid.sum())
        selected = torch.zeros_like(valid).flatten()
        if n > 0:
            cov = centered_covariance(tokens.advantages, tokens.logp, valid).flatten()
            index = valid.flatten().nonzero().squeeze(1)  # the valid tokens, row-major
            top = torch.topk(cov[index], max(1, int(n * self.ratio))).indices
            selected[index[top]] = True
        selected = selected.view_as(valid)
        log_ratio = torch.where(selected, tokens.logp - tokens.logp_old, 0.0)  # no gradient off S
        penalty = self.coef * log_ratio.abs()
        return TokenTerms(extra=penalty, stats={"selected": selected.float(), "penalty": penalty.detach()})
