"""The collector (rlvr_exp/collect.py): DAPO dynamic sampling rounds, partial batches when the round
budget is spent, metrics over every generated response, and the soft overlong penalty; with a fake
rollout and a fake reward so every number is hand-checkable."""
from __future__ import annotations

import pytest
import torch

from rlvr_exp.collect import Collector, overlong_penalty
from rlvr_exp.rollout.base import SamplingParams, ScoredResponses
from rlvr_exp.tasks.base import Problem

PAD, EOS = 0, 1
RIGHT, WRONG = ord("R"), ord("W")  # a response is one character: R is judged correct, W wrong


class FakeTokenizer:
    pad_token_id, eos_token_id = PAD, EOS

    def batch_decode(self, responses: list[list[int]], skip_special_tokens: bool = True) -> list[str]:
        return ["".join(chr(t) for t in r if t not in (PAD, EOS)) for r in responses]


class FakeRollout:
    """The problem's answer is the group's script: "RW" gives one right and one wrong response
    (G = 2). Each response is its letter, ``pad_to`` copies long, then EOS."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            script = "".join(chr(t) for t in prompt).split("|")[1]
            assert len(script) == sampling.n
            out += [[ord(letter)] * (2 if letter.islower() else 1) + [EOS] for letter in script]
        return out


class FakeScoredRollout(FakeRollout):
    """Scores its samples: token k of a response gets log-prob -(k + 1) / 8 and entropy 0.5 (0 past the end)."""

    scores_samples = True

    def generate_scored(self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool) -> ScoredResponses:
        out = self.generate(prompts, sampling)
        t = max(map(len, out))
        logp = torch.tensor([[-(k + 1) / 8 if k < len(r) else 0.0 for k in range(t)] for r in out])
        return ScoredResponses(out, logp, (logp != 0).float() * 0.5 if with_entropy else None)


class FakeReward:
    """+1 when the response is all R (any case), -1 otherwise; ``correct`` likewise."""

    def __call__(self, responses: list[str], golds: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        correct = torch.tensor([set(r.upper()) == {"R"} for r in responses])
        return correct.float() * 2 - 1, correct

    def stats(self) -> dict[str, float]:
        return {"reward/fake_calls": 1.0}


class ListStream:
    """Hands out the given problems in order (the real stream shuffles)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)

    def take(self, n: int) -> list[Problem]:
        taken, self.problems = self.problems[:n], self.problems[n:]
        return taken


def problems(*scripts: str) -> list[Problem]:
    return [Problem(question=f"q{i}|{s}", answer=s) for i, s in enumerate(scripts)]


class FakeEncoder:
    """Prompt ids are the question's characters; the problems numbered in ``cut`` count as cut."""

    def __init__(self, cut: frozenset[int] = frozenset()) -> None:
        self.cut = cut

    def __call__(self, problem: Problem) -> list[int]:
        return [ord(ch) for ch in problem.question]

    def was_cut(self, problem: Problem) -> bool:
        return int(problem.question.split("|")[0][1:]) in self.cut


def collector(scripts: list[str], prompts_per_step: int = 2, max_rounds: int = 3, dynamic: bool = True,
              buffer: int = 0, factor: float = 1.0, max_new_tokens: int = 8,
              cut: frozenset[int] = frozenset()) -> tuple[Collector, FakeRollout]:
    rollout = FakeRollout()
    c = Collector(ListStream(problems(*scripts)), rollout, FakeReward(), FakeEncoder(cut),
                  FakeTokenizer(), SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens),
                  prompts_per_step, dynamic, max_rounds, buffer, factor)
    return c, rollout


def test_rounds_until_full_and_metrics_over_every_response():
    # round 1: q0 mixed (kept), q1 all right (dropped); round 2: q2 all right (dropped), q3 mixed (kept)
    c, rollout = collector(["RW", "RR", "RR", "WR"])
    batch, stats = c.collect()
    assert rollout.calls == [2, 2]
    assert [p.question for p in batch.problems] == ["q0|RW", "q0|RW", "q3|WR", "q3|WR"]
    assert batch.texts == ["R", "W", "W", "R"]
    assert batch.rewards.tolist() == [1.0, -1.0, -1.0, 1.0]
    g = batch.group_ids.tolist()
    assert g[0] == g[1] and g[2] == g[3] and g[0] != g[2]  # one id per prompt, distinct across rounds
    assert stats["train/sampling_rounds"] == 2.0 and stats["train/groups_kept"] == 2.0
    # 8 responses generated: rewards +1 -1 +1 +1 +1 +1 -1 +1 -> mean 4/8; 6 of 8 correct.
    # (Over the kept responses only it would be 0.0 and 0.5: the filter must not bias these.)
    assert stats["reward/mean"] == pytest.approx(0.5)
    assert stats["train/accuracy"] == pytest.approx(0.75)
    assert stats["train/all_correct_share"] == pytest.approx(2 / 4)
    assert stats["train/all_wrong_share"] == 0.0
    assert stats["reward/fake_calls"] == 1.0
    assert set(stats) >= {"time/generate", "time/reward"}


