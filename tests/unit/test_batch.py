"""``concat_batches`` (rlvr_exp/batch.py): prompts stay left-padded and responses right-padded at
the widest width, group ids are offset so that groups of different rounds never merge."""
from __future__ import annotations

import torch

from rlvr_exp.batch import RolloutBatch, concat_batches

PAD = 9


def batch(prompts: list[list[int]], responses: list[list[int]], groups: list[int], rewards: list[float] | None,
          tag: str) -> RolloutBatch:
    tp, t = max(map(len, prompts)), max(map(len, responses))
    out = RolloutBatch(
        prompt_ids=torch.tensor([[PAD] * (tp - len(p)) + p for p in prompts]),
        prompt_mask=torch.tensor([[False] * (tp - len(p)) + [True] * len(p) for p in prompts]),
        response_ids=torch.tensor([r + [PAD] * (t - len(r)) for r in responses]),
        response_mask=torch.tensor([[True] * len(r) + [False] * (t - len(r)) for r in responses]),
        group_ids=torch.tensor(groups), truncated=torch.tensor([len(r) == 3 for r in responses]),
        problems=[f"{tag}{i}" for i in range(len(prompts))], texts=[f"{tag}-text{i}" for i in range(len(prompts))])
    if rewards is not None:
        out.rewards = torch.tensor(rewards)
        out.correct = out.rewards > 0
    return out


def two_batches(second_rewards: list[float] | None = (1.0, -1.0)) -> tuple[RolloutBatch, RolloutBatch]:
    a = batch([[1, 2], [1, 2], [3], [3]], [[5], [5, 6], [7], [7]], [0, 0, 1, 1], [1.0, -1.0, 1.0, -1.0], "a")
    b = batch([[4, 4, 4], [4, 4, 4]], [[8, 8, 8], [8]], [0, 0],
              None if second_rewards is None else list(second_rewards), "b")
    return a, b


def test_padding_sides_and_widths():
    out = concat_batches(list(two_batches()), PAD)
    assert out.prompt_ids.tolist() == [[PAD, 1, 2], [PAD, 1, 2], [PAD, PAD, 3], [PAD, PAD, 3], [4, 4, 4], [4, 4, 4]]
    assert out.prompt_mask.tolist() == [[False, True, True]] * 2 + [[False, False, True]] * 2 + [[True] * 3] * 2
    assert out.response_ids.tolist() == [[5, PAD, PAD], [5, 6, PAD], [7, PAD, PAD], [7, PAD, PAD], [8, 8, 8],
                                         [8, PAD, PAD]]
    assert out.response_len.tolist() == [1, 2, 1, 1, 3, 1]
    assert out.truncated.tolist() == [False] * 4 + [True, False]


def test_group_ids_are_offset_past_the_previous_batch():
    out = concat_batches(list(two_batches()), PAD)
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]


def test_offset_uses_the_largest_id_of_non_contiguous_groups():
    a, b = two_batches()
    a.group_ids = torch.tensor([0, 0, 5, 5])  # ids after a select() of groups 0 and 5
    out = concat_batches([a, b, b], PAD)
    assert out.group_ids.tolist() == [0, 0, 5, 5, 6, 6, 7, 7]


def test_lists_and_scores_follow_the_rows():
    out = concat_batches(list(two_batches()), PAD)
    assert out.problems == ["a0", "a1", "a2", "a3", "b0", "b1"]
    assert out.texts[4] == "b-text0"
    assert out.rewards.tolist() == [1.0, -1.0, 1.0, -1.0, 1.0, -1.0]
    assert out.correct.tolist() == [True, False, True, False, True, False]


def test_scores_are_dropped_unless_every_batch_has_them():
    out = concat_batches(list(two_batches(second_rewards=None)), PAD)
    assert out.rewards is None and out.correct is None


def test_a_single_batch_is_returned_as_is():
    a, _ = two_batches()
    assert concat_batches([a], PAD) is a


def test_sampler_scores_are_right_padded_with_zeros():
    a, b = two_batches()
    a.logp_old = torch.tensor([[-0.5, 0.0], [-0.25, -0.75], [-1.0, 0.0], [-2.0, 0.0]])
    a.entropy = a.logp_old.abs() + (a.logp_old != 0)  # 1 + |logp| on response tokens, 0 on padding
    b.logp_old = torch.tensor([[-0.125, -0.5, -1.5], [-3.0, 0.0, 0.0]])
    b.entropy = b.logp_old.abs() + (b.logp_old != 0)
    out = concat_batches([a, b], PAD)
    assert out.logp_old.tolist() == [[-0.5, 0.0, 0.0], [-0.25, -0.75, 0.0], [-1.0, 0.0, 0.0], [-2.0, 0.0, 0.0],
                                     [-0.125, -0.5, -1.5], [-3.0, 0.0, 0.0]]
    assert out.entropy[1].tolist() == [1.25, 1.75, 0.0] and torch.all(out.entropy[~out.response_mask] == 0)
    b.logp_old = None  # a batch without them: the trainer scores the whole batch
    assert concat_batches([a, b], PAD).logp_old is None
