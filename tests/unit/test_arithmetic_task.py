"""The arithmetic task's prompt template may hold the paper's instruction, braces included."""
from __future__ import annotations

from rlvr_exp.tasks.arithmetic import ArithmeticTask

PAPER = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."


def test_template_with_boxed_braces_wraps_the_question():
    plain = ArithmeticTask(max_operand=9, num_train=20, num_val=4)
    wrapped = ArithmeticTask(max_operand=9, num_train=20, num_val=4, prompt_template=PAPER)
    for a, b in zip(plain.val_problems() + plain.train_problems(), wrapped.val_problems() + wrapped.train_problems()):
        assert b.question == a.question + "\nPlease reason step by step, and put your final answer within \\boxed{}."
        assert b.answer == a.answer
