"""Problems from table rows: JSONL, CSV or parquet files, or a hub dataset through ``datasets``.

A :class:`RowSource` names where the rows are (``path`` or ``hub``), which field holds the
question and which the answer (dotted paths reach into nested columns:
``reward_model.ground_truth``), and how to read the answer (``answer_format``):

- ``plain``: the field is the answer (integer-valued floats lose their ``.0``);
- ``boxed``: the last ``\\boxed{...}`` of the field (MATH solutions);
- ``gsm8k``: the text after ``####`` (GSM8K), thousands separators removed.

A question that is a chat list of ``{role, content}`` (the verl files: the authors' benchmarks,
STILL-3-RL-90K) is used as shipped; a plain-text question goes through the task's prompt
template (docs/method.md section 2; :func:`rlvr_exp.tasks.prompts.apply_template`). A bad row
(no usable question or answer) is skipped and reported by index, never fatal.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rlvr_exp.answers import extract_boxed, normalize_gold
from rlvr_exp.tasks.base import Problem, report_skipped
from rlvr_exp.tasks.prompts import apply_template

ANSWER_FORMATS = ("plain", "boxed", "gsm8k")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class RowSource:
    """One table of problems. ``key`` is the config key it came from (``task.train``), named in
    every error. Exactly one of ``path`` and ``hub`` is set; ``split`` and ``subset`` apply to a
    hub dataset only. ``limit`` keeps the first ``limit`` valid problems. The constructor checks
    the values and that a file exists, and reads nothing."""

    def __init__(
        self, key: str, path: str | None = None, hub: str | None = None, split: str = "train",
        subset: str | None = None, question_field: str = "question", answer_field: str = "answer",
        answer_format: str = "plain", limit: int | None = None, revision: str | None = None,
    ) -> None:
        if (path is None) == (hub is None):
            raise ValueError(f"{key}: set exactly one of {key}.path (a local file) and {key}.hub (a dataset name)")
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"{key}.answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        if limit is not None and limit < 0:
            raise ValueError(f"{key}.limit must be >= 0 or null, got {limit}")
        if path is not None:
            file = Path(path).expanduser()
            if file.suffix not in FILE_SUFFIXES:
                raise ValueError(f"{key}.path={path!r}: the file type is read from its suffix, one of {FILE_SUFFIXES}")
            if not file.is_file():
                raise FileNotFoundError(f"{key}.path={path!r}: no such file (resolved to {file.resolve()})")
        self.key, self.path, self.hub, self.split, self.subset, self.revision = key, path, hub, split, subset, revision
        self.question_field, self.answer_field, self.answer_format = question_field, answer_field, answer_format
        self.limit = limit

    @property
    def where(self) -> str:
        return self.path if self.path is not None else f"hub dataset {self.hub} ({self.subset or 'default'}/{self.split})"

    def rows(self) -> list[dict]:
        """The raw rows, in file order."""
        if self.hub is not None:
            return load_hub_rows(self.hub, self.split, self.subset, self.revision, self.key)
        return read_file_rows(self.path, self.key)

    def load(self, template: str | None) -> list[Problem]:
        """Read, convert and report: a warning names every skipped row."""
        rows = self.rows()
        if rows:
            self._check_fields(rows[0])
        problems, skipped = rows_to_problems(
            rows, self.question_field, self.answer_field, self.answer_format, template, self.limit, self.hub or "")
        return report_skipped(self.where, problems, skipped)

    def _check_fields(self, row: dict) -> None:
        missing = [f for f in (self.question_field, self.answer_field) if not _has_field(row, f)]
        if missing:
            raise ValueError(
                f"{self.where} lacks field(s) {missing} (has {sorted(row)}); set {self.key}.question_field and "
                f"{self.key}.answer_field to its columns (dotted paths reach into nested ones)")


def read_file_rows(path: str, key: str) -> list[dict]:
    """Rows of a .jsonl (one object a line; .json: a list of objects), .csv or .parquet file.
    Errors name the file and ``key``."""
    file = Path(path).expanduser()
    try:
        if file.suffix == ".parquet":
            return pq.read_table(file).to_pylist()
        if file.suffix == ".csv":
            with file.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        text = file.read_text(encoding="utf-8")
        if file.suffix == ".json":
            rows = json.loads(text)
            if not isinstance(rows, list):
                raise ValueError("a .json file must hold a list of objects (or use .jsonl)")
            return rows
        return [_json_line(line, i) for i, line in enumerate(text.splitlines()) if line.strip()]
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{key}.path={path!r}: no such file") from err
    except (pa.ArrowException, ValueError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{key}.path={path!r} could not be read as {file.suffix[1:]}: {err}") from err


def _json_line(line: str, index: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"line {index + 1} is not JSON ({err.msg})") from err
    if not isinstance(row, dict):
        raise ValueError(f"line {index + 1} is {type(row).__name__}, expected an object")
    return row


def load_hub_rows(name: str, split: str, subset: str | None, revision: str | None, key: str) -> list[dict]:
    """A hub dataset's split as rows, through ``datasets`` (imported here: optional)."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(f"{key}.hub={name!r} needs the `datasets` package: pip install datasets "
                          f"(or download the split and set {key}.path)") from err
    table = datasets.load_dataset(name, subset, split=split, revision=revision)
    return list(table)


