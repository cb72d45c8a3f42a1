"""End to end: a learning rate that wrecks the policy stops the run with a named fault."""
from __future__ import annotations

import pytest

from rlvr_exp.checkpoint import SAVE_FAULT_ENV, find_checkpoint
from rlvr_exp.faults import CheckpointError, NumericalFault


def test_huge_lr_is_a_named_fault_not_a_multinomial_traceback(run_inprocess):
    over = ["trainer.steps=4", "trainer.lr=1.0e+30", "trainer.checkpoint_every=1", "trainer.dump_tokens_every=0"]
    with pytest.raises(NumericalFault) as info:
        run_inprocess(over)
    message = str(info.value)
    # step 1's update is finite but huge; the next use of the policy meets non-finite values
    assert message.startswith("numerical fault at step 2: ")
    assert "the last checkpoint saved before it is" in message and "step_000001" in message
    assert "multinomial" not in message and info.value.__cause__ is None


def test_failed_checkpoint_write_stops_the_run_naming_the_previous_one(run_inprocess, monkeypatch, tmp_path):
    monkeypatch.setenv(SAVE_FAULT_ENV, "2:fail")  # "No space left on device" inside step 2's write
    over = ["trainer.steps=3", "trainer.checkpoint_every=1", "trainer.dump_tokens_every=0"]
    with pytest.raises(CheckpointError) as info:
        run_inprocess(over)
    message = str(info.value)
    assert message.startswith("writing the checkpoint of step 2 under ") and "No space left" in message
    assert "the previous checkpoint" in message and message.count("step_000001") == 2
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == [".tmp_step_000002", "step_000001"]  # the cut write never looks complete
    assert find_checkpoint(tmp_path / "run").name == "step_000001"
