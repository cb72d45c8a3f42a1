"""Evaluator: several named validation sets log under their names; val/accuracy is their mean."""
from __future__ import annotations

import pytest

from rlvr_exp.answers import BoxedAnswer
from rlvr_exp.evaluate import Evaluator
from rlvr_exp.rewards.math_verify import MathVerifyReward
from rlvr_exp.rollout.base import SamplingParams
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder


class AnswersTwo:
    """A rollout double: every sample answers \\boxed{2} (the evaluator's logic is under test)."""

    def __init__(self, tokenizer):
        self.ids = tokenizer("\\boxed{2}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    def generate(self, prompts, sampling):
        return [list(self.ids) for _ in prompts for _ in range(sampling.n)]


BOXED = BoxedAnswer()


@pytest.fixture
def evaluate(char_tokenizer):
    def run(benchmarks, answer_format=BOXED):
        with MathVerifyReward(timeout_s=10.0) as reward:
            ev = Evaluator(benchmarks, AnswersTwo(char_tokenizer), reward, PromptEncoder(char_tokenizer, False, 16),
                           char_tokenizer, SamplingParams(n=2, temperature=0.6, top_p=0.95, max_new_tokens=8), seed=0,
                           answer_format=answer_format)
            return ev(step=0)

    return run


def test_several_sets_log_by_name_and_average_unweighted(evaluate):
    m = evaluate({"a": [Problem("1+1=", "2"), Problem("2+2=", "4")], "b": [Problem("3+3=", "6")]})
    assert m["val/a/accuracy"] == 0.5  # 2 of 4 samples right
    assert m["val/b/accuracy"] == 0.0
    assert m["val/a/pass@2"] == 0.5 and m["val/a/maj@2"] == 0.5
    assert m["val/accuracy"] == 0.25  # (0.5 + 0) / 2, not the 2/6 pooled over samples


def test_one_set_named_val_logs_flat(evaluate):
    m = evaluate({"val": [Problem("1+1=", "2"), Problem("2+2=", "4")]})
    assert m["val/accuracy"] == 0.5 and m["val/avg@2"] == 0.5
    assert not any(k.startswith("val/val/") for k in m)


def test_no_answer_format_no_majority_vote(evaluate):
    m = evaluate({"val": [Problem("1+1=", "2"), Problem("2+2=", "4")]}, answer_format=None)
    assert m["val/accuracy"] == 0.5 and m["val/pass@2"] == 0.5
    assert not any("maj@" in k for k in m)


def test_repeated_rows_pool_into_one_problem(evaluate):
    # "1+1=" twice (like the authors' AIME x8 files) and "2+2=" twice: 2 problems x (2 rows x 2 samples)
    rows = [Problem("1+1=", "2"), Problem("2+2=", "4"), Problem("1+1=", "2"), Problem("2+2=", "4")]
    m = evaluate({"val": rows})
    assert m["val/avg@4"] == 0.5 and m["val/accuracy"] == 0.5
    assert m["val/pass@4"] == 0.5  # problem 1: 4 of 4 right -> 1; problem 2: 0 of 4 -> 0
    assert m["val/maj@4"] == 0.5
    assert "val/avg@2" not in m


def test_unequal_repeats_keep_rows():
    from rlvr_exp.evaluate import merge_repeats

    rows = [Problem("1+1=", "2"), Problem("1+1=", "2"), Problem("2+2=", "4")]
    corr = [[True], [False], [True]]
    assert merge_repeats(rows, corr, [["2"], ["3"], ["4"]]) == (corr, [["2"], ["3"], ["4"]])
    same = [Problem("1+1=", "2"), Problem("2+2=", "4"), Problem("1+1=", "2"), Problem("2+2=", "4")]
    got = merge_repeats(same, [[True], [False], [False], [False]], [["2"], ["5"], ["3"], ["6"]])
    assert got == ([[True, False], [False, False]], [["2", "3"], ["5", "6"]])
