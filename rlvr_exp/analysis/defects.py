"""Defective responses: no boxed answer, degenerate repetition, truncation (arXiv 2508.02260,
instance-level analysis: defective output disappears during the rising stage; docs/method.md section 7).

Definitions, per response text y (the decoded response, special tokens skipped):
- no answer (``defect/no_<format>_share``, ``defect/no_boxed_share`` for the paper's tasks): the
  task's :class:`rlvr_exp.answers.AnswerFormat` extracts no answer (for the boxed format: no
  complete ``\\boxed{...}``). Not measured for a task without a format.
- degenerate repetition: the tail s = y[len(y) - m:], m = floor(f * len(y)) characters (the last
  ``tail_fraction`` f of the response), is periodic with a period p <= m / k, i.e.
  s[i] = s[i + p] for all i, so s consists of at least k = ``min_repeats`` copies of one p-character
  unit (partial copies at the cut are allowed), and m >= ``min_tail_chars``. This is
  tokenizer-free, so it means the same for the character-level tiny model and for LLM
  responses: ``\\boxed{111}`` is not repetitive (its tail ``{111}`` is too short and the closing
  brace breaks the period), while an LLM stuck in a loop until the length limit is.
- truncated: no end-of-sequence within the length limit (``batch.truncated``).

Shares are per response: (count, responses) pairs, which reduce exactly across ranks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.logging.meters import MeanMeter


@dataclass(frozen=True)
class RepetitionRule:
    """The degenerate-repetition test: a tail of ``tail_fraction`` of the text, at least
    ``min_tail_chars`` long, made of at least ``min_repeats`` copies of one unit. The config
    entry point (:class:`rlvr_exp.analysis.step.StepAnalysis`) validates the values."""

    tail_fraction: float = 0.5
    min_repeats: int = 3
    min_tail_chars: int = 8


def smallest_period(s: str, max_period: int) -> int | None:
    """The smallest p in [1, max_period] with s[i] = s[i + p] for all i, or None.

    Any such p makes u = s[:len(s) - max_period] occur at offset p (p + len(u) <= len(s)), so
    only the occurrences of u found by ``str.find`` (C speed) are verified: O(len(s)) in practice.
    """
    m = len(s)
    if max_period < 1 or m < 2:
        return None
    head = s[: m - max_period]
    p = s.find(head, 1)
    while p != -1 and p <= max_period:
        if s[p:] == s[: m - p]:
            return p
        p = s.find(head, p + 1)
    return None


def is_repetitive(text: str, rule: RepetitionRule) -> bool:
    """Whether ``text`` ends in degenerate repetition under ``rule`` (module docstring)."""
    m = math.floor(rule.tail_fraction * len(text))
    if m < rule.min_tail_chars:
        return False
    return smallest_period(text[len(text) - m :], m // rule.min_repeats) is not None


def defect_metrics(
    meter: MeanMeter, texts: list[str], truncated: torch.Tensor, rule: RepetitionRule,
    answer_format: AnswerFormat | None,
) -> None:
    """``defect/no_<format name>_share`` (with a format), ``defect/repetition_share`` and
    ``defect/truncated_share``."""
    n = float(len(texts))
    if answer_format is not None:
        missing = sum(answer_format.extract(t) is None for t in texts)
        meter.add(f"defect/no_{answer_format.name}_share", float(missing), n)
    meter.add("defect/repetition_share", float(sum(is_repetitive(t, rule) for t in texts)), n)
    meter.add("defect/truncated_share", float(truncated.sum()), float(truncated.numel()))
