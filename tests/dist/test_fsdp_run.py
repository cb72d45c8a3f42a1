"""End to end under torchrun: 2 gloo ranks, the tiny default with small sizes, 4 steps.

One run folder (the default, time-stamped name: ranks agree on it), one metrics file and one
summary (rank 0), token records per rank that ``analyze`` reads, sharded checkpoints with a
full-weight export, and a resume from the step-2 checkpoint that logs the same steps 3-4."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rlvr_exp.analyze import main as analyze
from tests.e2e.test_train import rows, strip

pytestmark = pytest.mark.slow  # two torchrun launches of 2 processes: minutes on a shared 2-core machine
REPO = Path(__file__).resolve().parents[2]
SMALL = ["distributed=fsdp", "trainer.steps=4", "trainer.val_every=2", "trainer.checkpoint_every=2",
         "trainer.keep_checkpoints=3", "trainer.dump_tokens_every=1", "analysis.probe_every=0", "trainer.logprob_chunk_tokens=0",
         "task.max_operand=4", "task.num_train=20", "task.num_val=4", "trainer.prompts_per_step=4",
         "trainer.prompts_per_minibatch=2", "trainer.samples_per_prompt=4",
         "trainer.num_threads=1", "logger.mode=disabled", "logger.progress_bar=false"]


def torchrun(cwd: Path, cache: Path, *overrides: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rlvr_exp.train", *SMALL, f"model.cache_dir={cache}", *overrides]
    env = {"PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fsdp")
    torchrun(root, root / "cache")
    folders = [p for p in (root / "outputs" / "runs").glob("*/*") if p.is_dir()]
    assert len(folders) == 1, folders  # both ranks chose rank 0's time stamp
    return folders[0]


def test_one_metrics_file_one_summary_and_sharded_checkpoints(run):
    logged = rows(run)
    assert [r["step"] for r in logged] == [0, 1, 2, 3, 4]
    assert "val/accuracy" in logged[2]
    assert sum("loss/policy" in r for r in logged) >= 2  # steps that trained (not all groups filtered out)
    assert json.loads((run / "summary.json").read_text())
    assert sorted(p.name for p in run.iterdir() if p.name.endswith(".jsonl")) == ["metrics.jsonl"]
    ckpt = run / "checkpoints" / "step_000004"
    assert (ckpt / "sharded" / ".metadata").is_file()
    assert {p.name for p in ckpt.glob("rng_rank*.pt")} == {"rng_rank0.pt", "rng_rank1.pt"}
    config = json.loads((ckpt / "policy" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]  # loadable by transformers, not FSDP's class


def test_token_records_per_rank_read_by_analyze(run, tmp_path):
    trained = [r["step"] for r in rows(run) if "loss/policy" in r]  # skipped steps dump nothing
    files = sorted(p.name for p in (run / "tokens").iterdir())
    assert files == [f"step_{s:06d}.rank_{r}.parquet" for s in trained for r in (0, 1)]
    a, b = (pq.read_table(run / "tokens" / f"step_{trained[0]:06d}.rank_{r}.parquet") for r in (0, 1))
    samples_a, samples_b = set(a.column("sample").to_pylist()), set(b.column("sample").to_pylist())
    assert samples_a and samples_b and not samples_a & samples_b  # global sample numbers
    assert max(samples_a) < min(samples_b)  # rank 1's rows follow rank 0's
    assert not set(a.column("group").to_pylist()) & set(b.column("group").to_pylist())
    assert analyze([str(run), "--no-wandb"]) == 0
    n_tokens = sum(pq.read_metadata(run / "tokens" / f).num_rows for f in files)
    assert f"({n_tokens} tokens" in (run / "analysis" / "report.md").read_text()  # every rank's records


def test_resume_from_sharded_checkpoint_is_exact(run, tmp_path):
    part = shutil.copytree(run, tmp_path / "part", ignore=shutil.ignore_patterns("analysis"))
    shutil.rmtree(part / "checkpoints" / "step_000004")
    (part / "summary.json").unlink()
    torchrun(tmp_path, run.parents[3] / "cache", f"trainer.resume_from={part}")  # continues in part/
    tail = [r for r in rows(part) if r["step"] > 2]
    assert [r["step"] for r in tail] == [3, 4]
    assert strip(tail) == strip([r for r in rows(run) if r["step"] > 2])
