"""RunLogger across a resume: each step reaches W&B once, metrics.jsonl keeps one line per step.

The W&B boundary is a spy (``wandb_guard.init`` returns it), so these tests see exactly which
steps the logger sends; tests/e2e/test_train.py checks the same with real offline W&B files."""
from __future__ import annotations

import json
import logging

import pytest

from rlvr_exp import run_files as rf
from rlvr_exp.build import run_config
from rlvr_exp.logging import wandb_guard
from rlvr_exp.logging.run_logger import RunLogger
from tests.conftest import compose


class SpyRun:
    """A W&B run that records the steps it is given; ``starting_step`` as a resumed online run
    reports it (the server's next step), 0 offline."""

    def __init__(self, run_id: str, starting_step: int = 0) -> None:
        self.id, self.starting_step, self.steps, self.media = run_id, starting_step, [], []

    def log(self, values, step):
        (self.media if "table" in values else self.steps).append(step)

    def finish(self, exit_code=0):
        pass


@pytest.fixture(scope="module")
def config():
    return run_config(compose([]))  # W&B labels are read from the run's config


@pytest.fixture
def spy(monkeypatch, config):
    """``spy(run)`` makes the next ``RunLogger.start`` open ``run``; ``spy.config`` is a run's config."""
    def use(run: SpyRun) -> SpyRun:
        monkeypatch.setattr(wandb_guard, "init", lambda wandb, mode, timeout_s, kwargs: run)
        return run
    use.config = config
    return use


def attempt(run_dir, spy, run, steps, resume_from=None, run_id=None):
    """One process: start (cutting metrics.jsonl back to ``resume_from`` first, as the trainer
    does), log ``steps``, finish."""
    logger = RunLogger(mode="offline", progress_bar=False)
    if resume_from is not None:
        logger.cut_back(run_dir, resume_from)
    spy(run)
    logger.start(run_dir, spy.config, total_steps=10, initial_step=resume_from or 0, run_id=run_id)
    for step in steps:
        logger.log(step, {"reward/mean": step / 10})
    logger.finish()
    return run


def logged_steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / rf.METRICS).read_text().splitlines()]


def test_resumed_run_sends_only_steps_past_the_killed_ones(tmp_path, spy):
    # killed after logging step 5; its newest checkpoint is step 3
    first = attempt(tmp_path, spy, SpyRun("abc"), range(0, 6))
    assert first.steps == [0, 1, 2, 3, 4, 5]
    assert json.loads((tmp_path / rf.WANDB_SENT).read_text()) == {"run_id": "abc", "step": 5}
    second = attempt(tmp_path, spy, SpyRun("abc"), range(4, 9), resume_from=3, run_id="abc")
    assert second.steps == [6, 7, 8]  # 4 and 5 are already in the W&B run
    assert logged_steps(tmp_path) == list(range(9))  # recomputed 4 and 5 replace the cut rows
    assert sorted(first.steps + second.steps) == list(range(9))


def test_media_of_a_sent_step_are_not_sent_again(tmp_path, spy):
    attempt(tmp_path, spy, SpyRun("abc"), range(0, 3))
    run = spy(SpyRun("abc"))
    logger = RunLogger(mode="offline", progress_bar=False)
    logger.cut_back(tmp_path, 1)
    logger.start(tmp_path, spy.config, total_steps=4, initial_step=1, run_id="abc")
    logger.log_media(2, {"table": 0})
    logger.log_media(3, {"table": 0})
    logger.finish()
    assert run.media == [3]


def test_another_w_and_b_run_gets_every_step(tmp_path, spy):
    attempt(tmp_path, spy, SpyRun("abc"), range(0, 6))
    # the killed attempt's note names run abc; a resume that opens run xyz (a mode change lost the
    # id) or a fresh run (no id) sends everything it logs
    assert attempt(tmp_path, spy, SpyRun("xyz"), range(4, 7), resume_from=3, run_id="xyz").steps == [4, 5, 6]
    assert attempt(tmp_path, spy, SpyRun("new"), range(0, 2)).steps == [0, 1]


def test_online_resume_skips_what_the_server_holds(tmp_path, spy):
    # no note (lost, or the steps were sent by another machine): W&B's starting_step 5 says the
    # server holds steps up to 4
    run = attempt(tmp_path, spy, SpyRun("abc", starting_step=5), range(3, 7), resume_from=2, run_id="abc")
    assert run.steps == [5, 6]


def test_a_torn_last_line_is_dropped_on_cut_back(tmp_path, caplog):
    rows = [json.dumps({"step": s, "reward/mean": 0.5}) for s in range(4)]
    (tmp_path / rf.METRICS).write_text("\n".join(rows) + '\n{"step": 4, "rew')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="rlvr_exp.logging.run_logger"):
        RunLogger(mode="disabled", progress_bar=False).cut_back(tmp_path, 2)
    assert logged_steps(tmp_path) == [0, 1, 2]
    assert sum("dropped a line" in r.message for r in caplog.records) == 1