def rows_to_problems(
    rows: Iterable[dict], question_field: str, answer_field: str, answer_format: str,
    template: str | None, limit: int | None = None, source: str = "",
) -> tuple[list[Problem], list[str]]:
    """Rows -> (problems, one line per skipped row). ``template`` (with ``{question}``) applies
    to plain-text questions; chat-list questions are kept as shipped."""
    problems: list[Problem] = []
    skipped: list[str] = []
    for index, row in enumerate(rows):
        if limit is not None and len(problems) >= limit:
            break
        problem, error = row_to_problem(row, question_field, answer_field, answer_format, template, source)
        if problem is None:
            skipped.append(f"row {index}: {error}; skipped")
        else:
            problems.append(problem)
    return problems, skipped


def row_to_problem(
    row: dict, question_field: str, answer_field: str, answer_format: str, template: str | None, source: str,
) -> tuple[Problem | None, str]:
    answer, error = read_answer(_field(row, answer_field), answer_format)
    if answer is None:
        return None, f"{answer_field} {error}"
    question = _field(row, question_field)
    source = str(row.get("data_source") or source)
    if isinstance(question, list):
        messages, error = _chat(question)
        if messages is None:
            return None, f"{question_field} {error}"
        user = [m for m in messages if m["role"] == "user"][-1]["content"]
        return Problem(question=user, answer=answer, messages=messages, source=source), ""
    if not isinstance(question, str) or not question.strip():
        return None, f"{question_field} is {_describe(question)}, expected non-empty text or a chat list"
    return Problem(question=apply_template(question.strip(), template), answer=answer, source=source), ""


def read_answer(value: object, answer_format: str) -> tuple[str | None, str]:
    """The gold answer of one row, or (None, what is wrong)."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return None, f"is {_describe(value)}"
    if not isinstance(value, (str, int, float)):
        return None, f"is {_describe(value)}, expected text or a number"
    if answer_format == "boxed":
        found = extract_boxed(str(value))
        return (found.strip(), "") if found and found.strip() else (None, "has no \\boxed{...} answer")
    if answer_format == "gsm8k":
        text = str(value)
        if "####" not in text:
            return None, "has no '#### answer' line"
        found = text.rsplit("####", 1)[1].strip().replace(",", "")
        return (found, "") if found else (None, "has an empty '####' answer")
    answer = normalize_gold(value)
    return (answer, "") if answer else (None, "is empty")


def _chat(value: list) -> tuple[tuple[dict, ...] | None, str]:
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or not isinstance(msg.get("content"), str):
            return None, f"[{i}] is {_describe(msg)}, expected {{role, content}}"
    users = [m for m in value if m["role"] == "user"]
    if not users or not users[-1]["content"].strip():
        return None, "has no user message with non-empty text"
    return tuple(dict(m) for m in value), ""


def _field(row: dict, dotted: str) -> object:
    value: object = row
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _has_field(row: dict, dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if head not in row:
        return False
    return not rest or not isinstance(row[head], dict) or _has_field(row[head], rest)


def _describe(value: object) -> str:
    if value is None:
        return "missing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"
