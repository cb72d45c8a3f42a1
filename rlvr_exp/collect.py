"""Collecting a training batch: sample G responses per prompt (with the sampler's own log-probs
and entropies when the rollout gives them, ``trainer.old_logprobs``), reward them, and (DAPO dynamic
sampling, arXiv 2503.14476 section 3.2) drop groups whose responses are all correct or all wrong, generating
more rounds until the batch is full or the round budget is spent."""
from __future__ import annotations

import random
import time

import torch
from transformers import PreTrainedTokenizerBase

from rlvr_exp.batch import RolloutBatch, concat_batches
from rlvr_exp.distributed import SingleProcess
from rlvr_exp.logging.meters import MeanMeter
from rlvr_exp.rewards.base import Reward
from rlvr_exp.rollout.base import Rollout, SamplingParams
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder


class ProblemStream:
    """Endless shuffled passes over the training problems; its position is checkpointable."""

    def __init__(self, problems: list[Problem], seed: int) -> None:
        if not problems:
            raise ValueError("the task has no training problems")
        self.problems, self.seed, self.epoch, self.cursor = problems, seed, 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        order = list(range(len(self.problems)))
        random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Problem]:
        out = []
        while len(out) < n:
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._permutation()
            out.append(self.problems[self._order[self.cursor]])
            self.cursor += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._order = self._permutation()


def build_batch(
    problems: list[Problem], responses: list[list[int]], n: int, encoder: PromptEncoder,
    tokenizer: PreTrainedTokenizerBase, max_new_tokens: int,
) -> RolloutBatch:
    """Tensors of a batch from prompt-major responses (n per problem)."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [encoder(p) for p in problems for _ in range(n)]
    tp = max(map(len, prompts))
    t = max(1, max(map(len, responses)))
    return RolloutBatch(
        prompt_ids=torch.tensor([[pad] * (tp - len(p)) + p for p in prompts]),
        prompt_mask=torch.tensor([[False] * (tp - len(p)) + [True] * len(p) for p in prompts]),
        response_ids=torch.tensor([r + [pad] * (t - len(r)) for r in responses]),
        response_mask=torch.tensor([[True] * len(r) + [False] * (t - len(r)) for r in responses]),
        group_ids=torch.arange(len(problems)).repeat_interleave(n),
        truncated=torch.tensor([len(r) >= max_new_tokens and (not r or r[-1] != eos) for r in responses]),
        problems=[p for p in problems for _ in range(n)],
        texts=tokenizer.batch_decode(responses, skip_special_tokens=True),
    )


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer: int, factor: float) -> torch.Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476 eq. 13): 0 up to max_len - buffer, then
    linearly down to -factor at max_len. [B] long -> [B] float. ``buffer=0`` turns it off."""
    if buffer <= 0:
        return torch.zeros(lengths.shape, dtype=torch.float32)
    over = (lengths.float() - (max_len - buffer)).clamp(min=0.0)
    return -(over / buffer).clamp(max=1.0) * factor


