"""Validation metrics over k sampled responses per problem: avg@k, maj@k and unbiased pass@k.

docs/method.md section 7. ``correct[p][i]`` says whether sample i of problem p was judged correct;
``answers[p][i]`` is its extracted final answer (the task's
:class:`rlvr_exp.answers.AnswerFormat`), None when it has none; with no format at all
(``answers=None``) there is no maj@k. Metric keys are un-namespaced (``avg@8``); the caller prefixes ``val/<benchmark>/``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Chen et al., "Evaluating Large Language Models Trained on Code", arXiv 2107.03374, section 2.1
    (the numerically stable product form): 1 - prod_{i=n-c+1}^{n} (1 - k / i).
    Exactly 1.0 when n - c < k (every k-subset holds a correct sample). Raises ValueError unless
    0 <= c <= n and 1 <= k <= n.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_k(correct: Sequence[Sequence[bool]]) -> float:
    """Mean over problems of the per-problem share of correct samples (avg@k).

    Problems may have different sample counts; each weighs the same. Raises ValueError on no
    problems or on a problem with no samples.
    """
    _check_nonempty(correct)
    return float(np.mean([np.mean(np.asarray(row, dtype=np.float64)) for row in correct]))


def majority_index(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample holding the most frequent non-None answer; None if all are None.

    Ties between answers go to the one that appears first. Answers are compared as exact strings.
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == best)


def maj_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> float:
    """Share of problems whose majority-voted answer is correct (maj@k).

    Per problem, vote over the non-None answers (:func:`majority_index`); the problem counts as
    correct when the first sample carrying the voted answer is correct. A problem with no answer
    at all counts as wrong.
    """
    _check_nonempty(correct)
    if len(answers) != len(correct):
        raise ValueError(f"got {len(answers)} answer rows but {len(correct)} correct rows")
    hits = []
    for p, (ans_row, ok_row) in enumerate(zip(answers, correct)):
        if len(ans_row) != len(ok_row):
            raise ValueError(f"problem {p}: {len(ans_row)} answers but {len(ok_row)} verdicts")
        idx = majority_index(ans_row)
        hits.append(idx is not None and bool(ok_row[idx]))
    return float(np.mean(hits))


def summarize(
    correct: Sequence[Sequence[bool]],
    answers: Sequence[Sequence[str | None]] | None,
    ks: Sequence[int],
) -> dict[str, float]:
    """``avg@n``, ``maj@n`` and ``pass@k`` (mean over problems) for each k in ``ks`` with k <= n.
    ``maj@n`` only when there are ``answers`` to vote over.

    n is the number of samples per problem and must be the same for every problem. Values of k
    above n are left out (pass@k is undefined there); k < 1 raises ValueError.
    """
    _check_nonempty(correct)
    sizes = {len(row) for row in correct}
    if len(sizes) != 1:
        raise ValueError(f"every problem needs the same number of samples, got {sorted(sizes)}")
    (n,) = sizes
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    out = {f"avg@{n}": avg_at_k(correct)}
    if answers is not None:
        out[f"maj@{n}"] = maj_at_k(answers, correct)
    for k in sorted(set(ks)):
        if k <= n:
            out[f"pass@{k}"] = float(np.mean([pass_at_k(n, int(sum(row)), k) for row in correct]))
    return out


def _check_nonempty(correct: Sequence[Sequence[bool]]) -> None:
    if len(correct) == 0:
        raise ValueError("no problems to score")
    for p, row in enumerate(correct):
        if len(row) == 0:
            raise ValueError(f"problem {p} has no samples")
