"""End to end: a learning rate that wrecks the policy stops the run with a named fault."""
from __future__ import annotations

import pytest

from rlvr_exp.faults import NumericalFault


def test_huge_lr_is_a_named_fault_not_a_multinomial_traceback(run_inprocess):
    over = ["trainer.steps=4", "trainer.lr=1.0e+30", "trainer.checkpoint_every=1", "trainer.dump_tokens_every=0"]
    with pytest.raises(NumericalFault) as info:
        run_inprocess(over)
    message = str(info.value)
    # step 1's update is finite but huge; the next use of the policy meets non-finite values
    assert message.startswith("numerical fault at step 2: ")
    assert "the last checkpoint saved before it is" in message and "step_000001" in message
    assert "multinomial" not in message and info.value.__cause__ is None
