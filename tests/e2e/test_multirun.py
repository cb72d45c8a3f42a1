"""Sweeps through the real CLI (``python -m rlvr_exp.train -m ...``) in a subprocess, on a tiny
config: every job gets its own folder, metrics, summary and offline W&B run; a failing job leaves
``error.txt`` and the other jobs their results; rerunning the same command skips finished jobs
and resumes interrupted ones. The sweep configs write under ``outputs/multirun/<name>`` relative
to the working directory, so each test runs in its own temporary folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlvr_exp.analysis.compare import compare_runs

REPO = Path(__file__).resolve().parents[2]
# The brief's fast config, smaller still: 2 steps, 8 validation problems x 2 samples, no warm-start.
TINY = [
    "trainer.steps=2", "trainer.val_every=2", "trainer.prompts_per_step=4", "trainer.prompts_per_minibatch=4",
    "trainer.samples_per_prompt=4", "trainer.val_samples_per_problem=2", "trainer.checkpoint_every=0",
    "trainer.dump_tokens_every=0", "model.warmstart.enabled=false", "task.num_val=8", "logger.mode=offline",
    "logger.progress_bar=false",
]


def cli(cwd: Path, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m rlvr_exp.train -m <args>`` in ``cwd``, W&B offline and its files kept in ``cwd``."""
    scratch = cwd / ".scratch"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1",
           "WANDB_CONFIG_DIR": str(scratch), "WANDB_CACHE_DIR": str(scratch), "WANDB_DATA_DIR": str(scratch),
           "RLVR_EXP_CACHE": str(scratch / "models"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "rlvr_exp.train", "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_complete_run(run_dir: Path) -> None:
    assert steps(run_dir) == [0, 1, 2], run_dir
    assert "val/accuracy_final" in read(run_dir / "summary.json")
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1, run_dir
    assert not (run_dir / "error.txt").exists()


# ---------------------------------------------------------------- the basic launcher
# shaper_ablation narrowed on the command line to 2 strategies x 2 seeds: this also checks, with
# Hydra's real sweeper, that command-line values replace the sweep's own axes (4 jobs, not 12).
BASIC = ["sweep=shaper_ablation", "experiment=grpo,ppl", "seed=0,1", *TINY, "trainer.checkpoint_every=1"]


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("basic")
    proc = cli(cwd, BASIC)
    assert proc.returncode == 0, output(proc)[-4000:]
    return cwd, cwd / "outputs" / "multirun" / "shaper_ablation", proc


def test_each_job_has_its_own_folder_metrics_summary_and_wandb_run(basic_sweep):
    _, sweep_dir, _ = basic_sweep
    dirs = job_dirs(sweep_dir)
    assert [d.name for d in dirs] == ["0", "1", "2", "3"]
    for run_dir in dirs:
        assert_complete_run(run_dir)
    run_ids = {p.name.rsplit("-", 1)[1] for d in dirs for p in (d / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 4  # one W&B run per job, never merged


def test_command_line_axes_replace_the_sweeps_own(basic_sweep):
    _, sweep_dir, proc = basic_sweep
    assert "Launching 4 jobs" in output(proc)
    got = [(read(d / "choices.json")["experiment"], OmegaConf.load(d / "config_resolved.yaml").seed)
           for d in job_dirs(sweep_dir)]
    assert got == [("grpo", 0), ("grpo", 1), ("ppl", 0), ("ppl", 1)]


def test_jobs_are_grouped_and_labelled_for_wandb(basic_sweep):
    _, sweep_dir, _ = basic_sweep
    for run_dir in job_dirs(sweep_dir):
        cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
        arm = read(run_dir / "choices.json")["experiment"]
        assert (cfg.logger.group, cfg.logger.job_type) == ("shaper_ablation", arm)
        assert list(cfg.shaper) == {"grpo": ["none"], "ppl": ["ppl"]}[arm]


def test_sweep_summary_table(basic_sweep, tmp_path):
    _, sweep_dir, _ = basic_sweep
    table = compare_runs(job_dirs(sweep_dir), tmp_path)
    assert isinstance(table, str) and "|" in table
    assert "ppl" in table and "none" in table


def test_rerun_skips_finished_jobs_and_resumes_interrupted_ones(basic_sweep):
    cwd, sweep_dir, _ = basic_sweep
    finished, interrupted = job_dirs(sweep_dir)[:3], job_dirs(sweep_dir)[3]
    before = {d: (d / "metrics.jsonl").read_bytes() for d in finished}
    # Job 3 "dies" after its step-1 checkpoint: no summary, no step-2 checkpoint, stale rows.
    (interrupted / "summary.json").unlink()
    shutil.rmtree(interrupted / "checkpoints" / "step_000002")
    proc = cli(cwd, BASIC)
    assert proc.returncode == 0, output(proc)[-4000:]
    assert output(proc).count("skipped:") == 3
    assert "resuming from" in output(proc)
    for run_dir in finished:
        assert (run_dir / "metrics.jsonl").read_bytes() == before[run_dir]  # not retrained
    assert steps(interrupted) == [0, 1, 2]  # rows after the checkpoint were dropped and relogged once
    assert "val/accuracy_final" in read(interrupted / "summary.json")


# ---------------------------------------------------------------------- failures
# The recommended stack (PPL always + position from the plateau) with one invalid PPL strength:
# job 0 fails at start-up, job 1 runs after it.
FAILING = ["sweep=shaper_ablation", "experiment=ppl_position", "shaper.ppl.alpha=-1,0.01", "seed=0", *TINY]


def test_a_failing_job_keeps_the_others_and_a_rerun_retries_only_it(tmp_path):
    proc = cli(tmp_path, FAILING)
    assert proc.returncode != 0  # Hydra reports the failure once every job has run
    bad, good = job_dirs(tmp_path / "outputs" / "multirun" / "shaper_ablation")
    error = (bad / "error.txt").read_text()
    assert "shaper.ppl.alpha=-1" in error and "Traceback" in error and "alpha" in error.splitlines()[-1]
    assert not (bad / "summary.json").exists()
    assert_complete_run(good)  # ran after the failure, results kept
    assert read(good / "choices.json")["shaper"] == ["ppl", "position"]  # a stack, which Hydra's choices omit
    assert OmegaConf.load(good / "config_resolved.yaml").logger.job_type == "ppl_position"
    before = (good / "metrics.jsonl").read_bytes()

    proc = cli(tmp_path, FAILING)
    assert proc.returncode != 0
    assert "skipped:" in output(proc)
    assert (good / "metrics.jsonl").read_bytes() == before
    assert (bad / "error.txt").exists() and (bad / "attempts" / "000" / "error.txt").exists()


# ---------------------------------------------------------------- the joblib launcher
@pytest.mark.slow  # ~50 s on 2 busy cores; launcher=parallel is also what the sweeps' READMEs ran
def test_parallel_launcher_runs_the_same_sweep_in_loky_workers(tmp_path):
    proc = cli(tmp_path, [*BASIC, "launcher=parallel", "trainer.checkpoint_every=0"])
    assert proc.returncode == 0, output(proc)[-4000:]
    assert "backend=loky" in output(proc) and "n_jobs=2" in output(proc)
    dirs = job_dirs(tmp_path / "outputs" / "multirun" / "shaper_ablation")
    assert len(dirs) == 4
    for run_dir in dirs:
        assert_complete_run(run_dir)
        assert OmegaConf.load(run_dir / "config_resolved.yaml").trainer.num_threads == 1
