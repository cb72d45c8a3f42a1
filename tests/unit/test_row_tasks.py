"""Table loaders (rlvr_exp/tasks/rows.py, table.py) on JSONL, JSON, CSV and parquet files made
here, the hub path through a stand-in ``datasets.load_dataset``, and the paper's prompt."""
from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr_exp.tasks.prompts import PAPER_TEMPLATE
from rlvr_exp.tasks.rows import RowSource, read_answer
from rlvr_exp.tasks.table import TableTask

PAPER_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
ROWS = [{"question": "What is 2+3?", "answer": "5"}, {"question": "Half of 9?", "answer": 4.5},
        {"question": "Ten times ten?", "answer": 100.0}]


def write(path: Path, rows: list[dict]) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_each_file_format_loads_with_the_paper_prompt(tmp_path: Path, suffix: str) -> None:
    rows = ROWS if suffix != ".parquet" else [{**r, "answer": str(r["answer"])} for r in ROWS]
    path = write(tmp_path / f"train{suffix}", rows)
    problems = RowSource("task.train", path=path).load(PAPER_TEMPLATE)
    assert [p.question for p in problems] == [r["question"] + PAPER_SUFFIX for r in ROWS]
    expected = ["5", "4.5", "100"] if suffix in (".jsonl", ".json") else ["5", "4.5", "100.0"]
    assert [p.answer for p in problems] == expected  # JSON numbers: 100.0 -> "100"; CSV/parquet text stays
    assert all(p.messages is None for p in problems)


def test_configurable_fields_dotted_paths_and_answer_formats(tmp_path: Path) -> None:
    rows = [{"problem": "Find x.", "meta": {"solution": "So $x = \\boxed{\\frac{1}{2}}$."}},
            {"problem": "Find y.", "meta": {"solution": "no box here"}}]
    path = write(tmp_path / "math.jsonl", rows)
    source = RowSource("task.train", path=path, question_field="problem", answer_field="meta.solution",
                       answer_format="boxed")
    problems = source.load(None)
    assert [(p.question, p.answer) for p in problems] == [("Find x.", "\\frac{1}{2}")]


def test_gsm8k_answer_after_hashes() -> None:
    assert read_answer("Natalia sold 48/2 = 24 clips.\n#### 1,072", "gsm8k") == ("1072", "")
    assert read_answer("no marker", "gsm8k")[0] is None
    assert read_answer("\\boxed{3} then \\boxed{7}", "boxed") == ("7", "")
    assert read_answer(142.0, "plain") == ("142", "")


