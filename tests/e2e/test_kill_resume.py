"""Kill -9 and resume through the real CLI, and a SLURM-style requeue through submitit: every
later metric equals an uninterrupted run's.

Slow (six CLI runs; about 10 minutes on 2 busy cores): ``python -m pytest -m slow tests/e2e/test_kill_resume.py``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr_exp.checkpoint import SAVE_FAULT_ENV
from rlvr_exp.dashboard import wandb_file
from tests.conftest import FAST, REPO

pytestmark = pytest.mark.slow
NOISE = ("time/", "reward/cache_hits", "reward/verified", "reward/verify_time_s", "reward/samples")
RUN = ["trainer.steps=4", "trainer.checkpoint_every=1", "trainer.keep_checkpoints=5", "trainer.dump_tokens_every=0"]


def cli(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_SILENT": "true", **env}
    return subprocess.Popen([sys.executable, "-m", "rlvr_exp.train", *args], cwd=cwd, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    return out


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(NOISE)}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def descendants(pid: int) -> list[int]:
    out = []
    for kid in children(pid):
        out += [kid, *descendants(kid)]
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone meanwhile
        return b""


def alive(pids: list[int]) -> list[int]:
    """The pids still running (a zombie waiting to be reaped by init counts as gone)."""
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


def kill_when(proc: subprocess.Popen, ready: Path) -> list[int]:
    """SIGKILL ``proc`` once ``ready`` exists; returns the pids of the children it had then."""
    deadline = time.monotonic() + 900
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    kids = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return kids


def offline(args: list[str]) -> list[str]:
    return [a for a in args if not a.startswith("logger.mode=")] + ["logger.mode=offline"]


@pytest.fixture(scope="module")
def base_args(tmp_path_factory) -> list[str]:
    cache = tmp_path_factory.mktemp("cache")
    mine = {a.split("=", 1)[0] for a in RUN}
    return [a for a in FAST if a.split("=", 1)[0] not in mine] + [f"model.cache_dir={cache}", *RUN]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, base_args) -> list[dict]:
    run = tmp_path_factory.mktemp("full") / "run"
    finish(cli([*base_args, f"hydra.run.dir={run}"], run.parent))
    return rows(run)


@pytest.mark.parametrize("where", ["after_checkpoint", "inside_checkpoint_write"])
def test_kill_and_resume_equals_uninterrupted(tmp_path, base_args, uninterrupted, where):
    run = tmp_path / "run"
    if where == "after_checkpoint":
        proc = cli([*offline(base_args), f"hydra.run.dir={run}"], tmp_path)
        kids = kill_when(proc, run / "checkpoints" / "step_000002" / "trainer_state.pt")
    else:  # step 2's checkpoint files are written, the rename to step_000002 has not happened
        proc = cli([*offline(base_args), f"hydra.run.dir={run}"], tmp_path,
                   **{SAVE_FAULT_ENV: "2:sleep:600"})
        kids = kill_when(proc, run / "checkpoints" / ".tmp_step_000002" / "trainer_state.pt")
        assert not (run / "checkpoints" / "step_000002").exists()
    assert kids, "the run had started its verifier workers"
    deadline = time.monotonic() + 30  # orphaned verifier workers notice their parent is gone
    while alive(kids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive(kids) == []

    # the resume names only the run folder: the saved config (FAST, RUN) is the config
    out = finish(cli([f"trainer.resume_from={run}", "logger.mode=offline", "logger.progress_bar=false"], tmp_path))
    resumed_from = 1 if where == "inside_checkpoint_write" else None
    if resumed_from is not None:
        assert "checkpoints/step_000001" in out  # the half-written step 2 is not taken
    assert rows(run) == uninterrupted  # every step, before and after the kill
    assert not list((run / "checkpoints").glob(".tmp_*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # one run, one folder
    ids = {p.name.rsplit("-", 1)[1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(ids) == 1 and len(list((run / "wandb").glob("offline-run-*"))) == 2  # the same W&B run, resumed


def test_requeued_submitit_job_resumes_from_its_own_folder(tmp_path, base_args, uninterrupted):
    """SLURM preemption as submitit handles it, on submitit's local executor (the launcher code is
    launcher=slurm's, hydra_submitit_launcher's BaseSubmititLauncher): SIGUSR2 reaches the job, submitit
    calls the launcher's checkpoint() (a DelayedSubmission of the same job) and requeues it; the
    requeued job lands in the same folder (the sweep dir's time stamp is kept in the pickled config),
    finds its own checkpoint (job.json names its overrides, no summary.json) and resumes from it."""
    proc = cli(["-m", "hydra/launcher=submitit_local", *offline(base_args)], tmp_path)
    deadline = time.monotonic() + 900
    while not list(tmp_path.glob("outputs/multirun/*/*/0/checkpoints/step_000002/trainer_state.pt")):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.2)
    tasks = [pid for pid in descendants(proc.pid) if b"submitit.core._submit" in cmdline(pid)]
    assert len(tasks) == 1
    os.kill(tasks[0], signal.SIGUSR2)
    finish(proc)

    [job] = tmp_path.glob("outputs/multirun/*/*/0")  # one folder: the requeued job used the first one's
    log = (job / "train.log").read_text()
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log and "resuming from" in log, log[-3000:]
    assert rows(job) == uninterrupted  # every step, before and after the requeue
    files = wandb_file.run_files(job)
    assert len({f.name for f in files}) == 1 and len(files) == 2  # the same W&B run, resumed
    steps = [s for f in files for s in wandb_file.history_steps(f)]
    assert sorted(steps) == [r["step"] for r in uninterrupted]  # each step reached W&B once
