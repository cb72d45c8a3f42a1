"""End to end: the real pipeline on a tiny model learns, is deterministic, dumps its records."""
from __future__ import annotations

import json

import pyarrow.parquet as pq


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_reward_goes_up_on_an_easy_task(run_inprocess):
    summary, run_dir, _ = run_inprocess(["trainer.steps=40", "trainer.dump_tokens_every=0"])
    acc = [r["train/accuracy"] for r in rows(run_dir) if r["step"] > 0]
    first, last = sum(acc[:10]) / 10, sum(acc[-10:]) / 10
    assert last > first + 0.15, (first, last)
    assert summary["entropy/mean_final"] < summary["entropy/mean_initial"]


def test_same_seed_same_metrics(run_inprocess):
    over = ["trainer.steps=3", "trainer.val_every=3", "trainer.dump_tokens_every=0"]
    _, a, _ = run_inprocess(over, "a")
    _, b, _ = run_inprocess(over, "b")
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]
    assert strip(rows(a)) == strip(rows(b))
    _, c, _ = run_inprocess(over + ["seed=1"], "c")
    assert strip(rows(a)) != strip(rows(c))


def test_writes_every_artifact(run_inprocess):
    summary, run_dir, _ = run_inprocess(["trainer.steps=2", "trainer.val_every=2", "trainer.checkpoint_every=2"])
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
