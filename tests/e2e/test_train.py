"""End to end: the real pipeline on a tiny model learns, is deterministic, dumps its records."""
from __future__ import annotations

import json
import multiprocessing
import time

import pyarrow.parquet as pq
import pytest

from rlvr_exp.checkpoint import SAVE_FAULT_ENV
from rlvr_exp.config import ConfigError
from rlvr_exp.dashboard import wandb_file
from rlvr_exp.faults import CheckpointError
from rlvr_exp.rollout.hf import HFRollout

# Wall times and the verifier's cache counters differ between identical runs.
NOISE = ("time/", "reward/cache_hits", "reward/verified", "reward/verify_time_s", "reward/samples")


def strip(rows_: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(NOISE)} for r in rows_]


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reward_goes_up_on_an_easy_task(run_inprocess):
    summary, run_dir, _ = run_inprocess(["trainer.steps=25", "trainer.dump_tokens_every=0"])
    acc = [r["train/accuracy"] for r in rows(run_dir) if r["step"] > 0]
    first, last = sum(acc[:10]) / 10, sum(acc[-10:]) / 10
    assert last > first + 0.04, (first, last)  # measured: 0.16 -> 0.23 (seeds 0 and 1)
    assert summary["entropy/mean_final"] < summary["entropy/mean_initial"]


def test_same_seed_same_metrics(run_inprocess):
    over = ["trainer.steps=3", "trainer.val_every=3", "trainer.dump_tokens_every=0"]
    _, a, _ = run_inprocess(over, "a")
    _, b, _ = run_inprocess(over, "b")
    assert strip(rows(a)) == strip(rows(b))
    _, c, _ = run_inprocess(over + ["seed=1"], "c")
    assert strip(rows(a)) != strip(rows(c))


