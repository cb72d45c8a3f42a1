"""A hostile policy: every hostile response scores wrong (or right where it is right), the batch
ends (timeouts cost their own worker only) and the pool works afterwards. Slow: ~75 s on 2 busy
cores (``python -m pytest -m slow tests/unit/test_hostile_rewards.py``); the batch's wall time is
printed by ``python -m rlvr_exp.bench.hostile_rewards``."""
from __future__ import annotations

import pytest

from rlvr_exp.rewards.hostile import GOLD, hostile_cases
from rlvr_exp.rewards.math_verify import MathVerifyReward

pytestmark = pytest.mark.slow


def test_hostile_responses_get_their_verdicts_and_the_pool_survives():
    cases = hostile_cases()
    with MathVerifyReward(timeout_s=2.0, workers=2, cache_size=0) as reward:
        rewards, correct = reward([r for _, r, _ in cases], [GOLD] * len(cases))
        stats = reward.stats()
        assert {name: got for (name, _, _), got in zip(cases, correct.tolist())} == {
            name: expected for name, _, expected in cases}
        assert rewards.tolist() == [1.0 if expected else -1.0 for _, _, expected in cases]
        assert stats["reward/verify_timeouts"] >= 1  # some of them do hang the verifier
        _, after = reward(["\\boxed{2}", "\\boxed{3}"], ["2", "4"])
        assert after.tolist() == [True, False]
