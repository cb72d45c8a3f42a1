"""Metrics as (sum, count) pairs, so that they reduce exactly across micro-batches and ranks."""
from __future__ import annotations

import torch


def distributed() -> bool:
    """True inside an initialised default process group (torchrun)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def reduce_device() -> torch.device:
    """Where a reduction's tensor must live: NCCL reduces CUDA tensors only, gloo CPU ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def union_keys(keys) -> list[str]:
    """The sorted union of ``keys`` over all ranks, so every rank reduces the same list."""
    gathered: list[list[str] | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, sorted(keys))
    return sorted(set().union(*gathered))


class MeanMeter:
    """``add(key, total, count)`` accumulates; ``means()`` gives total / count per key (a key
    added with count 0 everywhere reports its plain total: use it for counters)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, key: str, total: float, count: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + total
        self.counts[key] = self.counts.get(key, 0.0) + count

    def all_reduce(self) -> None:
        """Sum totals and counts over the ranks of the default process group (no-op when single).
        A key some rank never added counts as (0, 0) there, so ranks may hold different keys."""
        if not distributed():
            return
        keys = union_keys(self.totals)
        t = torch.tensor([[self.totals.get(k, 0.0), self.counts.get(k, 0.0)] for k in keys],
                         dtype=torch.float64, device=reduce_device())
        torch.distributed.all_reduce(t)
        for k, (total, count) in zip(keys, t.tolist()):
            self.totals[k], self.counts[k] = total, count

    def means(self) -> dict[str, float]:
        return {k: (v / self.counts[k] if self.counts[k] else v) for k, v in self.totals.items()}
