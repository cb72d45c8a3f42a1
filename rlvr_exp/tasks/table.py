"""A task whose problems come from tables (files or hub datasets, rlvr_exp/tasks/rows.py): one
training source and one or more named validation sources (``conf/task/files.yaml`` and the
dataset presets ``conf/task/{still3,dapo_math,math_lighteval,gsm8k,benchmarks}.yaml``)."""
from __future__ import annotations

import re
from collections.abc import Mapping

from rlvr_exp.answers import AnswerFormat, BoxedAnswer
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import resolve_template
from rlvr_exp.tasks.rows import RowSource


class TableTask:
    """``train``: the keyword arguments of one :class:`RowSource` (``path`` or ``hub``, fields,
    ``answer_format``, ...); ``val``: a mapping set name -> such arguments (each set logs as
    ``val/<name>/...``; one set named ``val`` logs as ``val/...``; a set given as null is left
    out, so a preset can drop an inherited one). ``prompt``: ``paper`` (the
    paper's instruction after the question, docs/method.md section 2), ``none`` (the question
    as is) or a template with ``{question}``; it applies to plain-text questions only, chat-list
    rows are used as shipped. Sources are checked (values, files exist) here; rows are read on
    first use. ``answer_format``: the paper's prompt and the shipped STILL-3 and benchmark prompts
    ask for ``\\boxed{}`` (DAPO-Math-17k's ask for "Answer:"; its maj@k still reads boxed answers)."""

    answer_format: AnswerFormat | None = BoxedAnswer()

    def __init__(self, train: Mapping, val: Mapping[str, Mapping], prompt: str = "paper") -> None:
        self.template = resolve_template(prompt, "task.prompt")
        self.train = _source("task.train", train)
        if isinstance(val, Mapping):
            val = {name: node for name, node in val.items() if node is not None}  # a preset drops a set with null
        if not isinstance(val, Mapping) or not val:
            raise ValueError("task.val must map a set name to a source, e.g. task.val.math500.path=math500.parquet")
        bad = [name for name in val if not re.fullmatch(r"[\w.-]+", str(name))]
        if bad:
            raise ValueError(f"task.val: set names {bad} must use letters, digits, '_', '.', '-'")
        self.val = {str(name): _source(f"task.val.{name}", node) for name, node in val.items()}
        self._train: list[Problem] | None = None
        self._val: dict[str, list[Problem]] | None = None

    def train_problems(self) -> list[Problem]:
        if self._train is None:
            self._train = self.train.load(self.template)
            if not self._train:
                raise ValueError(f"task.train: {self.train.where} gave no usable problem (see the warnings above)")
        return self._train

    def val_sets(self) -> dict[str, list[Problem]]:
        if self._val is None:
            self._val = {name: source.load(self.template) for name, source in self.val.items()}
        return self._val

    def val_problems(self) -> list[Problem]:
        return [p for problems in self.val_sets().values() for p in problems]


def _source(key: str, node: object) -> RowSource:
    if not isinstance(node, Mapping):
        raise ValueError(f"{key} must be a mapping (path or hub, question_field, answer_field, ...), got {node!r}")
    try:
        return RowSource(key, **node)
    except TypeError as err:  # an unknown key
        raise ValueError(f"{key}: {err}; known keys are those of RowSource (path, hub, split, subset, "
                         "question_field, answer_field, answer_format, limit, revision)") from err
