"""The verl-parquet loader on the real shipped benchmarks, on a malformed file, and the real
verifier on real gold answers."""
from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlvr_exp.rewards.math_verify import MathVerifyReward
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.parquet import ParquetTask, load_verl_parquet

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
ROWS = {"aime24_x8": 240, "aime25_x8": 240, "amc23": 83, "math500": 500}


def bench(name: str) -> str:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark folder {BENCHMARKS} is absent (shared reference data, not in repo)")
    return str(BENCHMARKS / f"{name}.parquet")


@pytest.mark.parametrize(("name", "rows"), sorted(ROWS.items()))
def test_real_benchmarks_load_completely(name: str, rows: int) -> None:
    problems, skipped = load_verl_parquet(bench(name))
    assert skipped == []
    assert len(problems) == rows
    first = problems[0]
    assert isinstance(first, Problem) and first.answer and first.source
    assert first.messages is not None and first.messages[-1]["role"] == "user"
    assert first.question == first.messages[-1]["content"]
    assert first.question.rstrip().endswith("<| Assistant |>")  # shipped as is


def test_amc_float_gold_normalised() -> None:
    problems, _ = load_verl_parquet(bench("amc23"))
    assert problems[0].answer == "142"  # stored as the float 142.0
    assert all(isinstance(p.answer, str) and not p.answer.endswith(".0") for p in problems)


def test_limit_and_task_wrapper() -> None:
    path = bench("aime24_x8")
    task = ParquetTask(path, limit=5)
    assert len(task.load()) == 5
    assert load_verl_parquet(path, limit=0) == ([], [])


def _write_chat_parquet(path: Path, golds: list[object], prompts: list[object]) -> None:
    message = pa.struct([("content", pa.string()), ("role", pa.string())])
    table = pa.table(
        {
            "data_source": ["toy"] * len(golds),
            "prompt": pa.array(prompts, pa.list_(message)),
            "ability": ["math"] * len(golds),
            "reward_model": pa.array(
                [{"style": "rule", "ground_truth": g} for g in golds],
                pa.struct([("ground_truth", pa.float64()), ("style", pa.string())]),
            ),
        }
    )
    pq.write_table(table, path)


def test_malformed_rows_reported_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chat = [{"role": "user", "content": "What is 2+2?"}]
    path = tmp_path / "bad.parquet"
    _write_chat_parquet(path, golds=[4.0, None, 0.5, 7.0], prompts=[chat, chat, chat, None])
    problems, skipped = load_verl_parquet(str(path))
    assert [p.answer for p in problems] == ["4", "0.5"]
    assert len(skipped) == 2
    assert skipped[0].startswith("row 1:") and "ground_truth" in skipped[0]
    assert skipped[0].endswith("skipped")
    assert skipped[1].startswith("row 3:") and "prompt" in skipped[1]
    with caplog.at_level(logging.WARNING, logger="rlvr_exp.tasks.parquet"):
        assert len(ParquetTask(str(path)).load()) == 2
    assert "row 1:" in caplog.text and "skipped 2" in caplog.text


def test_missing_file_and_missing_column(tmp_path: Path) -> None:
    task = ParquetTask(str(tmp_path / "nope.parquet"))  # no I/O yet
    with pytest.raises(FileNotFoundError, match="task.train_path=.*nope.parquet.*no such file"):
        task.load()
    pq.write_table(pa.table({"prompt": ["x"]}), tmp_path / "no_gold.parquet")
    with pytest.raises(ValueError, match="reward_model"):
        load_verl_parquet(str(tmp_path / "no_gold.parquet"))


def test_real_golds_verify_against_themselves() -> None:
    golds: list[str] = []
    for name in ROWS:
        problems, _ = load_verl_parquet(bench(name), limit=40)
        golds += list(dict.fromkeys(p.answer for p in problems))[:3]
    assert "\\" in "".join(golds)  # some MATH-500 LaTeX answers are among them
    responses = [f"Thus the answer is \\boxed{{{g}}}." for g in golds]
    with MathVerifyReward(timeout_s=10.0) as reward:
        _, right = reward(responses, golds)
        _, wrong = reward(["Thus the answer is \\boxed{123457}." for _ in golds], golds)
    assert right.all(), [g for g, ok in zip(golds, right.tolist()) if not ok]
    assert not wrong.any()


