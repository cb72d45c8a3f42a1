"""A spawned process pool for a verifier, started warm and stopped without waiting on hung work.

Workers are spawned (fork is unsafe beside torch/vLLM threads). Each worker runs ``warmup`` once
(imports and first-call costs), then all wait on a barrier, so no task's timeout is spent on
start-up. A worker whose parent dies exits too (SIGKILL leaves the parent no time to stop it).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

#: How long a fresh pool may take to spawn and warm up (seconds).
POOL_START_TIMEOUT_S = 120.0


def _init_worker(barrier: Barrier, warmup: Callable[[str, str], object]) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    warmup("\\boxed{1}", "1")
    barrier.wait(timeout=POOL_START_TIMEOUT_S)


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> bool:
    return True  # a no-op task: its result means the pool has started


def start_pool(workers: int, warmup: Callable[[str, str], object]) -> ProcessPoolExecutor:
    """``workers`` spawned processes, each warmed up with ``warmup(response, gold)``; raises a
    RuntimeError naming the likely cause when they do not start within POOL_START_TIMEOUT_S."""
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(ctx.Barrier(workers), warmup))
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
