"""How a response states its final answer, and the gold answer as a string.

A task says in its prompt how the answer must be given (the paper's prompts ask for
``\\boxed{...}``, docs/method.md section 2); its :class:`AnswerFormat` reads that answer back out.
The evaluator votes over extracted answers for maj@k, the defect analysis counts responses with
no answer in the format (``defect/no_<name>_share``), and the warm-start renders demonstrations
with it. A task without a format (``answer_format = None``) gets neither metric.

This module sits below tasks, models, rewards and analysis: it imports nothing from the package.
"""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable


@runtime_checkable
class AnswerFormat(Protocol):
    """Reads a final answer out of a response. ``name`` names the format in metric keys
    (``defect/no_<name>_share``)."""

    name: str

    def extract(self, text: str) -> str | None:
        """The stated final answer of ``text``, or None when it states none in this format."""
        ...

    def render(self, answer: str) -> str:
        """``answer`` stated in this format (a demonstration's completion)."""
        ...


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance, or None when there is none.

    A trailing ``\\boxed{`` cut off by the length limit (unbalanced) is passed over in favour of
    an earlier complete one. Only the braced form is recognised (``\\boxed 5`` is not).
    """
    marker = "\\boxed"
    end = len(text)
    while (start := text.rfind(marker, 0, end)) != -1:
        i = start + len(marker)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j]
        end = start
    return None


class BoxedAnswer:
    """The answer is the content of the last complete ``\\boxed{...}`` (:func:`extract_boxed`)."""

    name = "boxed"

    def extract(self, text: str) -> str | None:
        return extract_boxed(text)

    def render(self, answer: str) -> str:
        return f"\\boxed{{{answer}}}"

    def __repr__(self) -> str:
        return "BoxedAnswer()"


def normalize_gold(gold: str | float | int) -> str:
    """The gold answer as a string: integer-valued floats lose their ``.0`` (142.0 -> "142").

    Other floats use Python's shortest round-trip form (0.5 -> "0.5"); strings are stripped.
    """
    if isinstance(gold, bool):
        raise TypeError(f"gold must be str, int or float, got bool {gold!r}")
    if isinstance(gold, float):
        return str(int(gold)) if math.isfinite(gold) and gold.is_integer() else repr(gold)
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, str):
        return gold.strip()
    raise TypeError(f"gold must be str, int or float, got {type(gold).__name__} {gold!r}")