def test_verl_task_serves_train_and_val_from_the_real_files():
    from rlvr_exp.tasks.parquet import VerlParquetTask

    folder = BENCHMARKS
    if not folder.is_dir():
        pytest.skip("../shared/data/benchmarks is absent")
    task = VerlParquetTask(str(folder / "amc23.parquet"), str(folder / "math500.parquet"), val_limit=10)
    assert len(task.train_problems()) == 83 and len(task.val_problems()) == 10
    assert task.train_problems() is task.train_problems()  # read once


def test_verl_task_validates_on_several_named_benchmarks():
    from rlvr_exp.tasks.parquet import VerlParquetTask

    train, a24, amc = bench("amc23"), bench("aime24_x8"), bench("amc23")
    listed = VerlParquetTask(train, [a24, bench("math500")], val_limit=7)
    sets = listed.val_sets()
    assert list(sets) == ["aime24_x8", "math500"] and [len(v) for v in sets.values()] == [7, 7]
    assert len(listed.val_problems()) == 14
    named = VerlParquetTask(train, {"aime24": a24, "amc": amc})
    assert {k: len(v) for k, v in named.val_sets().items()} == {"aime24": 240, "amc": 83}
    assert list(VerlParquetTask(train, a24).val_sets()) == ["val"]  # one file: the set "val"


@pytest.mark.parametrize(
    ("val_path", "message"),
    [([], "is empty"), (["a/test.parquet", "b/test.parquet"], "distinct names"),
     ({"a b": "x.parquet"}, "letters, digits"), ({"a": 3}, "file path"), (3, "a file, a list")],
)
def test_bad_val_path_is_refused_by_name(val_path, message):
    from rlvr_exp.tasks.parquet import VerlParquetTask

    with pytest.raises(ValueError, match=f"task.val_path.*{message}"):
        VerlParquetTask("train.parquet", val_path)


def _verl_file(path: Path, rows: int = 2) -> str:
    prompt = [[{"role": "user", "content": f"q{i}"}] for i in range(rows)]
    gold = [{"style": "rule", "ground_truth": str(i)} for i in range(rows)]
    pq.write_table(pa.table({"prompt": prompt, "reward_model": gold}), path)
    return str(path)


def test_missing_files_are_found_when_the_task_is_built_and_named_by_key(tmp_path: Path) -> None:
    from rlvr_exp.tasks.parquet import VerlParquetTask

    good = _verl_file(tmp_path / "good.parquet")
    with pytest.raises(FileNotFoundError, match=r"task\.train_path='.*absent\.parquet': no such file"):
        VerlParquetTask(str(tmp_path / "absent.parquet"), good)
    with pytest.raises(FileNotFoundError, match=r"task\.val_path='.*absent\.parquet'"):
        VerlParquetTask(good, str(tmp_path / "absent.parquet"))
    with pytest.raises(FileNotFoundError, match=r"task\.val_path\[math\]="):
        VerlParquetTask(good, {"ok": good, "math": str(tmp_path / "absent.parquet")})


def test_a_file_that_is_not_parquet_names_its_path_and_key(tmp_path: Path) -> None:
    from rlvr_exp.tasks.parquet import VerlParquetTask

    good = _verl_file(tmp_path / "good.parquet")
    text = tmp_path / "val.parquet"
    text.write_text('{"question": "1+1", "answer": "2"}\n')
    task = VerlParquetTask(good, str(text))
    with pytest.raises(ValueError, match=r"task\.val_path='.*val\.parquet' is not a readable parquet file"):
        task.val_sets()
    assert len(task.train_problems()) == 2


def test_missing_columns_name_the_key_and_the_columns_present(tmp_path: Path) -> None:
    from rlvr_exp.tasks.parquet import VerlParquetTask

    pq.write_table(pa.table({"question": ["x"], "answer": ["1"]}), tmp_path / "plain.parquet")
    task = VerlParquetTask(str(tmp_path / "plain.parquet"), _verl_file(tmp_path / "v.parquet"))
    lacks = r"task\.train_path=.*lacks column\(s\) \['prompt', 'reward_model'\].*'answer', 'question'"
    with pytest.raises(ValueError, match=lacks):
        task.train_problems()
