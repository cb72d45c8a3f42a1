"""A fixed probe set: the same positive and negative responses re-scored as training goes on.

Math (arXiv 2508.02260, instance-level analysis: entropy falls mostly in negative samples during
the rising stage; docs/method.md section 7 "entropy change ... in positive vs negative samples"): for a
side S (pos = correct, neg = wrong) of captured responses with token set M_S, at step k

    probe/entropy_S        = (1/|M_S|) sum_{(i,t) in M_S} H_k(i, t)
    probe/entropy_change_S = probe/entropy_S - (1/|M_S|) sum_{(i,t) in M_S} H_0(i, t)

and the same for the token log-prob log pi_k(y_{i,t}) (``probe/logp_S``, ``probe/logp_change_S``).
H_0 and log pi_0 are the scores of the step that captured the side (the sampling policy, before
that step's update), so the change is that of the policy since capture.

Conventions: each side holds the first ``samples_per_side`` responses of its kind in the first
batch that has any; a side missing from that batch is captured from a later one. The ids are kept
on the CPU, trimmed of all-padding columns, and re-scored exactly, every time, under
``torch.no_grad`` in eval mode. With an unchanged policy the changes are 0 (exactly on the CPU;
kernels that depend on the batch layout, as on GPUs, may leave round-off). Entropy keys are
absent when the run does not score entropy. The probe is per rank: each rank holds and scores
its own set; probe metrics are not reduced across ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.batch import RolloutBatch

SIDES = ("pos", "neg")


@dataclass
class ProbeSide:
    """The captured responses of one side ([N, Tp] prompts, [N, T] responses) and their scores."""

    prompt_ids: torch.Tensor  # [N, Tp] long, left-padded
    prompt_mask: torch.Tensor  # [N, Tp] bool
    response_ids: torch.Tensor  # [N, T] long, right-padded
    response_mask: torch.Tensor  # [N, T] bool
    logp0: torch.Tensor  # [N, T] float, 0 on padding
    entropy0: torch.Tensor | None  # [N, T] float, 0 on padding; None without entropy scoring

    @classmethod
    def from_batch(cls, batch: RolloutBatch) -> ProbeSide:
        """Copies (on the CPU) of ``batch``'s ids and scores, without all-padding columns."""
        keep_p = batch.prompt_mask.any(0)
        t = max(1, int(batch.response_len.max()))

        def cpu(x: torch.Tensor) -> torch.Tensor:
            return x.detach().to("cpu", copy=True)

        return cls(
            prompt_ids=cpu(batch.prompt_ids[:, keep_p]), prompt_mask=cpu(batch.prompt_mask[:, keep_p]),
            response_ids=cpu(batch.response_ids[:, :t]), response_mask=cpu(batch.response_mask[:, :t]),
            logp0=cpu(batch.logp_old[:, :t]),
            entropy0=cpu(batch.entropy[:, :t]) if batch.entropy is not None else None,
        )

    def as_batch(self, device: torch.device) -> RolloutBatch:
        n = self.response_ids.shape[0]
        return RolloutBatch(
            prompt_ids=self.prompt_ids.to(device), prompt_mask=self.prompt_mask.to(device),
            response_ids=self.response_ids.to(device), response_mask=self.response_mask.to(device),
            group_ids=torch.zeros(n, dtype=torch.long, device=device),
            truncated=torch.zeros(n, dtype=torch.bool, device=device), problems=[], texts=[],
        )

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        return dict(self.__dict__)


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    masked = torch.where(mask, values.double(), values.new_zeros((), dtype=torch.float64))
    return float(masked.sum() / mask.sum().clamp(min=1))


class ProbeSet:
    """Captures up to ``samples_per_side`` positive and negative responses once, then re-scores
    them with the current policy in passes of ``rows_per_pass`` rows."""

    def __init__(self, samples_per_side: int, rows_per_pass: int) -> None:
        self.samples_per_side, self.rows_per_pass = samples_per_side, rows_per_pass
        self.sides: dict[str, ProbeSide | None] = {s: None for s in SIDES}

    @property
    def complete(self) -> bool:
        return all(v is not None for v in self.sides.values())

    def capture(self, batch: RolloutBatch) -> None:
        """Fill each empty side from ``batch`` (scored, with ``correct`` set) when it has rows of it."""
        if self.complete:
            return
        correct = batch.correct.bool()
        for side, rows in (("pos", correct), ("neg", ~correct)):
            index = rows.nonzero().squeeze(-1)[: self.samples_per_side]
            if self.sides[side] is None and index.numel():
                self.sides[side] = ProbeSide.from_batch(batch.select(index))

    @torch.no_grad()
    def metrics(self, policy: torch.nn.Module, spec: LogProbSpec) -> dict[str, float]:
        """``probe/{entropy,logp}_{pos,neg}`` and their ``_change_`` since capture (module docstring)."""
        device = next(policy.parameters()).device
        out: dict[str, float] = {}
        for side, probe in self.sides.items():
            if probe is None:
                continue
            with_entropy = probe.entropy0 is not None
            logp, ent = score_batch(policy, probe.as_batch(device), self.rows_per_pass, with_entropy, spec)
            mask = probe.response_mask
            logp = logp.cpu()
            out[f"probe/logp_{side}"] = _token_mean(logp, mask)
            out[f"probe/logp_change_{side}"] = _token_mean(logp.double() - probe.logp0.double(), mask)
            if with_entropy:
                ent = ent.cpu()
                out[f"probe/entropy_{side}"] = _token_mean(ent, mask)
                out[f"probe/entropy_change_{side}"] = _token_mean(ent.double() - probe.entropy0.double(), mask)
        return out

    def state_dict(self) -> dict[str, dict | None]:
        return {s: (p.state_dict() if p is not None else None) for s, p in self.sides.items()}

    def load_state_dict(self, state: dict[str, dict | None]) -> None:
        self.sides = {s: (ProbeSide(**state[s]) if state[s] is not None else None) for s in SIDES}
