"""The rule-based math reward: +1 when math-verify judges the response equal to the gold, else -1.

docs/method.md section 2 (arXiv 2508.02260, released verl fork, ``reward_score/math_verify.py``): the gold
is wrapped as ``\\boxed{gold}`` and parsed with ``LatexExtractionConfig``; the whole response is
parsed with ``(ExprExtractionConfig, LatexExtractionConfig)`` and the two are compared by
``math_verify.verify``. So, as in the run that produced the paper, a response without
``\\boxed{}`` can still score correct when math-verify finds the answer elsewhere; the
"no boxed answer" defect rate is measured separately with :func:`extract_boxed`.

Conventions:
- Timeouts: math-verify's own timeouts use ``signal`` and fail off the main thread, so we call it
  with ``parsing_timeout=None, timeout_seconds=None`` inside a spawned process pool and enforce
  ``timeout_s`` ourselves. A timed-out sample scores wrong (counted, not cached); the hung pool
  is killed and restarted so later calls work. An exception inside the verifier scores wrong
  (counted, cached: it is deterministic).
- Batching: uncached, de-duplicated (response, gold) pairs go to the pool in chunks, one future
  per chunk, at most ``workers`` chunks in flight. A chunk gets ``timeout_s`` in all; when it runs
  out, its items are retried one by one, each with ``timeout_s``, so one hung sample never marks
  its neighbours wrong. Chunks killed only because the pool was restarted are re-sent intact.
- The pool is created on the first call (constructors have no side effects) and never pickled.
"""
from __future__ import annotations

import logging
import math
import pickle
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from rlvr_exp.rewards.pool import kill_pool, start_pool

logger = logging.getLogger(__name__)

VerifyFn = Callable[[str, str], bool]
Pair = tuple[str, str]  # (response, normalised gold)

#: Most pairs sent to a worker in one future. Small enough that a healthy chunk finishes far
#: inside ``timeout_s`` (math-verify takes ~1-50 ms per answer), large enough to amortise IPC.
CHUNK_SIZE = 16

_STAT_KEYS = ("samples", "cache_hits", "verified", "verify_timeouts", "verify_errors")
_STAT_KEYS += ("pool_restarts", "verify_time_s")


