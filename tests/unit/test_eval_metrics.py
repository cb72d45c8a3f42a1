"""avg@k, maj@k and pass@k against hand-computed values and a brute-force subset count."""
from __future__ import annotations

import itertools
import math
import random

import pytest

from rlvr_exp.eval.metrics import avg_at_k, maj_at_k, majority_index, pass_at_k, summarize


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (4, 1, 1, 0.25),  # pass@1 = c/n
        (8, 3, 1, 3 / 8),
        (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
        (8, 2, 4, 1 - 15 / 70),  # 1 - C(6,4)/C(8,4)
        (4, 0, 2, 0.0),
        (4, 4, 4, 1.0),
        (4, 3, 2, 1.0),  # n - c < k: every pair holds a correct sample
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_subset_count() -> None:
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 10)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        labels = [True] * c + [False] * (n - c)
        subsets = list(itertools.combinations(labels, k))
        brute = sum(any(s) for s in subsets) / len(subsets)
        assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_stable_for_large_n() -> None:
    # math.comb is exact; the product form must agree without overflowing floats.
    n, c, k = 1000, 7, 100
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 1, 5), (4, 1, 0), (4, 5, 1), (4, -1, 1)])
def test_pass_at_k_rejects_bad_arguments(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k() -> None:
    rows = [[True, False, False, False], [True, True, False, False]]
    assert avg_at_k(rows) == pytest.approx(0.375)
    assert avg_at_k([[True], [False, True]]) == pytest.approx(0.75)  # each problem weighs the same
    with pytest.raises(ValueError, match="no samples"):
        avg_at_k([[True], []])
    with pytest.raises(ValueError, match="no problems"):
        avg_at_k([])


def test_majority_index_ties_and_none() -> None:
    assert majority_index(["1", "2", "2", "1"]) == 0  # tie: first occurrence wins
    assert majority_index([None, "3", None, None]) == 1  # None never votes
    assert majority_index(["5", "7", "7"]) == 1
    assert majority_index([None, None]) is None


def test_maj_at_k() -> None:
    answers = [
        ["4", "4", "5", None],  # vote 4, sample 0 correct
        ["1", "2", "2", "1"],  # tie -> "1" (first), sample 0 wrong
        [None, None, None, None],  # no answer: wrong
        [None, "9", "8", "8"],  # vote 8, first at 2, correct
    ]
    correct = [
        [True, True, False, False],
        [False, True, True, False],
        [False, False, False, False],
        [False, False, True, True],
    ]
    assert maj_at_k(answers, correct) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 answers but 1 verdicts"):
        maj_at_k([["1", "2"]], [[True]])


def test_summarize() -> None:
    correct = [[True, False, False, False], [True, True, False, False]]
    answers = [["4", "3", "3", None], ["7", "7", "2", "1"]]
    out = summarize(correct, answers, ks=[1, 2, 8])
    assert set(out) == {"avg@4", "maj@4", "pass@1", "pass@2"}  # k=8 > n=4 is left out
    assert out["avg@4"] == pytest.approx(0.375)
    assert out["maj@4"] == pytest.approx(0.5)  # problem 0 votes "3" (wrong), problem 1 "7" (right)
    assert out["pass@1"] == pytest.approx(0.375)
    assert out["pass@2"] == pytest.approx((0.5 + (1 - 1 / 6)) / 2)  # 1 - C(2,2)/C(4,2) = 5/6
    with pytest.raises(ValueError, match="same number of samples"):
        summarize([[True], [True, False]], [["1"], ["1", "2"]], ks=[1])
    with pytest.raises(ValueError, match=">= 1"):
        summarize(correct, answers, ks=[0])
