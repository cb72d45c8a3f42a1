"""Multi-operand addition worked step by step: a reasoning chain of variable length, generated in code.

A problem is ``47+8+6+9=``; its worked solution (the warm-start's demonstration) adds left to right,
one partial sum per step, then boxes the total::

    47+8=55, 55+6=61, 61+9=70. \\boxed{70}

With 2..5 operands a solution is 1..4 steps long (17 to 55 tokens with the defaults, one per
character under the tiny model's character tokenizer). The decisions sit in the middle of the
chain: each partial sum's digits right after ``=`` (a carry decides the tens digit), and whether
the chain goes on (``,``) or ends (``.``). The operands after the first are distinct digits, so
the next one to add is the one that follows the last one added in the prompt (a tiny model finds
it by matching, without counting operands). Problems with more operands are harder: every step
must be right. The reward checks only the final answer (math-verify, docs/method.md section 2);
the chain is the model's to get right or wrong. Validation problems are drawn first under the
seed and never appear in training.
"""
from __future__ import annotations

import dataclasses
import math
import random

from rlvr_exp.answers import AnswerFormat, BoxedAnswer
from rlvr_exp.tasks.base import GeneratedTask, Problem


def chain_solution(operands: list[int]) -> str:
    """The worked solution of ``sum(operands)``: ``a+b=s1, s1+c=s2, ... . \\boxed{total}``.

    >>> chain_solution([47, 8, 6, 9])
    '47+8=55, 55+6=61, 61+9=70. \\\\boxed{70}'
    """
    if len(operands) < 2:
        raise ValueError(f"a chain needs at least 2 operands, got {operands}")
    steps, total = [], operands[0]
    for n in operands[1:]:
        steps.append(f"{total}+{n}={total + n}")
        total += n
    return ", ".join(steps) + ". " + BoxedAnswer().render(str(total))


class ChainArithmeticTask(GeneratedTask):
    """Sums of ``min_operands``..``max_operands`` integers: the first uniform in [0,
    ``max_first_operand``], the others distinct, drawn uniformly without replacement from [0,
    ``max_operand``]; the operand count is drawn uniformly per problem. With the defaults (a number
    up to 99, then distinct digits) every step adds a digit to a running total, and a carry decides
    its tens digit. Each problem carries its worked solution (:func:`chain_solution`) as
    ``Problem.solution``; answers are boxed.

    ``direct_share``: the share of training problems whose demonstration is the bare answer
    (``\\boxed{70}``, no chain) instead of the worked chain, as a base model's data mixes answering
    styles. The tiny model cannot add 3-5 numbers in one go, so a warm-started policy that answers
    directly on about that share of its samples is mostly wrong there; RL's first stage is then
    choosing the chain (a fast entropy fall), and its second refining the chain's sums. Which
    problems are picked is seeded apart from the problems themselves (``seed`` draws the same
    problems at any share); validation problems are untouched."""

    answer_format: AnswerFormat | None = BoxedAnswer()

    def __init__(
        self,
        min_operands: int = 2,
        max_operands: int = 5,
        max_first_operand: int = 99,
        max_operand: int = 9,
        num_train: int = 4000,
        num_val: int = 128,
        seed: int = 1234,
        prompt_template: str = "{question}",
        direct_share: float = 0.0,
    ) -> None:
        if not 0.0 <= direct_share < 1.0:
            raise ValueError(f"task.direct_share ({direct_share}) must be in [0, 1): the share of training problems "
                             f"demonstrated by the bare answer instead of the worked chain")
        if not 2 <= min_operands <= max_operands:
            raise ValueError(f"task.min_operands ({min_operands}) must be >= 2 and <= task.max_operands ({max_operands})")
        if max_operands - 1 > max_operand + 1:
            raise ValueError(f"task.max_operands ({max_operands}) needs {max_operands - 1} distinct operands after the "
                             f"first, but [0, task.max_operand={max_operand}] holds {max_operand + 1}: raise task.max_operand")
        if max_operand < 1 or max_first_operand < 1:
            raise ValueError(f"task.max_operand ({max_operand}) and task.max_first_operand ({max_first_operand}) "
                             f"must be >= 1")
        space = sum((max_first_operand + 1) * math.perm(max_operand + 1, k - 1) for k in range(min_operands, max_operands + 1))
        if num_train < 1 or num_val < 1 or num_train + num_val > space // 2:
            raise ValueError(
                f"task.num_train ({num_train}) and task.num_val ({num_val}) must be >= 1 and together at most half "
                f"the {space} distinct problems of this task (so that drawing them ends quickly); lower them or "
                f"raise task.max_operand / task.max_first_operand / task.max_operands")
        if "{question}" not in prompt_template:
            raise ValueError(f"task.prompt_template must contain {{question}}, got {prompt_template!r}")
        self.min_operands, self.max_operands = min_operands, max_operands
        self.max_first_operand, self.max_operand = max_first_operand, max_operand
        self.num_train, self.num_val, self.seed = num_train, num_val, seed
        self.prompt_template = prompt_template
        self.direct_share = direct_share
        self._cache: tuple[list[Problem], list[Problem]] | None = None

    def _make(self, rng: random.Random) -> Problem:
        k = rng.randint(self.min_operands, self.max_operands)
        nums = [rng.randint(0, self.max_first_operand), *rng.sample(range(self.max_operand + 1), k - 1)]
        question = "+".join(map(str, nums)) + "="
        return Problem(question=self.prompt_template.replace("{question}", question), answer=str(sum(nums)),
                       source=f"chain{k}", solution=chain_solution(nums))

    def _split(self) -> tuple[list[Problem], list[Problem]]:
        if self._cache is None:
            train, val = super()._split()
            if self.direct_share > 0:
                pick = random.Random(f"{self.seed}/direct")
                train = [dataclasses.replace(p, solution=self.answer_format.render(p.answer))
                         if pick.random() < self.direct_share else p for p in train]
            self._cache = (train, val)
        return self._cache
