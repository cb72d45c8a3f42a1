"""Majority voting by equivalence: equal answers (by math-verify) are one vote, spelled as first seen."""
from __future__ import annotations

import pytest

from rlvr_exp.answers import BoxedAnswer
from rlvr_exp.eval.metrics import maj_at_k
from rlvr_exp.eval.voting import canonical_answers, same_by_reward
from rlvr_exp.rewards.math_verify import MathVerifyReward

HALF = "\\frac{1}{2}"


def test_groups_by_the_judge_and_keeps_the_first_spelling():
    calls = []

    def same(pairs):  # a judge double: "a" ~ "A" ~ "aa"
        calls.append(pairs)
        return [x[0].lower() == y[0].lower() for x, y in pairs]

    rows = [["b", "A", None, "a", "aa", "b"], [None, None], ["x"]]
    assert canonical_answers(rows, same) == [["b", "A", None, "A", "A", "b"], [None, None], ["x"]]
    # one call; distinct strings of problem 0 in first-seen order b, A, a, aa: 6 pairs
    assert len(calls) == 1 and len(calls[0]) == 6


def test_max_distinct_leaves_rare_answers_to_exact_strings():
    rows = [["a", "a", "A", "b"]]
    # only the 2 most frequent ("a" twice, then "A" seen before "b") are compared
    out = canonical_answers(rows, lambda pairs: [x.lower() == y.lower() for x, y in pairs], max_distinct=2)
    assert out == [["a", "a", "a", "b"]]
    with pytest.raises(ValueError, match="max_distinct"):
        canonical_answers(rows, lambda pairs: [], max_distinct=1)


def test_math_verify_makes_one_vote_of_half_and_frac():
    answers = [["3", "3", "1/2", HALF, HALF]]
    correct = [[False, False, True, True, True]]
    assert maj_at_k(answers, correct) == 0.0  # exact strings: "3" and HALF tie 2-2, "3" came first
    with MathVerifyReward(timeout_s=10.0) as reward:
        merged = canonical_answers(answers, same_by_reward(reward, BoxedAnswer().render))
    assert merged == [["3", "3", "1/2", "1/2", "1/2"]]
    assert maj_at_k(merged, correct) == 1.0
