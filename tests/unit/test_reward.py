"""MathVerifyReward: real math-verify verdicts, the cache, timeouts and errors in the workers."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlvr_exp.answers import extract_boxed, normalize_gold
from rlvr_exp.rewards.math_verify import MathVerifyReward, pair_digest

CONF = Path(__file__).resolve().parents[2] / "conf" / "reward" / "math_verify.yaml"
HANG = "\\boxed{hang}"
POLAR = "\\left( 3, \\frac{\\pi}{2} \\right)"  # a MATH-500 gold


def hang_on_marker(response: str, gold: str) -> bool:
    """Injected verifier: sleeps (as a pathological sympy call would) on HANG only."""
    if response == HANG:
        time.sleep(100)
    return response == "\\boxed{" + gold + "}"


def raise_on_marker(response: str, gold: str) -> bool:
    if response == "boom":
        raise RuntimeError("verifier exploded")
    return response == "\\boxed{" + gold + "}"


def crash_on_marker(response: str, gold: str) -> bool:
    if response == "crash":
        os._exit(3)  # a worker dying outright (segfault, OOM kill)
    return response == "\\boxed{" + gold + "}"


@pytest.fixture(scope="module")
def real() -> MathVerifyReward:
    reward = MathVerifyReward(timeout_s=10.0)
    yield reward
    reward.close()


def test_real_math_verify_verdicts(real: MathVerifyReward) -> None:
    cases = [
        ("So the answer is \\boxed{4}.", "4", True),
        ("\\boxed{5}", 4, False),
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("I have no idea how to solve this.", "4", False),  # no answer at all
        ("\\boxed{142}", 142.0, True),  # AMC float gold
        ("\\boxed{142}", "142.0", True),
        ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", POLAR, True),
        ("\\boxed{(3, \\pi)}", POLAR, False),
    ]
    rewards, correct = real([c[0] for c in cases], [c[1] for c in cases])
    expected = torch.tensor([c[2] for c in cases])
    assert correct.dtype == torch.bool and rewards.dtype == torch.float32
    assert torch.equal(correct, expected)
    assert torch.equal(rewards, torch.where(expected, 1.0, -1.0))
    stats = real.stats()
    assert stats["reward/verify_timeouts"] == 0 and stats["reward/verify_errors"] == 0


def test_unboxed_answer_follows_released_verifier(real: MathVerifyReward) -> None:
    # The released verifier parses the whole response, so an unboxed final number still counts;
    # the format defect is measured by extract_boxed, not by the reward.
    _, correct = real(["2 + 2 = 4"], ["4"])
    assert correct.tolist() == [True]
    assert extract_boxed("2 + 2 = 4") is None


def test_cache_hits_counted_and_stats_reset(real: MathVerifyReward) -> None:
    real.stats()
    responses, golds = ["\\boxed{11}", "\\boxed{12}", "\\boxed{11}"], ["11", "11", "11"]
    _, first = real(responses, golds)
    stats = real.stats()
    assert stats["reward/verified"] == 2 and stats["reward/cache_hits"] == 1  # in-batch repeat
    _, second = real(responses, golds)
    stats = real.stats()
    assert stats["reward/verified"] == 0 and stats["reward/cache_hits"] == 3
    assert first.tolist() == second.tolist() == [True, False, True]
    assert real.stats()["reward/cache_hits"] == 0  # reading resets


def test_hung_verifier_times_out_alone_and_pool_recovers() -> None:
    reward = MathVerifyReward(timeout_s=0.5, verify_fn=hang_on_marker)
    try:
        responses = ["\\boxed{1}", HANG, "\\boxed{3}", "\\boxed{9}"]
        rewards, correct = reward(responses, ["1", "2", "3", "4"])
        assert correct.tolist() == [True, False, True, False]
        assert rewards.tolist() == [1.0, -1.0, 1.0, -1.0]
        stats = reward.stats()
        assert stats["reward/verify_timeouts"] == 1
        assert stats["reward/pool_restarts"] >= 1
        _, later = reward(["\\boxed{5}", "\\boxed{6}"], ["5", "7"])  # new pool still works
        assert later.tolist() == [True, False]
    finally:
        reward.close()


def test_verifier_exception_counted_as_error() -> None:
    with MathVerifyReward(verify_fn=raise_on_marker) as reward:
        rewards, correct = reward(["boom", "\\boxed{2}"], ["1", "2"])
        assert correct.tolist() == [False, True]
        assert rewards.tolist() == [-1.0, 1.0]
        assert reward.stats()["reward/verify_errors"] == 1


def test_worker_crash_blames_only_the_culprit() -> None:
    with MathVerifyReward(verify_fn=crash_on_marker) as reward:
        _, correct = reward(["\\boxed{1}", "crash", "\\boxed{3}"], ["1", "2", "3"])
        assert correct.tolist() == [True, False, True]
        assert reward.stats()["reward/verify_errors"] == 1
        _, later = reward(["\\boxed{4}"], ["4"])
        assert later.tolist() == [True]


def test_picklable_without_pool_and_constructor_has_no_pool(real: MathVerifyReward) -> None:
    fresh = MathVerifyReward()
    assert not fresh.pool.started  # started lazily, on the first call
    real(["\\boxed{1}"], ["1"])
    copy = pickle.loads(pickle.dumps(real))
    assert real.pool.started and not copy.pool.started and copy.timeout_s == real.timeout_s


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="picklable"):
        MathVerifyReward(verify_fn=lambda r, g: True)
    with pytest.raises(ValueError, match="timeout_s"):
        MathVerifyReward(timeout_s=0.0)
    with pytest.raises(ValueError, match="workers"):
        MathVerifyReward(workers=0)
    with pytest.raises(ValueError, match="2 responses but 1 golds"):
        MathVerifyReward()(["a", "b"], ["1"])


def test_lru_cache_evicts_oldest() -> None:
    reward = MathVerifyReward(cache_size=2)
    for key in [("a", "1"), ("b", "1"), ("c", "1")]:
        reward._cache_put(key, True)
    assert list(reward._cache) == [pair_digest(("b", "1")), pair_digest(("c", "1"))]
    assert all(isinstance(k, bytes) and len(k) == 16 for k in reward._cache)  # no response text kept


def test_config_composes_to_the_defaults() -> None:
    reward = instantiate(OmegaConf.load(CONF))
    assert isinstance(reward, MathVerifyReward)
    assert (reward.correct_reward, reward.wrong_reward, reward.timeout_s) == (1.0, -1.0, 5.0)
    assert not reward.pool.started


@pytest.mark.parametrize(
    ("gold", "expected"),
    [(142.0, "142"), (0.5, "0.5"), (-3.0, "-3"), (7, "7"), (" 12 ", "12"), ("\\pi", "\\pi")],
)
def test_normalize_gold(gold: str | float | int, expected: str) -> None:
    assert normalize_gold(gold) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a \\boxed{1} then \\boxed{\\frac{1}{2}} end", "\\frac{1}{2}"),
        ("\\boxed {42}", "42"),
        ("no box here", None),
        ("\\boxed{3} and a cut-off \\boxed{\\frac{1}{", "3"),  # unbalanced last one skipped
        ("\\boxed{}", ""),
        ("\\boxed 5", None),
    ],
)
def test_extract_boxed(text: str, expected: str | None) -> None:
    assert extract_boxed(text) == expected
