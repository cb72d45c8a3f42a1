"""The policy-gradient algorithms: what advantage, which clip, which aggregation, which KL."""
from __future__ import annotations

import torch

from rlvr_exp.algos.advantages import group_advantages
from rlvr_exp.algos.losses import LOSS_AGG_MODES, Normaliser, aggregate, k3_kl, ppo_clip_loss
from rlvr_exp.algos.token_terms import LossTokens, TokenLoss


class PolicyGradient:
    """GRPO-family objective. The defaults are the paper's DAPO-style baseline (docs/method.md section 2):
    std-scaled group advantages, clip [0.2, 0.28], token-mean loss, no KL.

    ``kl_coef > 0`` adds beta * k3 KL(pi || pi_ref) to a frozen copy of the initial policy per
    token (classic GRPO, arXiv 2402.03300 section 4.1); the trainer then keeps a reference model.
    """

    def __init__(
        self,
        scale_advantages: bool = True,
        adv_eps: float = 1.0e-6,
        eps_low: float = 0.2,
        eps_high: float = 0.28,
        loss_agg: str = "token-mean",
        kl_coef: float = 0.0,
    ) -> None:
        if loss_agg not in LOSS_AGG_MODES:
            raise ValueError(f"algo.loss_agg must be one of {LOSS_AGG_MODES}, got {loss_agg!r}")
        for name, value in (("eps_low", eps_low), ("eps_high", eps_high)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"algo.{name} must be in (0, 1), got {value}")
        if kl_coef < 0:
            raise ValueError(f"algo.kl_coef must be >= 0, got {kl_coef}")
        if adv_eps <= 0:
            raise ValueError(f"algo.adv_eps must be > 0, got {adv_eps}")
        self.scale_advantages, self.adv_eps = scale_advantages, adv_eps
        self.eps_low, self.eps_high, self.loss_agg, self.kl_coef = eps_low, eps_high, loss_agg, kl_coef

    @property
    def needs_reference(self) -> bool:
        return self.kl_coef > 0

    def advantages(self, rewards: torch.Tensor, group_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        """[B] rewards -> [B, T] token advantages (the response's A on each of its tokens)."""
        adv = group_advantages(rewards, group_ids, self.scale_advantages, self.adv_eps)
        return adv.unsqueeze(-1) * response_mask

    def loss(
        self,
        logp: torch.Tensor,
        logp_old: torch.Tensor,
        adv: torch.Tensor,
        mask: torch.Tensor,
        norm: Normaliser,
        ref_logp: torch.Tensor | None = None,
        token_loss: TokenLoss | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Micro-batch share of the mini-batch loss and per-token stats [N, T] under their metric
        names (``train/clip_low``, ... see ``ppo_clip_loss``). ``token_loss``, the shaper stack's
        per-token term (rlvr_exp/algos/token_terms.py), rescales and adds to the PPO-clip token
        loss before aggregation and before the KL-to-reference term; its stats join the dict."""
        loss_tok, info = ppo_clip_loss(logp, logp_old, adv, self.eps_low, self.eps_high)
        if token_loss is not None:
            clipped = (info["clip_low"] + info["clip_high"]) > 0
            terms = token_loss(LossTokens(logp, logp_old, adv, mask.bool(), clipped))
            loss_tok = terms.apply(loss_tok)
        info = {f"train/{key}": value for key, value in info.items()}
        if token_loss is not None:
            info.update({key: value.detach() for key, value in terms.stats.items()})
        if self.kl_coef > 0:
            if ref_logp is None:
                raise RuntimeError("kl_coef > 0 but no reference log-probs were computed")
            kl_ref = k3_kl(logp, ref_logp)
            loss_tok = loss_tok + self.kl_coef * kl_ref
            info["train/kl_ref"] = kl_ref.detach()
        return aggregate(loss_tok, mask, self.loss_agg, norm), info