def test_chat_rows_are_used_as_shipped(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1? Answer in \\boxed{}."}]
    rows = [{"prompt": chat, "reward_model": {"style": "rule", "ground_truth": "2"}}]
    path = write(tmp_path / "verl.parquet", rows)
    source = RowSource("task.val.x", path=path, question_field="prompt", answer_field="reward_model.ground_truth")
    (problem,) = source.load(PAPER_TEMPLATE)
    assert problem.messages == tuple(chat) and problem.question == chat[-1]["content"]  # no template added
    assert problem.answer == "2"


def test_bad_rows_are_skipped_and_reported_by_index(tmp_path: Path, caplog) -> None:
    rows = [{"question": "ok?", "answer": "1"}, {"question": "", "answer": "2"}, {"question": "no gold", "answer": None},
            {"question": ["not", "chat"], "answer": "3"}, {"question": "fine", "answer": "4"}]
    path = write(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level("WARNING"):
        problems = RowSource("task.train", path=path).load(None)
    assert [p.answer for p in problems] == ["1", "4"]
    assert "row 1: question is str ''" in caplog.text and "row 2: answer is missing" in caplog.text
    assert "row 3: question [0] is str 'not'" in caplog.text and "skipped 3 bad rows" in caplog.text


def test_missing_fields_name_the_file_and_the_fields_it_has(tmp_path: Path) -> None:
    path = write(tmp_path / "other.csv", [{"problem": "x", "solution": "y"}])
    says = (r"other\.csv lacks field\(s\) \['question', 'answer'\] \(has \['problem', 'solution'\]\); "
            r"set task\.train\.question_field")
    with pytest.raises(ValueError, match=says):
        RowSource("task.train", path=path).load(None)


def test_file_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"task\.val\.aime\.path='.*nope\.jsonl': no such file"):
        RowSource("task.val.aime", path=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match=r"task\.train\.path=.*suffix"):
        RowSource("task.train", path=str(tmp_path / "data.txt"))
    bad = tmp_path / "broken.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ValueError, match=r"task\.train\.path='.*broken\.parquet' could not be read as parquet"):
        RowSource("task.train", path=str(bad)).load(None)
    bad_json = tmp_path / "broken.jsonl"
    bad_json.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl' could not be read as jsonl: line 2 is not JSON"):
        RowSource("task.train", path=str(bad_json)).load(None)
    with pytest.raises(ValueError, match="exactly one of task.train.path"):
        RowSource("task.train")


def test_hub_source_goes_through_datasets_load_dataset(monkeypatch) -> None:
    calls = []

    def load_dataset(name, subset, split, revision):
        calls.append((name, subset, split, revision))
        return [{"question": "Janet has 3 apples...", "answer": "She has 3 + 2 = 5.\n#### 5"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    source = RowSource("task.train", hub="openai/gsm8k", subset="main", split="test", answer_format="gsm8k")
    (problem,) = source.load(PAPER_TEMPLATE)
    assert calls == [("openai/gsm8k", "main", "test", None)]
    assert problem.answer == "5" and problem.question.endswith(PAPER_SUFFIX)


def test_hub_source_without_datasets_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(ImportError, match=r"task\.train\.hub='x/y' needs the `datasets` package"):
        RowSource("task.train", hub="x/y").rows()


def test_table_task_serves_named_sets_and_checks_files_at_build(tmp_path: Path) -> None:
    train = write(tmp_path / "train.jsonl", ROWS)
    val = write(tmp_path / "val.csv", ROWS[:2])
    task = TableTask({"path": train}, {"small": {"path": val}}, prompt="none")
    assert [p.question for p in task.train_problems()] == [r["question"] for r in ROWS]
    assert {k: len(v) for k, v in task.val_sets().items()} == {"small": 2}
    with pytest.raises(FileNotFoundError, match=r"task\.val\.gone\.path"):
        TableTask({"path": train}, {"gone": {"path": str(tmp_path / "gone.jsonl")}})
    with pytest.raises(ValueError, match=r"task\.train: .*unexpected keyword.*colum"):
        TableTask({"path": train, "colum": "x"}, {"small": {"path": val}})
    with pytest.raises(ValueError, match=r"task\.prompt must be one of \['none', 'paper'\]"):
        TableTask({"path": train}, {"small": {"path": val}}, prompt="Solve it")
    custom = TableTask({"path": train}, {"small": {"path": val}}, prompt="Q: {question}\nA: \\boxed{}")
    assert custom.train_problems()[0].question == "Q: What is 2+3?\nA: \\boxed{}"


PRESETS = {
    "still3": ("RUC-AIBOX/STILL-3-RL-90K", "prompt", "reward_model.ground_truth", "plain"),
    "dapo_math": ("BytedTsinghua-SIA/DAPO-Math-17k", "prompt", "reward_model.ground_truth", "plain"),
    "math_lighteval": ("DigitalLearningGmbH/MATH-lighteval", "problem", "solution", "boxed"),
    "gsm8k": ("openai/gsm8k", "question", "answer", "gsm8k"),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dataset_presets_read_their_hub_dataset(name: str, monkeypatch) -> None:
    """Each preset builds with a stand-in hub (and the benchmark folder, when present) and asks
    ``datasets`` for its dataset with the right fields."""
    from tests.conftest import BENCHMARKS, compose

    hub, question, answer, fmt = PRESETS[name]
    cfg = compose([f"task={name}"]).task
    assert (cfg.train.hub, cfg.train.question_field, cfg.train.answer_field, cfg.train.get("answer_format", "plain")) == (
        hub, question, answer, fmt)
    if name != "gsm8k":
        if not BENCHMARKS.is_dir():
            pytest.skip(f"benchmark folder {BENCHMARKS} is absent")
        monkeypatch.setenv("RLVR_EXP_BENCHMARKS", str(BENCHMARKS))
        cfg = compose([f"task={name}"]).task
    row = {"prompt": [{"role": "user", "content": "1+1?"}], "reward_model": {"ground_truth": "2"},
           "problem": "1+1?", "solution": "\\boxed{2}", "question": "1+1?", "answer": "so\n#### 2"}
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: [row]))
    from hydra.utils import instantiate

    task = instantiate(cfg, _convert_="all")
    assert [p.answer for p in task.train_problems()] == ["2"]
    expected = {"still3": 4, "dapo_math": 4, "math_lighteval": 1, "gsm8k": 1}[name]
    assert len(task.val) == expected


def test_benchmarks_preset_reads_the_shared_files(monkeypatch, tmp_path: Path) -> None:
    from tests.conftest import BENCHMARKS, compose

    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark folder {BENCHMARKS} is absent")
    monkeypatch.setenv("RLVR_EXP_BENCHMARKS", str(BENCHMARKS))
    train = write(tmp_path / "t.jsonl", ROWS)
    from hydra.utils import instantiate

    task = instantiate(compose(["task=benchmarks", f"task.train.path={train}"]).task, _convert_="all")
    sizes = {k: len(v) for k, v in task.val_sets().items()}
    assert sizes == {"aime24": 240, "aime25": 240, "amc23": 83, "math500": 500}
    first = task.val_sets()["amc23"][0]
    assert first.answer == "142" and first.messages is not None  # shipped chat prompt, float gold normalised
    assert task.train_problems()[0].question.endswith(PAPER_SUFFIX)