def children_started_by(run) -> list:
    """The child processes ``run`` left alive. A stopped worker may take a moment to be reaped
    on a loaded machine, so wait up to 20 s; an idle pool worker that was never stopped lives on."""
    before = set(multiprocessing.active_children())
    run()
    deadline = time.monotonic() + 20.0
    while (left := [p for p in multiprocessing.active_children() if p not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_writes_every_artifact(run_inprocess):
    out = {}

    def run():
        out["run"] = run_inprocess(["trainer.steps=2", "trainer.val_every=2", "trainer.checkpoint_every=2"])

    # the verifier's pool is stopped when the run ends (an idle worker left behind hangs the exit
    # of a joblib/loky launcher worker)
    assert children_started_by(run) == []
    summary, run_dir, trainer = out["run"]
    assert not trainer.p.reward_fn.pool.started
    for key in ("val/accuracy_initial", "val/accuracy_last", "val/accuracy_final", "entropy/mean_initial",
                "entropy/mean_final", "time/wall_seconds"):
        assert key in summary
    assert json.loads((run_dir / "summary.json").read_text())["val/accuracy_final"] == summary["val/accuracy_final"]
    steps = [r["step"] for r in rows(run_dir)]
    assert steps[0] == 0 and steps[-1] == 2
    assert (run_dir / "checkpoints" / "step_000002" / "trainer_state.pt").exists()
    table = pq.read_table(run_dir / "tokens" / "step_000001.parquet")
    assert table.column_names[:15] == ["step", "sample", "group", "position", "rel_position", "token_id", "logp_old",
                                       "entropy", "advantage_raw", "advantage", "in_loss", "reward", "correct",
                                       "response_len", "logppl"]
    per_sample = dict(zip(table.column("sample").to_pylist(), table.column("response_len").to_pylist()))
    assert table.num_rows == sum(per_sample.values())  # one row per response token, no padding
    assert set(table.column("position").to_pylist()) == set(range(max(per_sample.values())))


def test_resume_is_exact(run_inprocess):
    """A run resumed from its step-2 checkpoint logs the same steps 3-4 as an uninterrupted run."""
    over = ["trainer.steps=4", "trainer.val_every=2", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=3",
            "trainer.dump_tokens_every=0"]
    _, full, _ = run_inprocess(over, "full")
    _, part, _ = run_inprocess(over, "part")
    import shutil

    shutil.rmtree(part / "checkpoints" / "step_000004")
    (part / "summary.json").unlink()
    _, resumed, trainer = run_inprocess(over + [f"trainer.resume_from={part}"], "resumed")
    assert trainer.start_step == 2
    assert trainer.run_dir == part and not (resumed / "metrics.jsonl").exists()
    tail = [r for r in rows(part) if r["step"] > 2]
    assert [r["step"] for r in tail] == [3, 4]
    assert strip(tail) == strip([r for r in rows(full) if r["step"] > 2])


def test_resume_past_the_checkpoint_sends_each_step_to_wandb_once(run_inprocess, monkeypatch, tmp_path):
    """Step 4 reaches metrics.jsonl and the offline W&B run, then its checkpoint write fails; the
    resume from step 2 recomputes steps 3 and 4 into metrics.jsonl and sends W&B only step 5."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    over = ["trainer.steps=5", "trainer.checkpoint_every=2", "trainer.keep_checkpoints=3", "trainer.dump_tokens_every=0",
            "logger.mode=offline"]
    monkeypatch.setenv(SAVE_FAULT_ENV, "4:fail")
    with pytest.raises(CheckpointError):
        run_inprocess(over, "run")
    monkeypatch.delenv(SAVE_FAULT_ENV)
    run = tmp_path / "run"
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4]
    _, _, trainer = run_inprocess(over + [f"trainer.resume_from={run}"], "resumed")
    assert trainer.start_step == 2 and trainer.run_dir == run
    assert [r["step"] for r in rows(run)] == [1, 2, 3, 4, 5]  # one line per step
    files = wandb_file.run_files(run)
    assert len({f.name for f in files}) == 1 and len(files) == 2  # one W&B run id, opened twice
    assert [wandb_file.history_steps(f) for f in files] == [[1, 2, 3, 4], [5]]  # each step once


def test_sampler_scores_train_like_a_scoring_pass(run_inprocess):
    """trainer.old_logprobs=rollout (the default under rollout=hf) takes logp_old and the entropies
    from the sampling pass; recompute scores the batch again. Same seed: the same samples, and every
    metric of the first step within float32 round-off (tolerance 1e-4) of the other."""
    over = ["trainer.steps=1", "trainer.dump_tokens_every=0"]
    _, a, _ = run_inprocess(over + ["trainer.old_logprobs=rollout"], "rollout")
    _, b, _ = run_inprocess(over + ["trainer.old_logprobs=recompute"], "recompute")
    ra, rb = strip(rows(a))[-1], strip(rows(b))[-1]
    assert ra.keys() == rb.keys()
    for key in ("train/accuracy", "train/response_len_mean", "reward/mean"):
        assert ra[key] == rb[key], key  # the same samples
    for key, value in ra.items():
        if isinstance(value, float):
            assert abs(value - rb[key]) <= 1e-4 * max(1.0, abs(value)), (key, value, rb[key])
    assert rows(a)[-1]["time/score"] < rows(b)[-1]["time/score"]  # no scoring pass


class UnscoredRollout(HFRollout):
    """An engine that cannot score its samples (as rollout=vllm)."""

    scores_samples = False


def test_rollout_scores_are_refused_from_an_engine_without_them(run_inprocess):
    target = f"{__name__}.UnscoredRollout"
    with pytest.raises(ConfigError, match="trainer.old_logprobs=rollout needs a rollout that scores"):
        run_inprocess(["trainer.steps=1", f"rollout._target_={target}", "trainer.old_logprobs=rollout"], "refused")
    summary, run_dir, _ = run_inprocess(["trainer.steps=1", f"rollout._target_={target}"], "auto")  # auto: recompute
    assert rows(run_dir)[-1]["time/score"] > 0
