"""The testbed's task (multi-operand addition worked step by step), the reward on its chain format,
the warm-start's demonstrations, and the warm-start cache key."""
from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from rlvr_exp.answers import BoxedAnswer
from rlvr_exp.models.tiny import TinyQwen2
from rlvr_exp.models.warmstart import _sft_batch
from rlvr_exp.rewards.math_verify import math_verify_correct
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.chain_arithmetic import ChainArithmeticTask, chain_solution


# ------------------------------------------------------------------------------ generation
@pytest.mark.parametrize(("operands", "solution"), [
    ([47, 8, 6, 9], "47+8=55, 55+6=61, 61+9=70. \\boxed{70}"),
    ([17, 48, 9, 30], "17+48=65, 65+9=74, 74+30=104. \\boxed{104}"),
    ([5, 9], "5+9=14. \\boxed{14}"),
    ([0, 0, 0], "0+0=0, 0+0=0. \\boxed{0}"),
    ([99, 9, 8, 7, 6], "99+9=108, 108+8=116, 116+7=123, 123+6=129. \\boxed{129}"),
])
def test_chain_solution_by_hand(operands, solution):
    assert chain_solution(operands) == solution


def test_chain_solution_needs_two_operands():
    with pytest.raises(ValueError, match="at least 2 operands"):
        chain_solution([3])


def _operands(question: str) -> list[int]:
    assert question.endswith("=")
    return [int(n) for n in question[:-1].split("+")]


def test_every_problem_is_its_own_sum_with_its_chain():
    task = ChainArithmeticTask(max_first_operand=20, max_operand=9, num_train=300, num_val=40, seed=7)
    firsts = set()
    for p in task.train_problems() + task.val_problems():
        nums = _operands(p.question)
        firsts.add(nums[0])
        assert 2 <= len(nums) <= 5 and 0 <= nums[0] <= 20 and all(0 <= n <= 9 for n in nums[1:])
        assert len(set(nums[1:])) == len(nums) - 1  # distinct: the next operand follows the last one added
        assert p.answer == str(sum(nums))
        assert p.solution == chain_solution(nums)
        assert p.source == f"chain{len(nums)}"
        assert BoxedAnswer().extract(p.solution) == p.answer
    assert max(firsts) > 9  # the first operand has its own range


def test_response_lengths_run_from_17_to_55_tokens(char_tokenizer):
    # by hand, + 1 for </s>: shortest "0+0=0. \\boxed{0}" (16 characters), longest 99 then 9, 8, 7, 6 (54)
    task = ChainArithmeticTask()
    lengths = [len(char_tokenizer(p.solution, add_special_tokens=False)["input_ids"]) + 1
               for p in task.train_problems()]
    assert min(lengths) >= 17 and max(lengths) <= 55
    assert len(char_tokenizer(chain_solution([0, 0]), add_special_tokens=False)["input_ids"]) + 1 == 17
    assert len(char_tokenizer(chain_solution([99, 9, 8, 7, 6]), add_special_tokens=False)["input_ids"]) + 1 == 55
    assert sum(lengths) / len(lengths) == pytest.approx(35.4, abs=1.0)  # the mix: 1..4 steps of ~10 tokens on ~20


def test_character_tokenizer_covers_the_chain(char_tokenizer):
    text = "47+8+6+9=" + chain_solution([47, 8, 6, 9])
    ids = char_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and char_tokenizer.unk_token_id not in ids
    assert char_tokenizer.decode(ids) == text


def test_operand_counts_are_mixed_easy_to_hard():
    counts = Counter(p.source for p in ChainArithmeticTask().train_problems())
    assert sorted(counts) == ["chain2", "chain3", "chain4", "chain5"]
    # a uniform draw; there are only 1,000 distinct 2-operand problems, so repeats (redrawn) thin them
    assert 0.12 < counts["chain2"] / 4000 < 0.20 and all(0.24 < counts[f"chain{k}"] / 4000 < 0.32 for k in (3, 4, 5))


def test_validation_is_held_out_and_reproducible():
    task = ChainArithmeticTask(max_first_operand=9, num_train=500, num_val=64, seed=3)
    train, val = [p.question for p in task.train_problems()], [p.question for p in task.val_problems()]
    assert len(set(train)) == 500 and len(set(val)) == 64 and not set(train) & set(val)
    again = ChainArithmeticTask(max_first_operand=9, num_train=500, num_val=64, seed=3)
    assert [p.question for p in again.val_problems()] == val
    other = ChainArithmeticTask(max_first_operand=9, num_train=500, num_val=64, seed=4)
    assert [p.question for p in other.val_problems()] != val
    assert task.val_sets() == {"val": task.val_problems()}


def test_template_wraps_the_question():
    task = ChainArithmeticTask(max_first_operand=9, num_train=20, num_val=4, prompt_template="Q: {question}")
    plain = ChainArithmeticTask(max_first_operand=9, num_train=20, num_val=4)
    for a, b in zip(plain.train_problems(), task.train_problems()):
        assert b.question == "Q: " + a.question and b.solution == a.solution


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"min_operands": 1}, "task.min_operands"),
    ({"min_operands": 4, "max_operands": 3}, "task.max_operands"),
    ({"max_operand": 0}, "task.max_operand"),
    ({"max_operand": 2}, "4 distinct operands after the first"),
    ({"max_first_operand": 0}, "task.max_first_operand"),
    ({"max_first_operand": 1, "max_operand": 1, "max_operands": 2, "num_train": 3}, "task.num_train"),
    ({"prompt_template": "no slot"}, "{question}"),
    ({"direct_share": 1.0}, "task.direct_share"),
    ({"direct_share": -0.1}, "task.direct_share"),
])
def test_bad_settings_are_refused_by_name(kwargs, names):
    with pytest.raises(ValueError, match=names.replace("{", r"\{").replace("}", r"\}")):
        ChainArithmeticTask(**kwargs)


