"""Where one training step's time goes: ``python -m rlvr_exp.bench.step_profile [overrides]``.

Builds the trainer of the composed config with the TRL benchmark's settings (rlvr_exp/bench/trl.py:
dynamic sampling, validation, checkpoints and token dumps off), runs ``--warmup`` steps, then
``--steps`` steps under ``torch.profiler`` and prints (1) the step's phases from ``time/*`` (medians),
(2) the operators with the most self CPU time, and (3) the Python functions with the most own time
(``cProfile`` over the same steps, run separately so the two profilers do not time each other).
Wall times on a loaded machine stretch; the shares are what to read.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from rlvr_exp.bench.trl import PHASES, compose_config


def build_trainer(overrides: list[str], tmp: str):
    from rlvr_exp.build import build  # the whole pipeline

    trainer = build(compose_config(overrides), Path(tmp) / "run")
    trainer.setup()
    return trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="profiled steps (each profiler)")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--top", type=int, default=25, help="rows of each table")
    args, overrides = parser.parse_known_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(overrides, tmp)
        steps = iter(range(1, args.warmup + 2 * args.steps + 1))
        for _ in range(args.warmup):
            trainer.train_step(next(steps))
        rows = []
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                rows.append(trainer.train_step(next(steps)))
        py = cProfile.Profile()
        py.enable()
        for _ in range(args.steps):
            rows.append(trainer.train_step(next(steps)))
        py.disable()
        trainer.p.reward_fn.close()
    print("phases (median s over the profiled steps): " + ", ".join(
        f"{k.split('/')[1]} {statistics.median(r[k] for r in rows):.3f}" for k in (*PHASES, "time/step")))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    out = io.StringIO()
    pstats.Stats(py, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
