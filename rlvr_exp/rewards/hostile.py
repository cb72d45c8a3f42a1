"""Responses a policy under RL may emit to break its verifier, each with the verdict it must get.

Used by tests/unit/test_hostile_rewards.py (every verdict, the pool works afterwards) and by
``python -m rlvr_exp.bench.hostile_rewards`` (how long the batch takes against ``timeout_s``).
The gold of every case is ``GOLD``.
"""
from __future__ import annotations

GOLD = "42"


def hostile_cases() -> list[tuple[str, str, bool]]:
    """(name, response, correct) triples: wrong unless the response really answers 42. Left out
    because their verdict depends on the machine's speed (math-verify finishes them near the
    timeout, else they time out and score wrong): 42 inside 3,000 nested parentheses, and 3,000
    wrong boxed answers followed by a right one."""
    return [
        ("power_tower", "\\boxed{9^{9^{9^{9^{9^{9}}}}}}", False),
        ("power_tower_plain", "The answer is 10**10**10**10**10", False),
        ("huge_factorial", "\\boxed{(10^{10})!}", False),
        ("factorial_chain", "\\boxed{100000!!!!}", False),
        ("huge_integer", "\\boxed{" + "9" * 20_000 + "}", False),
        ("long_text", "lorem ipsum dolor " * 5_600, False),  # ~100,000 characters
        ("long_text_then_answer", "x " * 50_000 + "\\boxed{42}", True),
        ("unbalanced_open", "\\boxed{" * 500 + "42", False),
        ("unbalanced_close", "}" * 5_000 + "\\boxed{42", False),
        ("deep_nesting", "\\boxed{" + "\\frac{1}{" * 400 + "1" + "}" * 400 + "}", False),
        ("control_chars", "\\boxed{4\x002\x07\x1b[31m}\x00\x01\x02", False),
        ("many_boxed_wrong", "\\boxed{1} " * 3_000, False),
        ("huge_matrix", "\\boxed{\\begin{pmatrix}" + " & ".join(["x"] * 3_000) + "\\end{pmatrix}}", False),
        ("integral_bomb", "\\boxed{\\int_0^{10^{100}} e^{x^{x^{x}}} dx}", False),
        ("right", "so \\boxed{42}", True),
    ]