class Collector:
    """One step's batch: ``prompts_per_step`` groups of ``sampling.n`` scored responses, split
    between the ranks of ``dist``: each round every rank takes the same ``prompts_per_step``
    problems from the (identical) stream and samples its own whole groups, a contiguous share
    of ``prompts_per_step / world_size`` prompts, so group statistics stay on one rank.

    Dynamic sampling under several ranks: rounds go on until EVERY rank has its share (a rank
    that is full still samples, and drops what it does not need), and each rank then keeps as
    many groups as the rank that kept fewest (the others drop their surplus), so every rank holds
    the same number of rows and runs the same number of forward passes."""

    def __init__(
        self, stream: ProblemStream, rollout: Rollout, reward_fn: Reward, encoder: PromptEncoder,
        tokenizer: PreTrainedTokenizerBase, sampling: SamplingParams, prompts_per_step: int,
        dynamic_sampling: bool, max_rounds: int, overlong_buffer: int = 0, overlong_factor: float = 1.0,
        dist: SingleProcess | None = None, scored: bool | None = None,
    ) -> None:
        self.stream, self.rollout, self.reward_fn, self.encoder = stream, rollout, reward_fn, encoder
        self.tokenizer, self.sampling, self.prompts_per_step = tokenizer, sampling, prompts_per_step
        self.dynamic_sampling, self.max_rounds = dynamic_sampling, max_rounds
        self.overlong_buffer, self.overlong_factor = overlong_buffer, overlong_factor
        self.dist = dist if dist is not None else SingleProcess()
        self.scored = scored  # None: the trainer scores the batch; else the rollout does, with entropies if True

    def _round(self, problems: list[Problem], timing: dict[str, float]) -> RolloutBatch:
        t0 = time.perf_counter()
        prompts = [self.encoder(p) for p in problems]
        if self.scored is None:
            responses, logp, entropy = self.rollout.generate(prompts, self.sampling), None, None
        else:
            out = self.rollout.generate_scored(prompts, self.sampling, self.scored)
            responses, logp, entropy = out.responses, out.logp, out.entropy
        t1 = time.perf_counter()
        batch = build_batch(problems, responses, self.sampling.n, self.encoder, self.tokenizer, self.sampling.max_new_tokens)
        batch.logp_old, batch.entropy = logp, entropy
        rewards, correct = self.reward_fn(batch.texts, [p.answer for p in batch.problems])
        batch.rewards = rewards.float() + overlong_penalty(
            batch.response_len, self.sampling.max_new_tokens, self.overlong_buffer, self.overlong_factor)
        batch.correct = correct.bool()
        timing["time/generate"] += t1 - t0
        timing["time/reward"] += time.perf_counter() - t1
        return batch

    def _my_share(self) -> list[Problem]:
        share = self.prompts_per_step // self.dist.world_size
        return self.stream.take(self.prompts_per_step)[self.dist.rank * share : (self.dist.rank + 1) * share]

    def collect(self) -> tuple[RolloutBatch, dict[str, float]]:
        """Returns the kept batch (None if no group was kept) and metrics over every response
        generated this step (``reward/mean`` and ``train/accuracy`` are not biased by the filter),
        reduced over ranks (``train/groups_kept`` and the ``reward/`` counters are totals)."""
        timing = {"time/generate": 0.0, "time/reward": 0.0}
        kept: list[RolloutBatch] = []
        n_kept, n_groups, n_all_correct, n_all_wrong, rounds, n_min, n_cut = 0, 0, 0, 0, 0, 0, 0
        reward_sum, correct_sum = 0.0, 0.0
        share = self.prompts_per_step // self.dist.world_size
        while rounds < max(1, self.max_rounds) and n_min < share:
            rounds += 1
            problems = self._my_share()
            batch = self._round(problems, timing)
            n_cut += sum(self.encoder.was_cut(p) for p in problems)
            r = batch.rewards.view(-1, self.sampling.n)
            c = batch.correct.view(-1, self.sampling.n)
            n_groups += r.shape[0]
            reward_sum += float(r.sum())
            correct_sum += float(c.sum())
            n_all_correct += int(c.all(-1).sum())
            n_all_wrong += int((~c).all(-1).sum())
            # Mixed correctness, not mixed reward: the released code filters on `acc` (filter_groups.metric=acc),
            # so an all-correct group that differs only by its overlong penalty is dropped (docs/method.md section 2).
            keep = (c.any(-1) & ~c.all(-1)) if self.dynamic_sampling else torch.ones(r.shape[0], dtype=torch.bool)
            keep_groups = keep.nonzero().flatten()[: share - n_kept]
            rows = (keep_groups.unsqueeze(-1) * self.sampling.n + torch.arange(self.sampling.n)).flatten()
            if rows.numel():
                kept.append(batch.select(rows))
                n_kept += len(keep_groups)
            n_min = int(self.dist.all_reduce(torch.tensor([n_kept]), "min").item())
            if not self.dynamic_sampling:
                break
        out = concat_batches(kept, self.tokenizer.pad_token_id) if n_min else None
        if out is not None and n_min < n_kept:  # another rank kept fewer groups: keep as many
            out = out.select(torch.arange(n_min * self.sampling.n))
        meter = MeanMeter()  # (total, count) pairs: exact over ranks; count 0 marks a counter
        for key, value in self.reward_fn.stats().items():
            meter.add(key, value, 0.0)
        for key, value in timing.items():
            meter.add(key, value, 1.0)
        meter.add("train/sampling_rounds", float(rounds), 1.0)
        meter.add("train/groups_kept", float(n_min), 0.0)
        meter.add("reward/mean", reward_sum, n_groups * self.sampling.n)
        meter.add("train/accuracy", correct_sum, n_groups * self.sampling.n)
        meter.add("train/all_correct_share", n_all_correct, n_groups)
        meter.add("train/all_wrong_share", n_all_wrong, n_groups)
        meter.add("train/prompt_truncated_share", n_cut, n_groups)
        meter.all_reduce()
        return out, meter.means()
