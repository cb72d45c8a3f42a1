"""How long math-verify takes on the hostile responses of rlvr_exp/rewards/hostile.py, and
whether every verdict is right: ``python -m rlvr_exp.bench.hostile_rewards [timeout_s] [workers]``.

Prints one line per wrong verdict, then the batch wall time, timeouts, errors, pool restarts and
the time of a plain batch afterwards (the pool must work). Defaults: timeout_s 2, 2 workers.
"""
from __future__ import annotations

import sys
import time

from rlvr_exp.rewards.hostile import GOLD, hostile_cases
from rlvr_exp.rewards.math_verify import MathVerifyReward


def main(timeout_s: float = 2.0, workers: int = 2) -> None:
    cases = hostile_cases()
    with MathVerifyReward(timeout_s=timeout_s, workers=workers, cache_size=0) as reward:
        reward(["\\boxed{1}"], ["1"])  # start the pool outside the measurement
        reward.stats()
        start = time.perf_counter()
        _, correct = reward([r for _, r, _ in cases], [GOLD] * len(cases))
        wall = time.perf_counter() - start
        stats = reward.stats()
        t0 = time.perf_counter()
        _, after = reward(["\\boxed{2}", "\\boxed{3}"], ["2", "4"])
        after_s = time.perf_counter() - t0
    for (name, _, expected), got in zip(cases, correct.tolist()):
        if got != expected:
            print(f"WRONG VERDICT {name}: got {got}, expected {expected}")
    print(f"{len(cases)} hostile responses, timeout_s={timeout_s:g}, workers={workers}: {wall:.1f} s; "
          f"timeouts {stats['reward/verify_timeouts']:.0f}, errors {stats['reward/verify_errors']:.0f}, "
          f"pool restarts {stats['reward/pool_restarts']:.0f}; a plain batch afterwards: "
          f"{after.tolist()} in {after_s:.2f} s")


if __name__ == "__main__":
    main(*(float(a) if i == 0 else int(a) for i, a in enumerate(sys.argv[1:])))
