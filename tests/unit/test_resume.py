"""Resume: the run folder of a checkpoint, the refused overrides, the kept lr horizon, and
checkpoint writes that fail or are cut short."""
from __future__ import annotations

import copy

import pytest
import torch

from rlvr_exp.checkpoint import SAVE_FAULT_ENV, STATE_FILE, find_checkpoint, save_checkpoint
from rlvr_exp.config import TrainerConfig
from rlvr_exp.resume import CONFIG_FILE, changes, run_dir_of


def test_run_dir_of_a_checkpoint_is_its_run(tmp_path):
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    (ckpt / STATE_FILE).write_bytes(b"")
    (tmp_path / "run" / CONFIG_FILE).write_text("seed: 0\n")
    assert run_dir_of(None, "outputs/new") == "outputs/new"
    assert run_dir_of(str(ckpt), "outputs/new") == str(tmp_path / "run")
    assert run_dir_of(str(tmp_path / "run"), "outputs/new") == str(tmp_path / "run")
    assert run_dir_of(str(tmp_path / "nowhere"), "outputs/new") == "outputs/new"


SAVED = {"seed": 0, "trainer": {"steps": 4, "lr": 1.0e-4}, "shaper": {"ppl": {"alpha": 0.01}},
         "logger": {"mode": "offline"}}
BASE = {"seed": 0, "trainer": {"steps": 200, "lr": 3.0e-4}, "shaper": {"none": {}}, "logger": {"mode": "offline"}}


def test_changes_lists_only_what_the_command_sets():
    # resuming with no override but the path: nothing is asked, whatever the defaults are
    assert changes(SAVED, BASE, BASE, ["trainer.resume_from=x"]) == {}
    # shaper=none is the default, but named on the command line: it differs from the saved ppl
    asked = changes(SAVED, BASE, BASE, ["shaper=none"])
    assert asked == {"shaper.none": ("<absent>", {}), "shaper.ppl.alpha": (0.01, "<absent>")}
    # a value equal to the saved one is no change
    current = copy.deepcopy(BASE)
    current["trainer"]["lr"] = 1.0e-4
    assert changes(SAVED, BASE, current, ["trainer.lr=1.0e-4"]) == {}
    current["trainer"]["steps"] = 8
    assert changes(SAVED, BASE, current, ["trainer.lr=1.0e-4", "trainer.steps=8"]) == {"trainer.steps": (4, 8)}


def test_lr_horizon_keeps_the_cosine_from_jumping():
    original = TrainerConfig(steps=4, lr_schedule="cosine", lr_min_ratio=0.1)
    longer = TrainerConfig(steps=8, lr_schedule="cosine", lr_min_ratio=0.1, lr_horizon_steps=4)
    assert [longer.lr_factor(s) for s in range(4)] == [original.lr_factor(s) for s in range(4)]
    assert [longer.lr_factor(s) for s in range(4, 8)] == pytest.approx([0.1] * 4)  # stays at the floor
    # 0.1 + 0.45 (1 + cos(3 pi / 4)) = 0.2318 at the last original step; without the kept horizon
    # the next step would jump back up to 0.1 + 0.45 (1 + cos(pi / 2)) = 0.55 (the 3e-5 -> 7.5e-5)
    assert original.lr_factor(3) == pytest.approx(0.23180, abs=1e-5)
    assert TrainerConfig(steps=8, lr_min_ratio=0.1).lr_factor(4) == pytest.approx(0.55)


def test_tmp_folders_never_count_as_checkpoints(tmp_path):
    run = tmp_path / "run"
    for name in ("step_000001", ".tmp_step_000002", "step_000003"):
        (run / "checkpoints" / name).mkdir(parents=True)
    (run / "checkpoints" / "step_000001" / STATE_FILE).write_bytes(b"")
    (run / "checkpoints" / ".tmp_step_000002" / STATE_FILE).write_bytes(b"")  # cut short before the rename
    assert find_checkpoint(run) == run / "checkpoints" / "step_000001"  # step 3 has no state file


def test_failed_checkpoint_write_leaves_the_previous_one(tmp_path, tiny_model, char_tokenizer, monkeypatch):
    folder = tmp_path / "checkpoints"
    first = save_checkpoint(folder, tiny_model, char_tokenizer, {"step": 1}, keep=1)
    monkeypatch.setenv(SAVE_FAULT_ENV, "2:fail")
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(folder, tiny_model, char_tokenizer, {"step": 2}, keep=1)
    assert find_checkpoint(tmp_path) == first
    assert torch.load(first / STATE_FILE, weights_only=False)["step"] == 1


def test_a_misspelt_key_names_the_closest_valid_ones():
    from rlvr_exp.build import make
    from rlvr_exp.config import ConfigError
    from tests.conftest import compose

    cfg = compose(["+trainer.lerning_rate=1.0e-5"])
    with pytest.raises(ConfigError, match=r"trainer.lerning_rate is not a setting of trainer; did you mean "
                                          r"trainer.lr, trainer.lr_min_ratio\?"):
        make("trainer", cfg.trainer)


class Payload:
    """What a hostile checkpoint could hold: unpickling it would run code."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_state_loads_weights_only(tmp_path, tiny_model, char_tokenizer):
    from rlvr_exp.checkpoint import load_state

    state = {"step": 3, "history": [{"step": 1, "loss/policy": float("nan"), "stage/name": "rising"}],
             "stream": {"epoch": 0, "cursor": 5}, "wandb_run_id": None}
    ckpt = save_checkpoint(tmp_path / "checkpoints", tiny_model, char_tokenizer, state, keep=1)
    loaded = load_state(ckpt)
    assert loaded["step"] == 3 and loaded["stream"] == {"epoch": 0, "cursor": 5}
    assert isinstance(loaded["rng"]["torch"], torch.Tensor)
    torch.save({"step": 4, "evil": Payload()}, ckpt / STATE_FILE)
    with pytest.raises(Exception, match="Weights only load failed"):
        load_state(ckpt)