def test_partial_batch_when_the_round_budget_is_spent():
    c, rollout = collector(["RW", "RR", "WW", "RR", "WR", "RW"], max_rounds=2)
    batch, stats = c.collect()
    assert rollout.calls == [2, 2]  # the third round (q4, q5) is never sampled
    assert batch.size == 2 and [p.answer for p in batch.problems] == ["RW", "RW"]
    assert stats["train/sampling_rounds"] == 2.0 and stats["train/groups_kept"] == 1.0
    assert stats["train/all_correct_share"] == pytest.approx(2 / 4)
    assert stats["train/all_wrong_share"] == pytest.approx(1 / 4)


def test_no_group_kept_gives_no_batch():
    c, _ = collector(["RR", "WW", "RR", "RR"], max_rounds=2)
    batch, stats = c.collect()
    assert batch is None
    assert stats["train/sampling_rounds"] == 2.0 and stats["train/groups_kept"] == 0.0
    assert stats["reward/mean"] == pytest.approx((2 - 2 + 2 + 2) / 8)


def test_a_round_keeps_no_more_groups_than_the_batch_needs():
    # round 1 keeps q0; round 2 has two mixed groups but room for one: the first (q2) is taken
    c, _ = collector(["RW", "WW", "WR", "RW"])
    batch, stats = c.collect()
    assert [p.question for p in batch.problems] == ["q0|RW", "q0|RW", "q2|WR", "q2|WR"]
    assert stats["train/groups_kept"] == 2.0
    assert stats["train/sampling_rounds"] == 2.0


def test_without_dynamic_sampling_one_round_keeps_every_group():
    c, rollout = collector(["RR", "WW", "RW", "RW"], dynamic=False)
    batch, stats = c.collect()
    assert rollout.calls == [2]
    assert [p.answer for p in batch.problems] == ["RR", "RR", "WW", "WW"]
    assert batch.group_ids.tolist() == [0, 0, 1, 1]
    assert stats["train/sampling_rounds"] == 1.0 and stats["train/groups_kept"] == 2.0


def test_filter_reads_correctness_not_the_penalised_reward():
    # Round 1, "Rr": both right, lengths 1 and 2 tokens (+EOS: 2 and 3). max_new_tokens 3, buffer 2:
    # penalty -(L - 1) / 2 -> -0.5 and -1.0, rewards 0.5 and 0.0 differ, yet the group is all
    # correct: dropped, as the released code filters on `acc`. Round 2, "Rw": mixed, kept, with the
    # penalty in its rewards: 1 - 0.5 = 0.5 and -1 - 1.0 = -2.0.
    c, rollout = collector(["Rr", "Rw"], prompts_per_step=1, max_rounds=2, buffer=2, max_new_tokens=3)
    batch, stats = c.collect()
    assert rollout.calls == [1, 1] and stats["train/sampling_rounds"] == 2.0
    assert [p.answer for p in batch.problems] == ["Rw", "Rw"]
    assert batch.rewards.tolist() == [0.5, -2.0]
    assert batch.correct.tolist() == [True, False]
    assert stats["train/all_correct_share"] == 0.5


def test_prompt_truncated_share_counts_the_step_prompts_that_were_cut():
    c, _ = collector(["RW", "WR", "RW", "RR"], prompts_per_step=4, max_rounds=1, cut=frozenset({0, 3}))
    _, stats = c.collect()
    assert stats["train/prompt_truncated_share"] == 0.5  # 2 of the 4 prompts drawn


def test_the_samplers_scores_follow_the_kept_rows_across_rounds():
    # round 1 keeps q0 ("Rw": [R, EOS] and [w, w, EOS], width 3), round 2 keeps q3 (width 2): padded to 3
    rollout = FakeScoredRollout()
    c = Collector(ListStream(problems("Rw", "RR", "RR", "WR")), rollout, FakeReward(), FakeEncoder(), FakeTokenizer(),
                  SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8), 2, True, 3, scored=True)
    batch, _ = c.collect()
    assert [p.answer for p in batch.problems] == ["Rw", "Rw", "WR", "WR"]
    assert batch.response_len.tolist() == [2, 3, 2, 2]
    assert batch.logp_old.tolist() == [[-0.125, -0.25, 0.0], [-0.125, -0.25, -0.375],
                                       [-0.125, -0.25, 0.0], [-0.125, -0.25, 0.0]]
    assert torch.equal(batch.entropy, batch.response_mask.float() * 0.5)


def test_without_sampler_scores_the_batch_has_none():
    c, _ = collector(["RW", "WR"])
    batch, _ = c.collect()
    assert batch.logp_old is None and batch.entropy is None


class TestOverlongPenalty:
    def test_hand_computed(self):
        # max_len 10, buffer 4: free up to 6 tokens, then -(L - 6) / 4 * factor, floor -factor
        lengths = torch.tensor([5, 6, 7, 8, 10, 12])
        got = overlong_penalty(lengths, max_len=10, buffer=4, factor=2.0)
        assert torch.allclose(got, torch.tensor([0.0, 0.0, -0.5, -1.0, -2.0, -2.0]))
        assert got.dtype == torch.float32

    def test_buffer_zero_is_off(self):
        got = overlong_penalty(torch.tensor([1, 100]), max_len=10, buffer=0, factor=1.0)
        assert torch.equal(got, torch.zeros(2))
