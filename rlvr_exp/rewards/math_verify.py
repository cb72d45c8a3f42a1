"""The rule-based math reward: +1 when math-verify judges the response equal to the gold, else -1.

docs/method.md section 2 (arXiv 2508.02260, released verl fork, ``reward_score/math_verify.py``): the gold
is wrapped as ``\\boxed{gold}`` and parsed with ``LatexExtractionConfig``; the whole response is
parsed with ``(ExprExtractionConfig, LatexExtractionConfig)`` and the two are compared by
``math_verify.verify``. So, as in the run that produced the paper, a response without
``\\boxed{}`` can still score correct when math-verify finds the answer elsewhere; the
"no boxed answer" defect rate is measured separately (:mod:`rlvr_exp.answers`, the task's format).

Conventions:
- Timeouts: math-verify's own timeouts use ``signal`` and fail off the main thread, so we call it
  with ``parsing_timeout=None, timeout_seconds=None`` inside a :class:`rlvr_exp.rewards.pool.VerifierPool`
  (spawned workers, chunked, per-answer ``timeout_s``, hung or crashed workers replaced; its
  docstring has the rules). A timed-out sample scores wrong (counted, not cached); an exception
  inside the verifier or a crashed worker scores wrong (counted, cached: it is deterministic).
- Caching: verdicts of (response, normalised gold) pairs are kept in an LRU cache of at most
  ``cache_size`` entries, keyed by a 16-byte BLAKE2b digest of the pair, not its text, so an
  entry costs the same for any response length: measured 154 bytes per entry (tracemalloc, 8,000-character
  responses), so the default 100,000 entries hold at most ~15 MB (the texts themselves, at
  8K-token responses, would be gigabytes). A batch sends only its uncached, de-duplicated pairs to the pool.
- The pool starts on the first call (constructors have no side effects) and is never pickled.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import torch

from rlvr_exp.answers import normalize_gold
from rlvr_exp.rewards.pool import CheckFn, Pair, VerifierPool

_STAT_KEYS = ("samples", "cache_hits", "verified", "verify_timeouts", "verify_errors")
_STAT_KEYS += ("pool_restarts", "verify_time_s")


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


def pair_digest(pair: Pair) -> bytes:
    """16 bytes that stand for a (response, gold) pair in the cache (BLAKE2b; the NUL separator
    keeps ("ab", "c") and ("a", "bc") apart)."""
    return hashlib.blake2b(f"{pair[0]}\0{pair[1]}".encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _warm_up() -> bool:
    """Pool start-up: load math-verify once, silencing its one-off warning that its own timeouts
    are off (the pool enforces ``timeout_s``)."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify_correct("\\boxed{1}", "1")


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
        verify_fn: CheckFn | None = None,
    ) -> None:
        if not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 disables it), got {cache_size!r}")
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.cache_size = cache_size
        check = math_verify_correct if verify_fn is None else verify_fn
        # math-verify needs its warm-up; an injected verify_fn (tests) starts cold
        self.pool = VerifierPool(check, workers, timeout_s, _warm_up if verify_fn is None else None, "math-verify")
        self._cache: OrderedDict[bytes, bool] = OrderedDict()  # digest of a pair -> verdict
        self._counts: dict[str, float] = dict.fromkeys(_STAT_KEYS, 0.0)

    @property
    def timeout_s(self) -> float:
        return self.pool.timeout_s

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
            known.update(self._verify(todo))
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
        self.pool.close()

    def __enter__(self) -> MathVerifyReward:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- verification and cache ---------------------------------------------------------------

    def _verify(self, pairs: list[Pair]) -> dict[Pair, bool]:
        """Verify unique uncached ``pairs`` in the pool; counts failures, caches final verdicts."""
        restarts = self.pool.restarts
        verdicts = self.pool.run(pairs)
        self._counts["pool_restarts"] += self.pool.restarts - restarts
        for key, verdict in verdicts.items():
            self._counts["verify_errors"] += verdict.outcome == "error"
            self._counts["verify_timeouts"] += verdict.outcome == "timeout"
            if verdict.final:
                self._cache_put(key, verdict.correct)
        return {key: verdict.correct for key, verdict in verdicts.items()}

    def _cache_get(self, key: Pair) -> bool | None:
        digest = pair_digest(key)
        hit = self._cache.get(digest)
        if hit is not None:
            self._cache.move_to_end(digest)
        return hit

    def _cache_put(self, key: Pair, value: bool) -> None:
        if self.cache_size == 0:
            return
        digest = pair_digest(key)
        self._cache[digest] = value
        self._cache.move_to_end(digest)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
