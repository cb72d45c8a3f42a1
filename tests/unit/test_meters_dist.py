"""Metric reduction across ranks: two real gloo processes, hand-computed sums and means."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _rank_main(rank: int, init_file: str, out_dir: str) -> None:
    from rlvr_exp.analysis.live import StepMeter

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        m = StepMeter()
        if rank == 0:
            m.add("loss", 3.0, 2.0)  # rank 0: sum 3 over 2 tokens
            m.add("entropy/pos", 1.0, 1.0)  # only rank 0 has correct samples
            m.add_max("len/max", 7.0)
            m.add_counter("reward/timeouts", 1.0)
        else:
            m.add("loss", 9.0, 4.0)  # rank 1: sum 9 over 4 tokens
            m.add("entropy/neg", 4.0, 2.0)  # only rank 1 has wrong samples
            m.add_max("len/max", 11.0)
            m.add_max("len/only1", 2.0)
        m.all_reduce()
        torch.save(m.means(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_reduce_sums_means_maxima_and_missing_keys(tmp_path):
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert got[0] == got[1]  # every rank logs the same numbers
    m = got[0]
    assert m["loss"] == 2.0  # (3 + 9) / (2 + 4): the token mean over both ranks, not (1.5 + 2.25) / 2
    assert m["entropy/pos"] == 1.0 and m["entropy/neg"] == 2.0  # keys held by one rank only
    assert m["len/max"] == 11.0 and m["len/only1"] == 2.0
    assert m["reward/timeouts"] == 1.0  # a counter reports its total
    assert not any(math.isnan(v) for v in m.values())
