"""Metrics as (sum, count) pairs, so that they reduce exactly across micro-batches and ranks."""
from __future__ import annotations

import torch


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
        """Sum totals and counts over the ranks of the default process group (no-op when single)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        keys = sorted(self.totals)
        t = torch.tensor([[self.totals[k], self.counts[k]] for k in keys], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        for k, (total, count) in zip(keys, t.tolist()):
            self.totals[k], self.counts[k] = total, count

    def means(self) -> dict[str, float]:
        return {k: (v / self.counts[k] if self.counts[k] else v) for k, v in self.totals.items()}