def test_direct_share_demonstrates_the_bare_answer_on_that_share_of_training_problems():
    chain, mixed = ChainArithmeticTask(**SMALL), ChainArithmeticTask(**SMALL, direct_share=0.5)
    bare = 0
    for a, b in zip(chain.train_problems(), mixed.train_problems(), strict=True):
        assert (a.question, a.answer, a.source) == (b.question, b.answer, b.source)  # the same problems
        if b.solution != a.solution:
            assert b.solution == "\\boxed{" + a.answer + "}"  # e.g. 47+8+6+9= -> \boxed{70}
            bare += 1
    n = len(chain.train_problems())
    assert 0.4 < bare / n < 0.6  # a seeded coin per problem
    again = ChainArithmeticTask(**SMALL, direct_share=0.5)
    assert [p.solution for p in mixed.train_problems()] == [p.solution for p in again.train_problems()]  # seeded
    assert mixed.val_problems() == chain.val_problems()  # validation untouched


# ------------------------------------------------------------------------------ the reward
@pytest.mark.parametrize(("response", "correct"), [
    ("47+8=55, 55+6=61, 61+9=70. \\boxed{70}", True),   # the demonstrated chain
    ("47+8=55, 55+6=61, 61+9=70. \\boxed{71}", False),  # right chain, wrong boxed total
    ("47+8=55, 55+6=62, 62+9=70. \\boxed{70}", True),   # a wrong step, right total: only the final answer counts
    ("47+8=55, 55+6=61, 61+9=71. \\boxed{70}", True),   # the boxed answer wins over the chain's last number
    ("47+8=55, 55+6=61, 61+9=70. \\boxed{70} \\boxed{3}", False),  # the last boxed answer counts
    ("47+8=55, 55+6=61. \\boxed{61}", False),  # stopped a step early
    ("47+8=55, 55+6=61, 61+9=7", False),       # cut off by the length limit
    # no \boxed: math-verify reads the last expression, as the released reward does (docs/method.md
    # section 2); the task's format is still counted apart (defect/no_boxed_share)
    ("47+8=55, 55+6=61, 61+9=70.", True),
    ("47+8=55, 55+6=61, 61+9=70", True),
])
def test_math_verify_on_the_chain_format(response, correct):
    assert math_verify_correct(response, "70") is correct


# ------------------------------------------------------------------------------ the warm-start
def test_warmstart_demonstrates_the_worked_solution(char_tokenizer):
    problems = [Problem(question="1+2+3=", answer="6", solution=chain_solution([1, 2, 3])),
                Problem(question="4+5=", answer="9")]  # no solution: the bare boxed answer
    ids, mask, labels = _sft_batch(char_tokenizer, problems, BoxedAnswer())
    eos, text = char_tokenizer.eos_token_id, lambda row: char_tokenizer.decode([t for t in row if t >= 0])
    assert text(labels[0][labels[0] != eos]) == "1+2=3, 3+3=6. \\boxed{6}"
    assert text(labels[1][(labels[1] != eos)]) == "\\boxed{9}"
    assert (labels[0] == -100).sum() == len("1+2+3=") and int(mask[0].sum()) == len("1+2+3=1+2=3, 3+3=6. \\boxed{6}") + 1


SMALL = dict(min_operands=2, max_operands=4, max_first_operand=20, max_operand=9, num_train=200, num_val=16, seed=5)


def _key(model: dict | None = None, task: dict | None = None, warmstart: dict | None = None, cls=ChainArithmeticTask) -> str:
    spec = TinyQwen2(**(model or {}), warmstart={"lr": 1.0e-3, "target_accuracy": 0.3, **(warmstart or {})})
    return spec.cache_key(cls(**{**SMALL, **(task or {})}))


def test_cache_key_is_stable():
    assert _key() == _key()


@pytest.mark.parametrize("change", [
    {"model": {"hidden_size": 64}}, {"model": {"num_layers": 2}}, {"model": {"num_heads": 2}},
    {"model": {"num_kv_heads": 1}}, {"model": {"intermediate_size": 256}}, {"model": {"max_position": 128}},
    {"model": {"init_seed": 1}},
    {"warmstart": {"lr": 2.0e-3}}, {"warmstart": {"target_accuracy": 0.2}}, {"warmstart": {"max_new_tokens": 64}},
    {"task": {"min_operands": 3}}, {"task": {"max_operands": 5}}, {"task": {"max_operand": 8}},
    {"task": {"max_first_operand": 30}},
    {"task": {"num_train": 201}}, {"task": {"num_val": 17}}, {"task": {"seed": 6}},
    {"task": {"prompt_template": "Q: {question}"}}, {"task": {"direct_share": 0.5}},
], ids=lambda c: next(f"{k}.{n}" for k, v in c.items() for n in v))
def test_every_value_that_shapes_the_warmstart_changes_the_key(change):
    assert _key(**change) != _key()


class _OtherSolutions(ChainArithmeticTask):
    """The same questions and answers; one middle problem's demonstration written differently."""

    def train_problems(self):
        problems = list(super().train_problems())
        problems[100] = dataclasses.replace(problems[100], solution="x" + problems[100].solution)
        return problems


class _OtherFormat(ChainArithmeticTask):
    class _Format(BoxedAnswer):
        name = "framed"

    answer_format = _Format()


@pytest.mark.parametrize("cls", [_OtherSolutions, _OtherFormat])
def test_demonstrations_and_the_answer_format_change_the_key(cls):
    assert _key(cls=cls) != _key()
