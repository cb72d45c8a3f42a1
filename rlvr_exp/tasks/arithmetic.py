"""A synthetic verifiable math task generated in code: integer arithmetic with a boxed answer.

Problems look like ``37+58=`` (operands and operators are config values); the gold answer is
the integer result, verified with math-verify against ``\\boxed{95}``. The validation problems
are drawn first under the seed and never appear in training.
"""
from __future__ import annotations

import random

from rlvr_exp.answers import AnswerFormat, BoxedAnswer
from rlvr_exp.tasks.base import GeneratedTask, Problem

_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


class ArithmeticTask(GeneratedTask):
    """``num_operands`` integers in [0, max_operand] joined by operators drawn from ``ops``,
    evaluated left to right (no precedence: ``2+3*4`` means ``(2+3)*4``). Answers are boxed."""

    answer_format: AnswerFormat | None = BoxedAnswer()

    def __init__(
        self,
        num_operands: int = 2,
        max_operand: int = 99,
        ops: str = "+",
        num_train: int = 9000,
        num_val: int = 128,
        seed: int = 1234,
        prompt_template: str = "{question}",
    ) -> None:
        if num_operands < 2:
            raise ValueError(f"task.num_operands must be >= 2, got {num_operands}")
        if max_operand < 1:
            raise ValueError(f"task.max_operand must be >= 1, got {max_operand}")
        if not ops or any(o not in _OPS for o in ops):
            raise ValueError(f"task.ops must be a non-empty string of {sorted(_OPS)}, got {ops!r}")
        space = (max_operand + 1) ** num_operands * len(ops) ** (num_operands - 1)
        if num_train < 1 or num_val < 1 or num_train + num_val > space:
            raise ValueError(
                f"task.num_train ({num_train}) + task.num_val ({num_val}) must be >= 2 and at most "
                f"the {space} distinct problems of this task; lower them or raise task.max_operand"
            )
        self.num_operands, self.max_operand, self.ops = num_operands, max_operand, ops
        self.num_train, self.num_val, self.seed = num_train, num_val, seed
        self.prompt_template = prompt_template
        self._cache: tuple[list[Problem], list[Problem]] | None = None

    def _make(self, rng: random.Random) -> Problem:
        nums = [rng.randint(0, self.max_operand) for _ in range(self.num_operands)]
        ops = [rng.choice(self.ops) for _ in range(self.num_operands - 1)]
        value, text = nums[0], str(nums[0])
        for op, n in zip(ops, nums[1:]):
            value, text = _OPS[op](value, n), f"{text}{op}{n}"
        return Problem(question=self.prompt_template.replace("{question}", f"{text}="), answer=str(value), source="arithmetic")
