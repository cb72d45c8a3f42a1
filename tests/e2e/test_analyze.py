"""End to end: `python -m rlvr_exp.analyze` on a real (short) training run.

One 30-step run per module, through the real CLI in a subprocess, with a warm-start capped at
50 steps so that a cold model cache costs seconds (the policy learns little: these tests check
files and structure, not learning)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rlvr_exp.analyze import main
from rlvr_exp.stages.detector import detect_offline_file

REPO = Path(__file__).resolve().parents[2]
PNGS = ("accuracy_entropy.png", "entropy_pos_neg.png", "entropy_by_position.png", "logppl_by_correctness.png",
        "defects.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    return {**out, "WANDB_SILENT": "true", **extra}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model_cache) -> Path:
    root = tmp_path_factory.mktemp("analyze")
    run = root / "run"
    cmd = [sys.executable, "-m", "rlvr_exp.train", "trainer.steps=30", "trainer.val_every=10",
           "trainer.dump_tokens_every=5", "trainer.checkpoint_every=30", "logger.mode=offline",
           "logger.progress_bar=false", "model.warmstart.max_steps=50", f"model.cache_dir={model_cache}",
           # small and single-threaded: seconds on a shared 2-core machine (threads oversubscribe it)
           "task.max_operand=9", "task.num_train=84", "task.num_val=16", "trainer.prompts_per_step=8",
           "trainer.prompts_per_minibatch=4", "trainer.samples_per_prompt=4", "trainer.num_threads=1",
           f"hydra.run.dir={run}"]
    done = subprocess.run(cmd, cwd=REPO, env=env(WANDB_MODE="offline"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def analyze_cli(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlvr_exp.analyze", *args], cwd=REPO, env=env(**extra_env),
                          capture_output=True, text=True, timeout=120)


def test_report_and_plots(run_dir):
    done = analyze_cli(str(run_dir), "--no-wandb")
    assert done.returncode == 0, done.stderr[-3000:]
    out = run_dir / "analysis"
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    text = (out / "report.md").read_text()
    for heading in ("## (a) Where does the rising stage end?",
                    "## (b) Does entropy fall more on negative than on positive samples in the rising stage?",
                    "## (c) How do entropy and its change depend on position and perplexity in the plateau?",
                    "## High-entropy tokens per stage"):
        assert heading in text
    # 30 steps < the detector's min_steps (50): no plateau can be declared, so the answer is fixed
    assert detect_offline_file(run_dir / "metrics.jsonl") is None
    assert "**No plateau detected within 30 steps**" in text and "The rising stage ends" not in text
    assert re.search(r"\*\*(Yes|No)[^*]*\*\* \(batch metrics\): negative samples [0-9.]+ -> [0-9.]+ nats", text)
    assert "| rank | token | count | share of high-entropy tokens | mean entropy (nats) |" in text
    assert "| 1 | `'" in text  # decoded with the checkpoint's tokenizer, not shown as ids
    assert "## (d) Where does the update land?" in text and "| 0.0-0.2 | " in text  # delta_logp tables
    assert re.search(r"\d rising dump steps \(\d+-\d+\), \d+ tokens\. Mean \|Δ\| [0-9.]+", text)
    assert re.search(r"fixed probe set, change from capture to step 30; captured at step 1(-\d)?; \d+ negative "
                     r"responses from \d+ prompts", text), text
    assert "[95% CI " in text
    csv_lines = (out / "high_entropy_tokens.csv").read_text().splitlines()
    assert csv_lines[0] == "stage,rank,token_id,token,count,share,mean_entropy" and len(csv_lines) > 1


def test_plots_go_to_the_offline_wandb_run(run_dir):
    before = {p for p in (run_dir / "wandb").rglob("*")}
    done = analyze_cli(str(run_dir), WANDB_MODE="offline")  # --wandb is on by default: wandb/ exists
    assert done.returncode == 0, done.stderr[-3000:]
    new = {p for p in (run_dir / "wandb").rglob("*.png")} - before
    assert any("analysis" in p.parts and p.name.startswith("accuracy_entropy") for p in new), sorted(new)


def test_not_a_run_folder_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "no metrics.jsonl" in err and "tokens/step_" in err


def test_run_without_token_dumps_exits_2(run_dir, tmp_path, capsys):
    copy = shutil.copytree(run_dir, tmp_path / "run", ignore=shutil.ignore_patterns("wandb", "analysis"))
    shutil.rmtree(copy / "tokens")
    assert main([str(copy), "--no-wandb"]) == 2
    err = capsys.readouterr().err
    assert str(copy) in err and "no per-token records" in err and "trainer.dump_tokens_every>0" in err
    assert not (copy / "analysis").exists()  # fails before writing anything


def test_delta_logp_is_the_update_shift_and_old_records_still_read(run_dir, tmp_path):
    tokens = pq.read_table(sorted((run_dir / "tokens").glob("step_*.parquet"))[0])
    delta = tokens.column("delta_logp").to_numpy()
    assert tokens.column("delta_logp").null_count == 0 and np.abs(delta).max() > 0
    # a record written before the column existed: the report still comes, without the update tables
    old = shutil.copytree(run_dir, tmp_path / "old", ignore=shutil.ignore_patterns("wandb", "analysis"))
    for path in (old / "tokens").glob("*.parquet"):
        pq.write_table(pq.read_table(path).drop_columns(["delta_logp"]), path)
    assert main([str(old), "--no-wandb"]) == 0
    text = (old / "analysis" / "report.md").read_text()
    assert "No `delta_logp` in the token records" in text and "update tables (no `delta_logp`" in text


def test_two_runs_give_a_comparison(run_dir, tmp_path, capsys):
    other = shutil.copytree(run_dir, tmp_path / "other", ignore=shutil.ignore_patterns("wandb", "analysis"))
    choices = json.loads((other / "choices.json").read_text())
    (other / "choices.json").write_text(json.dumps({**choices, "shaper": "ppl", "stage": "plateau"}))
    unfinished = shutil.copytree(other, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    out = tmp_path / "cmp"
    assert main([str(run_dir), str(other), str(unfinished), "--out", str(out), "--no-wandb"]) == 0
    printed = capsys.readouterr().out
    md = (out / "comparison.md").read_text()
    assert "| none @always | 1 |" in md and "| ppl @plateau | 1 |" in md and "| none @always | 1 |" in printed
    assert "unfinished`" in md and "no summary.json" in md
    assert (out / "compare_curves.png").read_bytes()[:8] == PNG_MAGIC
