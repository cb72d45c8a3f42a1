"""Token roles of a chain-arithmetic response, and the role table, by hand."""
from __future__ import annotations

from rlvr_exp.analysis.chain_roles import role_table, roles


def test_roles_of_a_chain_by_hand():
    text = "47+8=55, 55+6=61. \\boxed{61}"
    got = roles(list(text) + ["</s>"])
    total, operand, partial = "running-total digit (before +)", "next-operand digit (after +)", "partial-sum digit (after =)"
    assert got[:8] == [total, total, "'+'", operand, "'='", partial, partial, "',' (go on / stop)"]
    assert got[8:17] == ["space", total, total, "'+'", operand, "'='", partial, partial, "'.' (go on / stop)"]
    assert got[17] == "space" and set(got[18:]) == {"boxed answer"} and len(got) == len(text) + 1


def test_role_table_by_hand():
    # entropies 0..8 over "1+2=3. \b": the top-20% threshold is the 80th percentile, 0.8 * 8 = 6.4, so
    # the tokens with 7 and 8 (the boxed backslash and b) are the top two; entropy mass 36
    table = role_table([(list("1+2=3. \\b"), [0, 1, 2, 3, 4, 5, 6, 7, 8])])
    assert "1 responses, 9 tokens; top-20% threshold 6.400 nats" in table
    assert "| boxed answer | 2 | 7.500 | 100.0% | 41.7% |" in table   # 7 + 8 = 15 of 36
    assert "| space | 1 | 6.000 | 0.0% | 16.7% |" in table   # 6 of 36, below 6.4
    assert "| partial-sum digit (after =) | 1 | 4.000 | 0.0% | 11.1% |" in table
