"""A verifiable problem and the task interface that serves train and validation problems."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rlvr_exp.answers import AnswerFormat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """question: the user's text; answer: the gold answer as a string (what the reward verifies
    the response against); messages: the chat list as shipped, when the source has one; solution:
    a worked solution ending in the answer in the task's format, when the task can write one (the
    warm-start's demonstration; without it the demonstration is the bare formatted answer)."""

    question: str
    answer: str
    messages: tuple[dict, ...] | None = None
    source: str = ""
    solution: str | None = None


@runtime_checkable
class Task(Protocol):
    """Serves problems. ``train_problems`` and ``val_problems`` never overlap. ``val_sets`` names
    the validation sets (one ``{"val": val_problems()}`` for a single set; the paper validates on
    several benchmarks at once). ``answer_format`` is how its prompts ask responses to state the
    final answer (maj@k, the no-answer defect and warm-start demonstrations use it), or None when
    responses state no extractable answer."""

    answer_format: AnswerFormat | None

    def train_problems(self) -> list[Problem]: ...

    def val_problems(self) -> list[Problem]: ...

    def val_sets(self) -> dict[str, list[Problem]]: ...


def report_skipped(where: str, problems: list[Problem], skipped: list[str]) -> list[Problem]:
    """Log one warning per malformed row (``skipped``: one line each, by row index) and a count,
    naming the source ``where``; returns ``problems`` unchanged."""
    for line in skipped:
        logger.warning("%s: %s", where, line)
    if skipped:
        logger.warning("%s: kept %d problems, skipped %d bad rows", where, len(problems), len(skipped))
    return problems


class GeneratedTask:
    """A task generated in code: distinct problems drawn by ``_make(rng)`` from ``random.Random(seed)``;
    the first ``num_val`` are held out for validation, the next ``num_train`` train. Subclasses set
    ``num_train``, ``num_val``, ``seed`` and ``_cache = None`` and define ``_make``."""

    num_train: int
    num_val: int
    seed: int
    _cache: tuple[list[Problem], list[Problem]] | None

    def _make(self, rng: random.Random) -> Problem:
        raise NotImplementedError

    def _split(self) -> tuple[list[Problem], list[Problem]]:
        if self._cache is None:
            rng, seen, out = random.Random(self.seed), set(), []
            while len(out) < self.num_train + self.num_val:
                p = self._make(rng)
                if p.question not in seen:
                    seen.add(p.question)
                    out.append(p)
            self._cache = (out[self.num_val :], out[: self.num_val])
        return self._cache

    def train_problems(self) -> list[Problem]:
        return self._split()[0]

    def val_problems(self) -> list[Problem]:
        return self._split()[1]

    def val_sets(self) -> dict[str, list[Problem]]:
        return {"val": self.val_problems()}
