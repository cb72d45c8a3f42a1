"""What a job does with its output folder before and after training: skip, resume, record errors.

A sweep writes job ``n`` of ``python -m rlvr_exp.train -m sweep=<name> ...`` to
``outputs/multirun/<name>/<n>/`` (``hydra.sweep.dir`` is fixed in each sweep config and the
subdir is the job number), so rerunning the same command maps every job to its old folder.
:func:`plan` then decides, from what that folder holds:

- ``summary.json`` present: the job finished. Skip it and return its stored metric.
- ``trainer.resume_from`` set: resume from there (the user's choice, unchanged).
- a complete checkpoint (``checkpoints/step_*/trainer_state.pt``): resume from the newest one
  (the trainer truncates ``metrics.jsonl`` to that step and reopens the same W&B run).
- otherwise: train from scratch. Leftovers of an earlier failed attempt (``metrics.jsonl``,
  ``tokens/``, ``wandb/``, ``wandb_sent.json``, ``error.txt``) move to ``attempts/<k>/`` first, so the
  new run's files are its own.

A folder remembers the overrides that made it (``job.json``). A different job (another command
reusing the sweep folder) is refused with :class:`JobMismatchError` instead of being skipped with
the wrong results or resumed from the wrong weights. Overrides that do not change what is trained
(the launcher, thread count, W&B mode, ...) are left out of that comparison.

Under ``launcher=parallel`` a job runs inside a joblib/loky worker; :func:`use_standard_start_method`
makes the processes it starts itself (the math-verify pool) work there.

A job that raises leaves ``error.txt`` (its overrides and traceback) in its folder: see
:func:`record_error`. Hydra's launchers run the other jobs of the sweep regardless and report the
first failure when all are done.
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import traceback
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from rlvr_exp import run_files as rf
from rlvr_exp.checkpoint import find_checkpoint

SUMMARY_FILE = rf.SUMMARY
JOB_FILE = rf.JOB
ERROR_FILE = rf.ERROR
ATTEMPTS_DIR = rf.ATTEMPTS
#: What a failed attempt leaves behind that a fresh attempt would append to or mix with.
STALE_ARTIFACTS = (rf.METRICS, rf.TOKENS, rf.WANDB, rf.WANDB_SENT, ERROR_FILE)
#: Override keys that do not change what a job trains, so a rerun may change them freely.
NEUTRAL_KEYS = ("launcher", "trainer.num_threads", "trainer.resume_from", "logger.mode", "logger.progress_bar")

Action = Literal["skip", "resume", "fresh"]


class JobMismatchError(RuntimeError):
    """The job's output folder holds another job's results."""


@dataclass(frozen=True)
class JobPlan:
    """What to do with a job folder: ``skip`` (with the stored ``summary``), ``resume`` (from
    ``checkpoint``: the newest one in the folder, or ``trainer.resume_from`` when the user set
    it), or ``fresh``."""

    action: Action
    run_dir: Path
    summary: dict | None = None
    checkpoint: Path | None = None


def identity(overrides: list[str]) -> list[str]:
    """The overrides that define a job: sorted, without :data:`NEUTRAL_KEYS` and ``hydra.*``."""
    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    return sorted(o for o in overrides if key(o) not in NEUTRAL_KEYS and not key(o).startswith("hydra."))


def check_identity(run_dir: Path, overrides: list[str]) -> None:
    """Raise :class:`JobMismatchError` when ``run_dir/job.json`` names other overrides.
    A folder without ``job.json`` (new, or written before this check existed) passes."""
    record = Path(run_dir) / JOB_FILE
    if not record.is_file():
        return
    stored = json.loads(record.read_text())["overrides"]
    if stored != identity(overrides):
        raise JobMismatchError(
            f"{run_dir} holds another job (overrides {stored}), not this one ({identity(overrides)}). "
            "Rerun the exact command that made this sweep folder to skip/resume its jobs, or give this "
            "command its own folder: logger.group=<new name> with a sweep config, else "
            "hydra.sweep.dir=outputs/multirun/<new name>")


def plan(run_dir: Path, overrides: list[str], resume_from: str | None) -> JobPlan:
    """Decide skip / resume / fresh for ``run_dir`` (see the module docstring). Raises
    :class:`JobMismatchError` when the folder belongs to another job."""
    run_dir = Path(run_dir)
    check_identity(run_dir, overrides)
    summary_path = run_dir / SUMMARY_FILE
    if summary_path.is_file():
        return JobPlan("skip", run_dir, summary=json.loads(summary_path.read_text()))
    if resume_from is not None:  # the user's choice; the trainer checks it
        return JobPlan("resume", run_dir, checkpoint=Path(resume_from))
    try:
        return JobPlan("resume", run_dir, checkpoint=find_checkpoint(run_dir))
    except FileNotFoundError:
        return JobPlan("fresh", run_dir)


def prepare(job: JobPlan, overrides: list[str]) -> None:
    """Get the folder ready for ``job``: file away a failed attempt's leftovers (all of them
    for a fresh start, only ``error.txt`` for a resume) and record the job's overrides."""
    if job.action == "skip":
        return
    stale = STALE_ARTIFACTS if job.action == "fresh" else (ERROR_FILE,)
    found = [job.run_dir / name for name in stale if (job.run_dir / name).exists()]
    if found:
        attempts = job.run_dir / ATTEMPTS_DIR
        target = attempts / f"{len(list(attempts.glob('*'))) if attempts.is_dir() else 0:03d}"
        target.mkdir(parents=True)
        for path in found:
            shutil.move(str(path), str(target / path.name))
    (job.run_dir / JOB_FILE).write_text(json.dumps({"overrides": identity(overrides)}, indent=2) + "\n")


def stored_metric(summary: dict, key: str) -> float | None:
    """``summary[key]`` as a float (None when absent): what a skipped job returns to the sweeper."""
    value = summary.get(key)
    return float(value) if value is not None else None


def record_error(run_dir: Path, overrides: list[str]) -> Path:
    """Write ``run_dir/error.txt``: time, overrides and the traceback of the exception being
    handled. Call it inside ``except``; the caller re-raises."""
    path = Path(run_dir) / ERROR_FILE
    path.write_text(
        f"time: {datetime.now().isoformat(timespec='seconds')}\n"
        f"overrides: {' '.join(overrides)}\n\n{traceback.format_exc()}")
    return path


def use_standard_start_method() -> None:
    """Reset a process-wide start method that only a launcher knows (loky's ``"loky"`` in joblib
    workers) to ``"spawn"``. The standard library hands the parent's global start method to every
    spawned child, even one started from an explicit spawn context, and a fresh interpreter cannot
    resolve ``"loky"``: the child dies with "cannot find context for 'loky'"."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method is not None and method not in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("spawn", force=True)
