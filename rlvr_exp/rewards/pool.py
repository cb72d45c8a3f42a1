"""A verifier-agnostic process pool: runs a picklable ``check(response, reference) -> bool`` on
many pairs, each under its own timeout, in spawned workers that a hung or crashed check cannot take
down with it. Math-verify is one user (:mod:`rlvr_exp.rewards.math_verify`); a code-execution
verifier supplies its own check function and nothing else.

Interface: ``VerifierPool(check, workers, timeout_s, warmup, name)``, ``run(pairs) -> {pair:
Verdict}``, ``restarts`` (workers replaced after a timeout or crash), ``close()``. Nothing starts in the constructor; the
workers start on the first ``run`` and a pickled copy holds none.

Conventions:
- The workers are a ``pebble`` ProcessPool: a task that runs past its timeout costs its own
  worker only (pebble kills it and starts a replacement; the other workers keep going).
  Workers are spawned (fork is unsafe beside torch/vLLM threads); each imports ``check``'s module
  and runs ``warmup()`` before it takes a task, and a task's timeout counts from when a worker
  starts it, so no pair's timeout is spent on start-up. A worker whose parent dies exits too
  (SIGKILL leaves the parent no time to stop it).
- Batching: pairs go out in chunks of at most CHUNK_SIZE, each chunk with ``timeout_s`` in all.
  The pairs of a chunk that timed out or lost its worker are retried one by one, each with
  ``timeout_s``, so one hung pair never marks its neighbours wrong. A pair that still times out
  is wrong with outcome ``timeout`` (not final: load can make it transient).
- Bound: with W workers, C chunks and R retried pairs, a batch takes at most about
  ceil(C / W) * timeout_s + ceil(R / W) * (timeout_s + warm-up of a replacement worker). Measured
  on 17 hostile responses (rlvr_exp/rewards/hostile.py, ``python -m rlvr_exp.bench.hostile_rewards``).
- An exception inside ``check`` makes that pair wrong with outcome ``error`` (final: it is
  deterministic); so does a pair whose worker dies when it runs alone.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Literal

from pebble import ProcessExpired, ProcessFuture, ProcessPool

logger = logging.getLogger(__name__)

CheckFn = Callable[[str, str], bool]
Pair = tuple[str, str]  # (response, reference: a gold answer, tests, ...)

#: How long a fresh pool may take to spawn and warm up (seconds).
POOL_START_TIMEOUT_S = 120.0
#: Most pairs sent to a worker in one future. Small enough that a healthy chunk finishes far
#: inside ``timeout_s`` (math-verify takes ~1-50 ms per answer), large enough to amortise IPC.
CHUNK_SIZE = 16


@dataclass(frozen=True)
class Verdict:
    """``correct``: the check's answer (False unless ``outcome == "ok"``). ``final``: the same pair
    would get the same verdict again, so it may be cached (all but timeouts)."""

    correct: bool
    outcome: Literal["ok", "error", "timeout"] = "ok"
    detail: str = ""

    @property
    def final(self) -> bool:
        return self.outcome != "timeout"


def _run_chunk(check: CheckFn, pairs: Sequence[Pair]) -> list[tuple[bool, str | None]]:
    """Run ``check`` on each pair in a worker: (correct, error message or None) per pair."""
    out: list[tuple[bool, str | None]] = []
    for response, reference in pairs:
        try:
            out.append((bool(check(response, reference)), None))
        except Exception as exc:  # any check failure scores wrong; the caller counts it
            out.append((False, f"{type(exc).__name__}: {exc}"))
    return out


class VerifierPool:
    """Verifies (response, reference) pairs with ``check`` in ``workers`` spawned processes, each
    pair within ``timeout_s`` seconds (module docstring). ``check`` and ``warmup`` must be
    picklable top-level functions; ``name`` labels log lines."""

    def __init__(
        self, check: CheckFn, workers: int = 1, timeout_s: float = 5.0,
        warmup: Callable[[], object] | None = None, name: str = "verifier",
    ) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        for what, fn in (("check", check), ("warmup", warmup)):
            try:
                pickle.dumps(fn)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise ValueError(f"{name} {what} must be a picklable top-level function, got {fn!r}: {exc}") from exc
        self.check, self.workers, self.timeout_s = check, workers, float(timeout_s)
        self.warmup, self.name = warmup, name
        self.restarts = 0  # workers replaced so far (after a timeout or a crash)
        self._executor: ProcessPool | None = None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def run(self, pairs: Sequence[Pair]) -> dict[Pair, Verdict]:
        """A verdict for every distinct pair of ``pairs``: chunks first; the pairs of a chunk that
        timed out or lost its worker are retried one by one."""
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return {}
        pool = self._ensure()
        size = max(1, min(CHUNK_SIZE, math.ceil(len(pairs) / self.workers)))
        chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        out: dict[Pair, Verdict] = {}
        retry: list[Pair] = []
        for chunk, fut in [(c, pool.schedule(_run_chunk, (self.check, c), timeout=self.timeout_s)) for c in chunks]:
            results = self._result(fut, chunk)
            if isinstance(results, Verdict):
                if len(chunk) > 1:
                    retry.extend(chunk)
                else:
                    out[chunk[0]] = results
                continue
            for key, (ok, error) in zip(chunk, results, strict=True):
                if error is not None:
                    logger.debug("%s failed on %.80r (reference %.80r): %s", self.name, key[0], key[1], error)
                out[key] = Verdict(ok) if error is None else Verdict(False, "error", error)
        for key, fut in [(k, pool.schedule(_run_chunk, (self.check, [k]), timeout=self.timeout_s)) for k in retry]:
            results = self._result(fut, [key])
            if isinstance(results, Verdict):
                out[key] = results
            else:
                ok, error = results[0]
                out[key] = Verdict(ok) if error is None else Verdict(False, "error", error)
        return out

    def _result(self, fut: ProcessFuture, chunk: list[Pair]) -> list[tuple[bool, str | None]] | Verdict:
        """The chunk's results, or the verdict of its failure: its worker ran past ``timeout_s``
        (pebble kills and replaces that worker only) or died."""
        try:
            return fut.result()
        except FutureTimeout:
            self.restarts += 1
            if len(chunk) == 1:
                logger.warning("%s timed out on %.80r (reference %.80r); scored wrong", self.name, *chunk[0])
            return Verdict(False, "timeout", f"over {self.timeout_s:g} s")
        except ProcessExpired as exc:
            self.restarts += 1
            if len(chunk) == 1:
                logger.warning("%s crashed its worker on %.80r (reference %.80r)", self.name, *chunk[0])
            return Verdict(False, "error", f"worker died ({exc})")

    def close(self) -> None:
        """Stop the workers (a later ``run`` starts new ones)."""
        if self._executor is not None:
            kill_pool(self._executor)
            self._executor = None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_executor"] = None  # processes are not picklable; the copy starts its own
        return state

    def _ensure(self) -> ProcessPool:
        if self._executor is None:
            self._executor = start_pool(self.workers, self.warmup, self.check)
        return self._executor


def _init_worker(warmup: Callable[[], object] | None, check: CheckFn | None) -> None:
    # ``check`` arrives only to be unpickled here: that imports its module before any task
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if warmup is not None:
        warmup()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return True  # a no-op task: its result means a worker has started


def start_pool(workers: int, warmup: Callable[[], object] | None = None, check: CheckFn | None = None) -> ProcessPool:
    """``workers`` spawned processes (a pebble ProcessPool), each warmed up with ``warmup()`` and
    with ``check``'s module imported before it takes a task; raises a RuntimeError naming the
    likely cause when they do not start within POOL_START_TIMEOUT_S."""
    pool = ProcessPool(max_workers=workers, initializer=_init_worker, initargs=(warmup, check),
                       context=multiprocessing.get_context("spawn"))
    try:
        for fut in [pool.schedule(_ready) for _ in range(workers)]:
            fut.result(timeout=POOL_START_TIMEOUT_S)
    except Exception as exc:
        kill_pool(pool)
        raise RuntimeError(
            f"the verifier worker pool ({workers} spawned processes) failed to start within "
            f"{POOL_START_TIMEOUT_S:g} s: {exc!r}. Workers are spawned, so the main script must "
            f"start work under `if __name__ == '__main__':`"
        ) from exc
    return pool


def kill_pool(pool: ProcessPool) -> None:
    """Stop ``pool`` without waiting for hung tasks (pebble terminates its workers)."""
    pool.stop()
    pool.join(timeout=10.0)
