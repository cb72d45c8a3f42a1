"""Problems from a parquet file in the verl schema (the benchmarks shipped with arXiv 2508.02260).

Columns (docs/method.md section 9): ``data_source`` (str), ``prompt`` (chat list of {role, content}),
``ability``, ``reward_model`` ({style, ground_truth}: a str, or a float such as 142.0 in AMC
2023), ``extra_info``. ``Problem.question`` is the content of the last user message as shipped
(it already ends with the boxed-answer instruction), ``Problem.messages`` the chat list, and
``Problem.answer`` the ground truth as a string (integer-valued floats lose their ``.0``).

A malformed row (no usable prompt or ground truth) is skipped and reported, never fatal.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rlvr_exp.answers import AnswerFormat, BoxedAnswer, normalize_gold
from rlvr_exp.tasks.base import Problem, report_skipped

REQUIRED_COLUMNS = ("prompt", "reward_model")
_READ_BATCH_ROWS = 1024


def load_verl_parquet(path: str, limit: int | None = None, key: str = "task.train_path") -> tuple[list[Problem], list[str]]:
    """Read at most ``limit`` problems (the first valid rows, in file order) from ``path``.

    Returns ``(problems, skipped)``: ``skipped`` holds one human-readable line per malformed row
    (row index, what is wrong, "skipped"). Raises FileNotFoundError when ``path`` is missing and
    ValueError when it is not a parquet file, lacks a required column or ``limit`` is negative;
    each message names ``path`` and the config ``key`` it was given by.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    file = _open(path, key)
    names = set(file.schema_arrow.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ValueError(
            f"{key}={path!r} lacks column(s) {missing} of the verl schema (has {sorted(names)}); point "
            f"{key} at a parquet with `prompt` and `reward_model.ground_truth`, or read other columns with "
            "task=files (task.train.question_field / answer_field)"
        )
    columns = [*REQUIRED_COLUMNS, *(["data_source"] if "data_source" in names else [])]
    problems: list[Problem] = []
    skipped: list[str] = []
    index = 0
    for batch in file.iter_batches(batch_size=_READ_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            if limit is not None and len(problems) >= limit:
                return problems, skipped
            problem, error = parse_row(row)
            if problem is None:
                skipped.append(f"row {index}: {error}; skipped")
            else:
                problems.append(problem)
            index += 1
    return problems, skipped


def parse_row(row: dict) -> tuple[Problem | None, str]:
    """One verl row -> (Problem, "") or (None, what is wrong with it)."""
    messages = row.get("prompt")  # the dict comes from pyarrow with every selected column
    if not isinstance(messages, list) or not messages:
        return None, f"prompt is {_describe(messages)}, expected a non-empty chat list"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            return None, f"prompt[{i}] is {_describe(msg)}, expected {{role, content}}"
    users = [m for m in messages if m["role"] == "user"]
    content = users[-1].get("content") if users else None
    if not isinstance(content, str) or not content.strip():
        return None, "prompt has no user message with non-empty text content"
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict):
        return None, f"reward_model is {_describe(reward_model)}, expected {{style, ground_truth}}"
    gold = reward_model.get("ground_truth")
    if gold is None or (isinstance(gold, float) and not math.isfinite(gold)):
        return None, f"reward_model.ground_truth is {_describe(gold)}"
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)):
        return None, f"reward_model.ground_truth is {_describe(gold)}, expected a str or number"
    answer = normalize_gold(gold)
    if not answer:
        return None, "reward_model.ground_truth is an empty string"
    problem = Problem(
        question=content,
        answer=answer,
        messages=tuple(dict(m) for m in messages),
        source=row.get("data_source") or "",
    )
    return problem, ""