def normalize_gold(gold: str | float | int) -> str:
    """The gold answer as a string: integer-valued floats lose their ``.0`` (142.0 -> "142").

    Other floats use Python's shortest round-trip form (0.5 -> "0.5"); strings are stripped.
    """
    if isinstance(gold, bool):
        raise TypeError(f"gold must be str, int or float, got bool {gold!r}")
    if isinstance(gold, float):
        return str(int(gold)) if math.isfinite(gold) and gold.is_integer() else repr(gold)
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, str):
        return gold.strip()
    raise TypeError(f"gold must be str, int or float, got {type(gold).__name__} {gold!r}")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` whose braces balance, or None when there is none.

    A trailing ``\\boxed{`` cut off by the length limit (unbalanced) is passed over in favour of
    an earlier complete one. Only the braced form is recognised (``\\boxed 5`` is not).
    """
    marker = "\\boxed"
    end = len(text)
    while (start := text.rfind(marker, 0, end)) != -1:
        i = start + len(marker)
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1 : j]
        end = start
    return None


def math_verify_correct(response: str, gold: str) -> bool:
    """Whether math-verify judges ``response`` equal to ``\\boxed{gold}`` (no timeouts inside).

    The extraction targets are those of the released verl fork (see the module docstring).
    Raises ValueError when the gold itself cannot be parsed. Picklable: a top-level function.
    """
    from math_verify import parse, verify  # heavy import (sympy, antlr): done in the workers
    from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig

    gold_parsed = parse("\\boxed{" + gold + "}", (LatexExtractionConfig(),), parsing_timeout=None)
    if not gold_parsed:
        raise ValueError(f"math-verify could not parse the gold answer {gold!r}")
    pred = parse(response, (ExprExtractionConfig(), LatexExtractionConfig()), parsing_timeout=None)
    return bool(verify(gold_parsed, pred, timeout_seconds=None))


def _warm_up(response: str, gold: str) -> bool:
    """Pool start-up: load math-verify once, silencing its one-off warning that its own timeouts
    are off (this class enforces ``timeout_s``)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify_correct(response, gold)


def _verify_chunk(verify_fn: VerifyFn, pairs: Sequence[Pair]) -> list[tuple[bool, str | None]]:
    """Run ``verify_fn`` on each pair in a worker: (correct, error message or None) per pair."""
    out: list[tuple[bool, str | None]] = []
    for response, gold in pairs:
        try:
            out.append((bool(verify_fn(response, gold)), None))
        except Exception as exc:  # any verifier failure scores wrong; the caller counts it
            out.append((False, f"{type(exc).__name__}: {exc}"))
    return out


@dataclass(frozen=True)
class _Job:
    """Pairs sent to one worker as one future. ``solo``: run with no other job in flight."""

    pairs: list[Pair]
    solo: bool = False


_Flight = tuple[_Job, float]  # a submitted job and its deadline (time.monotonic seconds)


class MathVerifyReward:
    """Scores responses against golds with math-verify: ``correct_reward`` or ``wrong_reward``.

    Returns ``(rewards [B] float32, correct [B] bool)``. See the module docstring for the timeout,
    batching and caching rules. ``verify_fn(response, gold) -> bool`` replaces the math-verify call
    (tests); it must be a picklable top-level function. ``workers`` processes verify in parallel.
    """

    def __init__(
        self,
        correct_reward: float = 1.0,
        wrong_reward: float = -1.0,
        timeout_s: float = 5.0,
        workers: int = 1,
        cache_size: int = 100_000,
        verify_fn: VerifyFn | None = None,
    ) -> None:
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 disables it), got {cache_size!r}")
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.timeout_s = float(timeout_s)
        self.workers = workers
        self.cache_size = cache_size
        self.verify_fn: VerifyFn = math_verify_correct if verify_fn is None else verify_fn
        try:
            pickle.dumps(self.verify_fn)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            msg = f"verify_fn must be a picklable top-level function, got {self.verify_fn!r}"
            raise ValueError(f"{msg}: {exc}") from exc
        self._pool: ProcessPoolExecutor | None = None
        self._cache: OrderedDict[Pair, bool] = OrderedDict()
        self._counts: dict[str, float] = dict.fromkeys(_STAT_KEYS, 0.0)

    # -- public API ---------------------------------------------------------------------------

    def __call__(
        self, responses: Sequence[str], golds: Sequence[str | float | int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rewards [B] float32 and correct [B] bool for ``responses[i]`` against ``golds[i]``."""
        if len(responses) != len(golds):
            raise ValueError(f"got {len(responses)} responses but {len(golds)} golds")
        keys = [(str(r), normalize_gold(g)) for r, g in zip(responses, golds)]
        known: dict[Pair, bool] = {}
        todo: list[Pair] = []
        for key in dict.fromkeys(keys):  # unique, in first-seen order
            hit = self._cache_get(key)
            if hit is None:
                todo.append(key)
            else:
                known[key] = hit
        started = time.perf_counter()
        if todo:
            known.update(self._verify_pairs(todo))
        self._counts["verify_time_s"] += time.perf_counter() - started
        self._counts["samples"] += len(keys)
        self._counts["cache_hits"] += len(keys) - len(todo)
        self._counts["verified"] += len(todo)
        correct = torch.tensor([known[k] for k in keys], dtype=torch.bool)
        rewards = torch.where(
            correct,
            torch.tensor(self.correct_reward, dtype=torch.float32),
            torch.tensor(self.wrong_reward, dtype=torch.float32),
        )
        return rewards, correct

    def stats(self) -> dict[str, float]:
        """Counters since the last read, as ``reward/<name>`` (reading resets them): samples,
        cache_hits (samples answered without a verifier run: cached or repeated in the batch),
        verified, verify_timeouts, verify_errors, pool_restarts, verify_time_s (wall time)."""
        out = {f"reward/{k}": float(v) for k, v in self._counts.items()}
        self._counts = dict.fromkeys(_STAT_KEYS, 0.0)
        return out

    def close(self) -> None:
        """Stop the worker pool (a later call starts a new one)."""
        if self._pool is not None:
            kill_pool(self._pool)
            self._pool = None

    def __enter__(self) -> MathVerifyReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state["_pool"] = None  # processes are not picklable; the copy starts its own
        return state

    # -- cache --------------------------------------------------------------------------------

    def _cache_get(self, key: Pair) -> bool | None:
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
        return hit

    def _cache_put(self, key: Pair, value: bool) -> None:
        if self.cache_size == 0:
            return
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- pool ---------------------------------------------------------------------------------

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = start_pool(self.workers, warmup=_warm_up)
        return self._pool

    def _restart_pool(self) -> ProcessPoolExecutor:
        self.close()
        self._counts["pool_restarts"] += 1
        return self._ensure_pool()

    # -- scheduling ---------------------------------------------------------------------------

    def _verify_pairs(self, pairs: list[Pair]) -> dict[Pair, bool]:
        """Verify unique uncached ``pairs`` in the pool; fills the cache; wrong on timeout/error."""
        size = max(1, min(CHUNK_SIZE, math.ceil(len(pairs) / self.workers)))
        queue = deque(_Job(pairs[i : i + size]) for i in range(0, len(pairs), size))
        inflight: dict[Future, _Flight] = {}
        out: dict[Pair, bool] = {}
        pool = self._ensure_pool()
        while queue or inflight:
            if not self._dispatch(pool, queue, inflight):  # a worker died: all in flight suspect
                for job, _ in inflight.values():
                    self._on_broken(job, queue, out, alone=False)
            elif self._collect(queue, inflight, out):
                # Restarting kills every in-flight job; those did nothing wrong: re-send intact.
                queue.extendleft(job for job, _ in inflight.values())
            else:
                continue
            inflight.clear()
            pool = self._restart_pool()
        return out

    def _dispatch(
        self, pool: ProcessPoolExecutor, queue: deque[_Job], inflight: dict[Future, _Flight]
    ) -> bool:
        """Submit queued jobs while a worker is free, so every job starts at once and its
        deadline is its own run time. A solo job runs with nothing beside it. Returns False when
        the pool refuses work (a worker died since the last look): the job stays queued."""
        while queue and len(inflight) < self.workers:
            if any(job.solo for job, _ in inflight.values()) or (queue[0].solo and inflight):
                break
            try:
                fut = pool.submit(_verify_chunk, self.verify_fn, queue[0].pairs)
            except BrokenProcessPool:
                return False
            inflight[fut] = (queue.popleft(), time.monotonic() + self.timeout_s)
        return True

    def _collect(
        self, queue: deque[_Job], inflight: dict[Future, _Flight], out: dict[Pair, bool]
    ) -> bool:
        """Wait for the first finished or expired job; record results, re-queue failures.
        Returns True when the pool must be restarted (a job hung or a worker died)."""
        alone = len(inflight) == 1  # a lone job that breaks the pool is the culprit
        nearest = min(deadline for _, deadline in inflight.values())
        timeout = max(0.0, nearest - time.monotonic())
        done, _ = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
        restart = False
        for fut in done:
            job, _ = inflight.pop(fut)
            try:
                self._record(job.pairs, fut.result(), out)
            except BrokenProcessPool:
                restart = True
                self._on_broken(job, queue, out, alone)
        now = time.monotonic()
        for fut in [f for f, (_, deadline) in inflight.items() if deadline <= now]:
            restart = True
            self._on_timeout(inflight.pop(fut)[0], queue, out)
        return restart

    def _record(
        self, pairs: list[Pair], results: list[tuple[bool, str | None]], out: dict[Pair, bool]
    ) -> None:
        for key, (ok, error) in zip(pairs, results, strict=True):
            if error is not None:
                self._counts["verify_errors"] += 1
                logger.debug("math-verify failed on %.80r (gold %r): %s", key[0], key[1], error)
            out[key] = ok
            self._cache_put(key, ok)

    def _on_timeout(self, job: _Job, queue: deque[_Job], out: dict[Pair, bool]) -> None:
        """A job ran past ``timeout_s`` on its own worker: retry a chunk's items one by one; a
        single item scores wrong (counted, not cached: load can make a timeout transient)."""
        if len(job.pairs) > 1:
            queue.extend(_Job([key]) for key in job.pairs)
            return
        key = job.pairs[0]
        self._counts["verify_timeouts"] += 1
        logger.warning("math-verify timed out on %.80r (gold %r); scored wrong", key[0], key[1])
        out[key] = False

    def _on_broken(self, job: _Job, queue: deque[_Job], out: dict[Pair, bool], alone: bool) -> None:
        """A worker died while ``job`` was in flight. Every in-flight job sees that, so the
        culprit is known only once an item breaks the pool running alone (solo): that item
        scores wrong (counted as an error, cached: a crash is deterministic)."""
        if len(job.pairs) > 1:
            queue.extend(_Job([key]) for key in job.pairs)
        elif not (job.solo or alone):
            queue.append(_Job(job.pairs, solo=True))
        else:
            key = job.pairs[0]
            self._counts["verify_errors"] += 1
            logger.warning("math-verify crashed its worker on %.80r (gold %r)", key[0], key[1])
            out[key] = False
            self._cache_put(key, False)
