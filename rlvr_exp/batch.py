"""The rollout batch: what one training step generated, scored and shaped.

Shapes: P prompts, G samples per prompt, B = P*G responses, Tp prompt tokens (left-padded),
T response tokens (right-padded). Responses of one prompt are contiguous and share a group id.
Padding positions hold ``pad_id`` in id tensors, False in masks and exactly 0 in float tensors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlvr_exp.algos.token_terms import TokenLoss
from rlvr_exp.tasks.base import Problem


@dataclass
class RolloutBatch:
    prompt_ids: torch.Tensor  # [B, Tp] long, left-padded
    prompt_mask: torch.Tensor  # [B, Tp] bool
    response_ids: torch.Tensor  # [B, T] long, right-padded
    response_mask: torch.Tensor  # [B, T] bool
    group_ids: torch.Tensor  # [B] long
    truncated: torch.Tensor  # [B] bool: no end-of-sequence within the length limit
    problems: list[Problem]  # [B] the problem of each response
    texts: list[str]  # [B] decoded responses
    rewards: torch.Tensor | None = None  # [B] float
    correct: torch.Tensor | None = None  # [B] bool
    logp_old: torch.Tensor | None = None  # [B, T] sampling-policy log-probs at trainer.temperature
    entropy: torch.Tensor | None = None  # [B, T] full-vocabulary entropy (nats)
    ref_logp: torch.Tensor | None = None  # [B, T] reference-policy log-probs (KL algos only)
    advantages_raw: torch.Tensor | None = None  # [B, T] before shaping
    advantages: torch.Tensor | None = None  # [B, T] after the shaper stack
    loss_mask: torch.Tensor | None = None  # [B, T] bool, after every shaper's mask
    token_loss: TokenLoss | None = None  # the shaper stack's per-token loss term (algos/token_terms.py)
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.response_ids.shape[0])

    @property
    def response_len(self) -> torch.Tensor:  # [B] long
        return self.response_mask.sum(-1)

    @property
    def positions(self) -> torch.Tensor:  # [B, T] long, 0-based token index (0 on padding)
        idx = torch.arange(self.response_ids.shape[1], device=self.response_ids.device)
        return idx.expand_as(self.response_ids) * self.response_mask

    @property
    def rel_position(self) -> torch.Tensor:  # [B, T] float, (t-1)/L for 1-based t (0 on padding)
        length = self.response_len.clamp(min=1).unsqueeze(-1).float()
        return self.positions.float() / length * self.response_mask

    def to(self, device: torch.device | str) -> RolloutBatch:
        """The batch with every tensor on ``device``."""
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return RolloutBatch(**moved)

    def select(self, index: torch.Tensor) -> RolloutBatch:
        """Rows ``index`` ([N] long) of every per-response field."""
        out = {}
        for name, value in self.__dict__.items():
            if isinstance(value, torch.Tensor):
                out[name] = value[index]
            elif isinstance(value, list):
                out[name] = [value[i] for i in index.tolist()]
            else:
                out[name] = value
        return RolloutBatch(**out)


def concat_batches(batches: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Stack batches of possibly different widths (prompts left-padded, responses right-padded)."""
    if len(batches) == 1:
        return batches[0]
    tp = max(b.prompt_ids.shape[1] for b in batches)
    t = max(b.response_ids.shape[1] for b in batches)

    def left(x: torch.Tensor, width: int, value: int | bool) -> torch.Tensor:
        return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

    def right(x: torch.Tensor, width: int, value: int | bool | float) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    offset, groups = 0, []
    for b in batches:
        groups.append(b.group_ids + offset)
        offset += int(b.group_ids.max()) + 1 if b.size else 0
    fields = dict(
        prompt_ids=torch.cat([left(b.prompt_ids, tp, pad_id) for b in batches]),
        prompt_mask=torch.cat([left(b.prompt_mask, tp, False) for b in batches]),
        response_ids=torch.cat([right(b.response_ids, t, pad_id) for b in batches]),
        response_mask=torch.cat([right(b.response_mask, t, False) for b in batches]),
        group_ids=torch.cat(groups),
        truncated=torch.cat([b.truncated for b in batches]),
        problems=[p for b in batches for p in b.problems],
        texts=[s for b in batches for s in b.texts],
    )
    for name in ("rewards", "correct"):
        if all(getattr(b, name) is not None for b in batches):
            fields[name] = torch.cat([getattr(b, name) for b in batches])
    for name in ("logp_old", "entropy"):  # the sampler's scores (trainer.old_logprobs), right-padded with 0
        if all(getattr(b, name) is not None for b in batches):
            fields[name] = torch.cat([right(getattr(b, name), t, 0.0) for b in batches])
    return RolloutBatch(**fields)