class ParquetTask:
    """A benchmark (or training set) read from a verl-schema parquet file on :meth:`load`.

    ``limit`` keeps the first ``limit`` valid problems; ``key`` is the config key that gave
    ``path`` (named in errors). The constructor reads nothing; :meth:`check` looks for the file.
    """

    def __init__(self, path: str, limit: int | None = None, key: str = "task.train_path") -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"{key.replace('path', 'limit')} must be >= 0 or null, got {limit}")
        self.path, self.limit, self.key = path, limit, key

    def check(self) -> None:
        """Raise FileNotFoundError, naming the key, when the file is absent."""
        _resolve(self.path, self.key)

    def load(self) -> list[Problem]:
        """Read the file; log a warning naming every skipped row."""
        return report_skipped(self.path, *load_verl_parquet(self.path, self.limit, self.key))


def _resolve(path: str, key: str) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"{key}={path!r}: no such file (resolved to {resolved.resolve()}); point {key} "
            f"at a verl-schema parquet (columns prompt, reward_model.ground_truth)"
        )
    return resolved


def _open(path: str, key: str) -> pq.ParquetFile:
    resolved = _resolve(path, key)
    try:
        return pq.ParquetFile(resolved)
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"{key}={path!r} is not a readable parquet file ({err}); task=parquet reads verl-schema "
                         "parquet, task=files also reads .jsonl and .csv") from err


def _describe(value: object) -> str:
    if value is None:
        return "missing (null)"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


class VerlParquetTask:
    """A train/validation task from verl-schema parquet files (for example a local copy of
    ``RUC-AIBOX/STILL-3-RL-90K`` for training and MATH-500 for validation). Files are read on
    first use, never in the constructor. The problems already carry their boxed-answer
    instruction, so ``model.chat_template=true`` sends their chat list as shipped. Every file
    must exist when the task is built (before any model loads).

    ``val_path`` is one file (the set ``val``), a list of files (each named by its file stem:
    ``aime24_x8``) or a mapping name -> file; ``val_limit`` applies to each set."""

    answer_format: AnswerFormat | None = BoxedAnswer()  # the shipped prompts ask for \boxed{}

    def __init__(
        self, train_path: str, val_path: str | list[str] | dict[str, str],
        train_limit: int | None = None, val_limit: int | None = None,
    ) -> None:
        named = _name_val_paths(val_path)
        self.train = ParquetTask(train_path, train_limit, "task.train_path")
        single = isinstance(val_path, str)
        self.val = {name: ParquetTask(path, val_limit, "task.val_path" if single else f"task.val_path[{name}]")
                    for name, path in named.items()}
        for task in (self.train, *self.val.values()):
            task.check()
        self._train: list[Problem] | None = None
        self._val: dict[str, list[Problem]] | None = None

    def train_problems(self) -> list[Problem]:
        if self._train is None:
            self._train = self.train.load()
        return self._train

    def val_sets(self) -> dict[str, list[Problem]]:
        if self._val is None:
            self._val = {name: task.load() for name, task in self.val.items()}
        return self._val

    def val_problems(self) -> list[Problem]:
        return [p for problems in self.val_sets().values() for p in problems]


def _name_val_paths(val_path: object) -> dict[str, str]:
    """``val_path`` as {set name: file}; a name is what metrics log under (``val/<name>/...``)."""
    if isinstance(val_path, str):
        return {"val": val_path}
    if isinstance(val_path, Mapping):
        named = {str(k): v for k, v in val_path.items()}
    elif isinstance(val_path, (list, tuple)):
        stems = [Path(str(v)).stem for v in val_path]
        if len(set(stems)) != len(stems):
            raise ValueError(f"task.val_path files must have distinct names, got {stems}; give them names: "
                             "task.val_path='{aime24: a/test.parquet, math500: b/test.parquet}'")
        named = dict(zip(stems, val_path))
    else:
        raise ValueError(f"task.val_path must be a file, a list of files or a mapping name -> file, got {val_path!r}")
    if not named:
        raise ValueError("task.val_path is empty; give at least one validation file")
    bad = [name for name, path in named.items() if not isinstance(path, str) or not re.fullmatch(r"[\w.-]+", name)]
    if bad:
        raise ValueError(f"task.val_path: sets {bad} need a file path each and a name of letters, digits, '_', '.', '-'")
    return named
