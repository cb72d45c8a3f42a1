"""A verifier-agnostic process pool: runs a picklable ``check(response, reference) -> bool`` on
many pairs, each under its own timeout, in spawned workers that a hung or crashed check cannot take
down with it. Math-verify is one user (:mod:`rlvr_exp.rewards.math_verify`); a code-execution
verifier supplies its own check function and nothing else.

Interface: ``VerifierPool(check, workers, timeout_s, warmup, name)``, ``run(pairs) -> {pair:
Verdict}``, ``restarts`` (a counter), ``close()``. Nothing starts in the constructor; the
workers start on the first ``run`` and a pickled copy holds none.

Conventions:
- Workers are spawned (fork is unsafe beside torch/vLLM threads). Each imports ``check``'s
  module and runs ``warmup()`` once (first-call costs), then all wait on a barrier, so no pair's
  timeout is spent on start-up. A worker whose parent dies exits too (SIGKILL leaves the parent no time to stop it).
- Batching: pairs go out in chunks, one future per chunk, at most ``workers`` chunks in flight.
  A chunk gets ``timeout_s`` in all; when it runs out, its pairs are retried one by one, each
  with ``timeout_s``, so one hung pair never marks its neighbours wrong. A pair that still times
  out is wrong with outcome ``timeout`` (not final: load can make it transient). The hung pool is
  killed and restarted; chunks killed only because of the restart are re-sent intact.
- An exception inside ``check`` makes that pair wrong with outcome ``error`` (final: it is
  deterministic). A worker that dies outright is traced to its pair by re-running suspects alone
  (``solo``); the culprit is wrong with outcome ``error``.
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

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


@dataclass(frozen=True)
class _Job:
    """Pairs sent to one worker as one future. ``solo``: run with no other job in flight."""

    pairs: list[Pair]
    solo: bool = False


_Flight = tuple[_Job, float]  # a submitted job and its deadline (time.monotonic seconds)


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
        self.restarts = 0  # pool restarts so far (after a timeout or a dead worker)
        self._executor: ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def run(self, pairs: Sequence[Pair]) -> dict[Pair, Verdict]:
        """A verdict for every distinct pair of ``pairs``."""
        pairs = list(dict.fromkeys(pairs))
        if not pairs:
            return {}
        size = max(1, min(CHUNK_SIZE, math.ceil(len(pairs) / self.workers)))
        queue = deque(_Job(pairs[i : i + size]) for i in range(0, len(pairs), size))
        inflight: dict[Future, _Flight] = {}
        out: dict[Pair, Verdict] = {}
        executor = self._ensure()
        while queue or inflight:
            if not self._dispatch(executor, queue, inflight):  # a worker died: all in flight suspect
                for job, _ in inflight.values():
                    self._on_broken(job, queue, out, alone=False)
            elif self._collect(queue, inflight, out):
                # Restarting kills every in-flight job; those did nothing wrong: re-send intact.
                queue.extendleft(job for job, _ in inflight.values())
            else:
                continue
            inflight.clear()
            executor = self._restart()
        return out

    def close(self) -> None:
        """Stop the workers (a later ``run`` starts new ones)."""
        if self._executor is not None:
            kill_pool(self._executor)
            self._executor = None

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_executor"] = None  # processes are not picklable; the copy starts its own
        return state

    # -- lifecycle ----------------------------------------------------------------------------

    def _ensure(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = start_pool(self.workers, self.warmup, self.check)
        return self._executor

    def _restart(self) -> ProcessPoolExecutor:
        self.close()
        self.restarts += 1
        return self._ensure()

    # -- scheduling ---------------------------------------------------------------------------

    def _dispatch(self, executor: ProcessPoolExecutor, queue: deque[_Job], inflight: dict[Future, _Flight]) -> bool:
        """Submit queued jobs while a worker is free, so every job starts at once and its
        deadline is its own run time. A solo job runs with nothing beside it. Returns False when
        the pool refuses work (a worker died since the last look): the job stays queued."""
        while queue and len(inflight) < self.workers:
            if any(job.solo for job, _ in inflight.values()) or (queue[0].solo and inflight):
                break
            try:
                fut = executor.submit(_run_chunk, self.check, queue[0].pairs)
            except BrokenProcessPool:
                return False
            inflight[fut] = (queue.popleft(), time.monotonic() + self.timeout_s)
        return True

    def _collect(self, queue: deque[_Job], inflight: dict[Future, _Flight], out: dict[Pair, Verdict]) -> bool:
        """Wait for the first finished or expired job; record results, re-queue failures.
        Returns True when the pool must be restarted (a job hung or a worker died)."""
        alone = len(inflight) == 1  # a lone job that breaks the pool is the culprit
        nearest = min(deadline for _, deadline in inflight.values())
        done, _ = wait(inflight, timeout=max(0.0, nearest - time.monotonic()), return_when=FIRST_COMPLETED)
        restart = False
        for fut in done:
            job, _ = inflight.pop(fut)
            try:
                results = fut.result()
            except BrokenProcessPool:
                restart = True
                self._on_broken(job, queue, out, alone)
                continue
            for key, (ok, error) in zip(job.pairs, results, strict=True):
                if error is not None:
                    logger.debug("%s failed on %.80r (reference %.80r): %s", self.name, key[0], key[1], error)
                out[key] = Verdict(ok) if error is None else Verdict(False, "error", error)
        now = time.monotonic()
        for fut in [f for f, (_, deadline) in inflight.items() if deadline <= now]:
            restart = True
            self._on_timeout(inflight.pop(fut)[0], queue, out)
        return restart

    def _on_timeout(self, job: _Job, queue: deque[_Job], out: dict[Pair, Verdict]) -> None:
        """A job ran past ``timeout_s`` on its own worker: retry a chunk's pairs one by one; a
        single pair scores wrong (outcome ``timeout``)."""
        if len(job.pairs) > 1:
            queue.extend(_Job([key]) for key in job.pairs)
            return
        key = job.pairs[0]
        logger.warning("%s timed out on %.80r (reference %.80r); scored wrong", self.name, key[0], key[1])
        out[key] = Verdict(False, "timeout", f"over {self.timeout_s:g} s")

    def _on_broken(self, job: _Job, queue: deque[_Job], out: dict[Pair, Verdict], alone: bool) -> None:
        """A worker died while ``job`` was in flight. Every in-flight job sees that, so the
        culprit is known only once a pair breaks the pool running alone (solo): that pair
        scores wrong (outcome ``error``: a crash is deterministic)."""
        if len(job.pairs) > 1:
            queue.extend(_Job([key]) for key in job.pairs)
        elif not (job.solo or alone):
            queue.append(_Job(job.pairs, solo=True))
        else:
            key = job.pairs[0]
            logger.warning("%s crashed its worker on %.80r (reference %.80r)", self.name, key[0], key[1])
            out[key] = Verdict(False, "error", "worker died")


def _init_worker(barrier: Barrier, warmup: Callable[[], object] | None, check: CheckFn | None) -> None:
    # ``check`` arrives only to be unpickled here: that imports its module before the barrier
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    if warmup is not None:
        warmup()
    barrier.wait(timeout=POOL_START_TIMEOUT_S)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return True  # a no-op task: its result means the pool has started


def start_pool(
    workers: int, warmup: Callable[[], object] | None = None, check: CheckFn | None = None
) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each warmed up with ``warmup()`` and with ``check``'s module
    imported; raises a RuntimeError naming the likely cause when they do not start within
    POOL_START_TIMEOUT_S."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(ctx.Barrier(workers), warmup, check))
    try:
        for fut in [pool.submit(_ready) for _ in range(workers)]:
            fut.result(timeout=POOL_START_TIMEOUT_S)
    except Exception as exc:
        kill_pool(pool)
        raise RuntimeError(
            f"the verifier worker pool ({workers} spawned processes) failed to start within "
            f"{POOL_START_TIMEOUT_S:g} s: {exc!r}. Workers are spawned, so the main script must "
            f"start work under `if __name__ == '__main__':`"
        ) from exc
    return pool


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting for hung tasks: terminate its worker processes, and
    kill those still alive 2 s later."""
    # Before Python 3.14 (terminate_workers) there is no public way to stop a running task,
    # so we read the executor's private process table.
    procs = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10.0)
