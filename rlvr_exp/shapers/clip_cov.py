"""Clip-Cov: detach the gradient of a few random tokens whose advantage-log-prob covariance is high.

Math (Cui et al., "The Entropy Mechanism of Reinforcement Learning for Reasoning Language Models",
arXiv 2505.22617, section 4; as verl implements it in ``verl/trainer/ppo/core_algos.py``,
``compute_policy_loss_clip_cov``; docs/method.md section 5). Inside the loss, per micro-batch, over
its loss tokens V (n = |V|), with l the live log-probs:

    cov_{i,t} = (A_{i,t} - mean_V A) (l_{i,t} - mean_V l)          (l detached)
    C = {(i,t) in V : lb < cov_{i,t} < ub and the PPO clip is not active at (i,t)}
    S = a uniformly random subset of C of size min(|C|, max(1, floor(ratio * n)))
    l'_{i,t} = 0 * loss_{i,t} on S, loss_{i,t} elsewhere

Conventions: a token of S keeps its place in the loss normaliser (verl multiplies its loss by 0; it
does not mask it). The subset comes from ``torch.randperm`` on the global CPU generator, as in
verl: seeded by the run's seed, restored on resume. Selection is local to each micro-batch of each
rank, as verl's is, so it depends on ``trainer.samples_per_microbatch``. A micro-batch without
candidates changes nothing. The PPO clip is the run's (``algo.eps_low``/``eps_high``); the
advantages are those the stack shaped before. Metrics (means over the step's loss tokens):
``selected`` (share detached) and ``candidates`` (share in C).
"""
from __future__ import annotations

import torch

from rlvr_exp.algos.token_terms import LossTokens, TokenTerms, centered_covariance
from rlvr_exp.shapers.base import ShaperContext, ShaperOutput, check_range, zero_padding


class ClipCovShaper:
    """Zero the loss of max(1, floor(ratio * n)) random tokens with covariance in (lb, ub)."""

    requires: frozenset[str] = frozenset()

    def __init__(self, ratio: float = 2.0e-4, lb: float = 1.0, ub: float = 5.0):
        self.ratio = check_range("ratio", ratio, 0.0, 1.0, low_open=True)
        self.lb = check_range("lb", lb)
        self.ub = check_range("ub", ub)
        if self.ub <= self.lb:
            raise ValueError(f"ub must be > lb, got lb={lb!r}, ub={ub!r}: the covariance window (lb, ub) is empty")

    def __call__(self, ctx: ShaperContext) -> ShaperOutput:
        return ShaperOutput(advantages=zero_padding(ctx.advantages, ctx.response_mask), token_loss=self.token_terms)

    def token_terms(self, tokens: LossTokens) -> TokenTerms:
        """scale 0 on the selected tokens, 1 elsewhere ([N, T])."""
        valid = tokens.loss_mask
        cov = centered_covariance(tokens.advantages, tokens.logp, valid)
        candidates = valid & ~tokens.clipped & (cov > self.lb) & (cov < self.ub)
        index = candidates.flatten().nonzero().squeeze(1)  # row-major, like verl's torch.nonzero
        selected = torch.zeros_like(valid).flatten()
        if index.numel() > 0:  # verl draws only then: the generator's stream stays verl's
            keep = max(int(self.ratio * int(valid.sum())), 1)
            selected[index[torch.randperm(index.numel())[:keep].to(index.device)]] = True
        selected = selected.view_as(valid)
        scale = torch.where(selected, 0.0, 1.0).to(tokens.logp.dtype)
        return TokenTerms(scale=scale, stats={"selected": selected.float(), "candidates": candidates.float()})
