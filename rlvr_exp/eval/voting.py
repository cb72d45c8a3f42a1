"""Majority voting by mathematical equivalence (docs/method.md section 7, maj@k).

Before the vote, each problem's extracted answers are grouped: two answers are one vote when
math-verify judges them equal (``1/2`` and ``\\frac{1}{2}``, ``0.5`` and ``\\frac{1}{2}``), and
every answer of a group is replaced by the group's first-seen spelling, so that the exact-string
vote of :func:`rlvr_exp.eval.metrics.maj_at_k` counts equivalent answers together.

Fallbacks (exact strings): answers that math-verify cannot parse or times out on are judged not
equal to anything else, so they vote only with identical strings; when a problem has more than
``max_distinct`` distinct strings, only the ``max_distinct`` most frequent are compared and the rest
vote by exact string (the comparisons grow as the square of the distinct answers).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from rlvr_exp.rewards.base import Reward

#: judges a batch of (answer, answer) pairs; True where the two are mathematically equal
SameFn = Callable[[list[tuple[str, str]]], list[bool]]


def same_by_reward(reward_fn: Reward, render: Callable[[str], str]) -> SameFn:
    """Equivalence through the run's math-verify reward (its worker pool and timeouts): ``a`` is
    scored as the response ``render(a)`` (the task's answer format, ``\\boxed{a}``) against the
    gold ``b``. A timeout or parse failure counts as not equal (the exact-string fallback)."""

    def same(pairs: list[tuple[str, str]]) -> list[bool]:
        _, correct = reward_fn([render(a) for a, _ in pairs], [b for _, b in pairs])
        return correct.tolist()

    return same


def _find(parent: dict[str, str], a: str) -> str:
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


def canonical_answers(
    answers: Sequence[Sequence[str | None]], same: SameFn, max_distinct: int = 16,
) -> list[list[str | None]]:
    """``answers[p][i]`` with each answer replaced by the first-seen spelling of its equivalence
    group within problem p (None stays None). One ``same`` call for all problems."""
    if max_distinct < 2:
        raise ValueError(f"max_distinct must be >= 2, got {max_distinct}")
    distinct: list[list[str]] = []
    pairs: list[tuple[int, str, str]] = []  # (problem, a, b)
    for row in answers:
        counts = Counter(a for a in row if a is not None)
        first = {a: i for i, a in reversed(list(enumerate(row))) if a is not None}
        keep = sorted(counts, key=lambda a: (-counts[a], first[a]))[:max_distinct]
        keep.sort(key=first.__getitem__)  # first-seen order: the group's spelling is its first
        distinct.append(keep)
        p = len(distinct) - 1
        pairs += [(p, a, b) for i, a in enumerate(keep) for b in keep[i + 1:]]
    verdicts = same([(a, b) for _, a, b in pairs]) if pairs else []
    parents: list[dict[str, str]] = [{a: a for a in keep} for keep in distinct]
    for (p, a, b), equal in zip(pairs, verdicts):
        if equal:
            ra, rb = _find(parents[p], a), _find(parents[p], b)
            if ra != rb:  # the root seen first stays the spelling
                first, second = sorted((ra, rb), key=distinct[p].index)
                parents[p][second] = first
    return [[a if a is None or a not in parents[p] else _find(parents[p], a) for a in row]
            for p, row in enumerate(answers)]
