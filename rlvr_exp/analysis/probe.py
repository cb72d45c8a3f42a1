"""A fixed probe set: the same positive and negative responses re-scored as training goes on.

Math (arXiv 2508.02260, instance-level analysis: entropy falls mostly in negative samples during
the rising stage; docs/method.md section 7 "entropy change ... in positive vs negative samples"): for a
side S (pos = correct, neg = wrong) of captured responses with token set M_S, at step k

    probe/entropy_S        = (1/|M_S|) sum_{(i,t) in M_S} H_k(i, t)
    probe/entropy_change_S = probe/entropy_S - (1/|M_S|) sum_{(i,t) in M_S} H_0(i, t)

and the same for the token log-prob log pi_k(y_{i,t}) (``probe/logp_S``, ``probe/logp_change_S``).
H_0 and log pi_0 are the scores of the step that captured the response (the sampling policy, before
that step's update), so each change is that of the policy since its response's capture.
``probe/entropy_change_neg_minus_pos`` is the negative side's change minus the positive side's.
Each change and the difference carry a 95% cluster-bootstrap interval over the probe's prompts
(``_lo``, ``_hi``; :mod:`rlvr_exp.analysis.bootstrap`, ``bootstrap_resamples`` resamples drawn
with ``bootstrap_seed``, the same draws for every key of a step).

Selection (:func:`pick_rows`): a side takes at most ``max_per_prompt`` responses of a prompt (its
question text, across steps too), round robin over the batch's prompts (one response of each
prompt, then a second, ...), so its responses come from as many prompts as the batch offers. It
fills from the first batch that has any response of its kind and from the following batches until
it holds ``samples_per_side`` responses, or until ``fill_steps`` steps have passed since its first
capture (then it keeps what it has). ``probe/responses_S``, ``probe/prompts_S`` and
``probe/capture_{first,last}_S`` (the steps it was filled at) say what it got.

Conventions: ids are kept on the CPU, trimmed of all-padding columns, and re-scored exactly, every
time, under ``torch.no_grad`` in eval mode. With an unchanged policy the changes are 0 (exactly on
the CPU; kernels that depend on the batch layout, as on GPUs, may leave round-off). Entropy keys are
absent when the run does not score entropy. The probe is per rank: each rank holds and scores
its own set; probe metrics are not reduced across ranks.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.analysis.bootstrap import percentile_interval, resample_counts, resampled_means
from rlvr_exp.batch import RolloutBatch

SIDES = ("pos", "neg")


def pick_rows(prompts: list[str], eligible: list[bool], taken: Counter, max_per_prompt: int, room: int) -> list[int]:
    """Indices of up to ``room`` eligible rows, round robin over the prompts in order of first
    appearance (each prompt's first eligible row, then its second, ...), a prompt giving at most
    ``max_per_prompt`` rows counting the ``taken[prompt]`` it gave before."""
    rows_of: dict[str, list[int]] = {}
    for i, (prompt, ok) in enumerate(zip(prompts, eligible)):
        if ok:
            rows_of.setdefault(prompt, []).append(i)
    picked: list[int] = []
    for rank in range(max_per_prompt):
        for prompt, rows in rows_of.items():
            if len(picked) == room:
                return picked
            if rank < len(rows) and taken[prompt] + rank < max_per_prompt:
                picked.append(rows[rank])
    return picked


def _pad_cat(a: torch.Tensor, b: torch.Tensor, left: bool) -> torch.Tensor:
    """Rows of ``a`` then ``b`` ([N, T] each), the narrower padded with zeros (False) on one side."""
    width = max(a.shape[1], b.shape[1])

    def pad(x: torch.Tensor) -> torch.Tensor:
        extra = width - x.shape[1]
        return torch.nn.functional.pad(x, (extra, 0) if left else (0, extra))

    return torch.cat([pad(a), pad(b)])


@dataclass
class ProbeSide:
    """The captured responses of one side ([N, Tp] prompts, [N, T] responses), their scores at
    capture, their prompt (an index into :attr:`ProbeSet.prompts`) and capture step."""

    prompt_ids: torch.Tensor  # [N, Tp] long, left-padded
    prompt_mask: torch.Tensor  # [N, Tp] bool
    response_ids: torch.Tensor  # [N, T] long, right-padded
    response_mask: torch.Tensor  # [N, T] bool
    logp0: torch.Tensor  # [N, T] float, 0 on padding
    entropy0: torch.Tensor | None  # [N, T] float, 0 on padding; None without entropy scoring
    prompt_index: torch.Tensor  # [N] long
    capture_step: torch.Tensor  # [N] long

    @classmethod
    def from_batch(cls, batch: RolloutBatch, prompt_index: list[int], step: int) -> ProbeSide:
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
            prompt_index=torch.tensor(prompt_index, dtype=torch.long),
            capture_step=torch.full((batch.size,), step, dtype=torch.long),
        )

    @property
    def size(self) -> int:
        return int(self.response_ids.shape[0])

    def extend(self, other: ProbeSide) -> ProbeSide:
        """This side's rows followed by ``other``'s (prompts left-, responses right-padded)."""
        ent = (_pad_cat(self.entropy0, other.entropy0, left=False)
               if self.entropy0 is not None and other.entropy0 is not None else None)
        return ProbeSide(
            prompt_ids=_pad_cat(self.prompt_ids, other.prompt_ids, left=True),
            prompt_mask=_pad_cat(self.prompt_mask, other.prompt_mask, left=True),
            response_ids=_pad_cat(self.response_ids, other.response_ids, left=False),
            response_mask=_pad_cat(self.response_mask, other.response_mask, left=False),
            logp0=_pad_cat(self.logp0, other.logp0, left=False), entropy0=ent,
            prompt_index=torch.cat([self.prompt_index, other.prompt_index]),
            capture_step=torch.cat([self.capture_step, other.capture_step]),
        )

    def as_batch(self, device: torch.device) -> RolloutBatch:
        n = self.size
        return RolloutBatch(
            prompt_ids=self.prompt_ids.to(device), prompt_mask=self.prompt_mask.to(device),
            response_ids=self.response_ids.to(device), response_mask=self.response_mask.to(device),
            group_ids=self.prompt_index.to(device),
            truncated=torch.zeros(n, dtype=torch.bool, device=device), problems=[], texts=[],
        )

    def state_dict(self) -> dict[str, torch.Tensor | None]:
        return dict(self.__dict__)


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    masked = torch.where(mask, values.double(), values.new_zeros((), dtype=torch.float64))
    return float(masked.sum() / mask.sum().clamp(min=1))


def _per_prompt(probe: ProbeSide, values: torch.Tensor, n_prompts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt token sums of ``values`` [N, T] over the side's tokens, and token counts ([P] each)."""
    mask = probe.response_mask
    sums = torch.zeros(n_prompts, dtype=torch.float64).index_add_(
        0, probe.prompt_index, torch.where(mask, values.double(), 0.0).sum(-1))
    counts = torch.zeros(n_prompts, dtype=torch.float64).index_add_(0, probe.prompt_index, mask.sum(-1).double())
    return sums.numpy(), counts.numpy()


class ProbeSet:
    """Captures up to ``samples_per_side`` positive and negative responses from many prompts (module
    docstring), then re-scores them with the current policy in passes of ``rows_per_pass`` rows."""

    def __init__(self, samples_per_side: int, rows_per_pass: int, max_per_prompt: int = 2, fill_steps: int = 5,
                 bootstrap_resamples: int = 1000, bootstrap_seed: int = 0) -> None:
        self.samples_per_side, self.rows_per_pass = samples_per_side, rows_per_pass
        self.max_per_prompt, self.fill_steps = max_per_prompt, fill_steps
        self.bootstrap_resamples, self.bootstrap_seed = bootstrap_resamples, bootstrap_seed
        self.sides: dict[str, ProbeSide | None] = {s: None for s in SIDES}
        self.prompts: list[str] = []  # the probe's prompts (question texts); ProbeSide.prompt_index points here

    def room(self, side: str, step: int) -> int:
        """How many responses ``side`` still takes at ``step`` (0 once full or past its fill window)."""
        probe = self.sides[side]
        if probe is None:
            return self.samples_per_side
        if step >= int(probe.capture_step.min()) + self.fill_steps:
            return 0
        return self.samples_per_side - probe.size

    def _index(self, prompt: str) -> int:
        if prompt not in self.prompts:
            self.prompts.append(prompt)
        return self.prompts.index(prompt)

    def capture(self, batch: RolloutBatch, step: int) -> None:
        """Fill each open side from ``batch`` (scored, with ``correct`` set) by :func:`pick_rows`."""
        prompts = [p.question for p in batch.problems]
        correct = batch.correct.bool().tolist()
        for side, kind in (("pos", True), ("neg", False)):
            room, probe = self.room(side, step), self.sides[side]
            if room <= 0:
                continue
            taken = Counter(self.prompts[i] for i in probe.prompt_index.tolist()) if probe is not None else Counter()
            rows = pick_rows(prompts, [c == kind for c in correct], taken, self.max_per_prompt, room)
            if rows:
                new = ProbeSide.from_batch(batch.select(torch.tensor(rows)), [self._index(prompts[r]) for r in rows], step)
                self.sides[side] = new if probe is None else probe.extend(new)

    @torch.no_grad()
    def metrics(self, policy: torch.nn.Module, spec: LogProbSpec) -> dict[str, float]:
        """``probe/{entropy,logp}_{pos,neg}``, their ``_change_`` since capture with bootstrap
        intervals, the negative-minus-positive difference, and the sides' sizes (module docstring)."""
        device = next(policy.parameters()).device
        out: dict[str, float] = {}
        per_prompt: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for side, probe in self.sides.items():
            if probe is None:
                continue
            with_entropy = probe.entropy0 is not None
            logp, ent = score_batch(policy, probe.as_batch(device), self.rows_per_pass, with_entropy, spec)
            mask = probe.response_mask
            measures = {"logp": (logp.cpu(), probe.logp0)}
            if with_entropy:
                measures["entropy"] = (ent.cpu(), probe.entropy0)
            for name, (now, then) in measures.items():
                change = now.double() - then.double()
                out[f"probe/{name}_{side}"] = _token_mean(now, mask)
                out[f"probe/{name}_change_{side}"] = _token_mean(change, mask)
                per_prompt[name, side] = _per_prompt(probe, change, len(self.prompts))
            out.update({f"probe/responses_{side}": float(probe.size),
                        f"probe/prompts_{side}": float(probe.prompt_index.unique().numel()),
                        f"probe/capture_first_{side}": float(probe.capture_step.min()),
                        f"probe/capture_last_{side}": float(probe.capture_step.max())})
        if per_prompt:
            out.update(self._intervals(per_prompt, out))
        return out

    def _intervals(self, per_prompt: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]],
                   change: dict[str, float]) -> dict[str, float]:
        """``_lo``/``_hi`` of each change and the neg - pos difference (from the ``change`` point
        values) with its interval, all on one set of prompt draws."""
        draws = resample_counts(len(self.prompts), self.bootstrap_resamples, self.bootstrap_seed)
        means = {key: resampled_means(sums, counts, draws) for key, (sums, counts) in per_prompt.items()}
        out: dict[str, float] = {}
        for (name, side), values in means.items():
            out[f"probe/{name}_change_{side}_lo"], out[f"probe/{name}_change_{side}_hi"] = percentile_interval(values)
        for name in dict.fromkeys(name for name, _ in means):
            if (name, "pos") in means and (name, "neg") in means:
                key = f"probe/{name}_change_neg_minus_pos"
                out[key] = change[f"probe/{name}_change_neg"] - change[f"probe/{name}_change_pos"]
                out[f"{key}_lo"], out[f"{key}_hi"] = percentile_interval(means[name, "neg"] - means[name, "pos"])
        return out

    def state_dict(self) -> dict:
        return {"sides": {s: (p.state_dict() if p is not None else None) for s, p in self.sides.items()},
                "prompts": list(self.prompts)}

    def load_state_dict(self, state: dict) -> None:
        if "sides" not in state:
            raise ValueError("the checkpoint's probe set predates the many-prompt probe (no 'sides' in its state): "
                             "resume with analysis.probe_every=0, or start a new run")
        self.sides = {s: (ProbeSide(**state["sides"][s]) if state["sides"][s] is not None else None) for s in SIDES}
        self.prompts = list(state["prompts"])
