"""Checkpoints that hold every piece of a run's state: weights, optimizer, scheduler, RNGs, the
data stream position, the stage detector, the metric history and the W&B run id."""
from __future__ import annotations

import logging
import os
import random
import shutil
import time
from pathlib import Path

import torch

from rlvr_exp import run_files as rf

log = logging.getLogger(__name__)

STATE_FILE = rf.CHECKPOINT_STATE
#: Test hook: "<step>:sleep:<seconds>" or "<step>:fail" acts inside the write of that step's
#: checkpoint, after its files are written and before the rename (tests/e2e/test_kill_resume.py).
SAVE_FAULT_ENV = "RLVR_EXP_TEST_SAVE_FAULT"


def _test_fault(step: int) -> None:
    spec = os.environ.get(SAVE_FAULT_ENV, "").split(":")
    if spec[0] != str(step):
        return
    if spec[1] == "sleep":
        time.sleep(float(spec[2]))
    else:
        raise OSError(28, f"No space left on device (simulated by {SAVE_FAULT_ENV})")


def rng_state() -> dict:
    """CPU and Python generators, and every CUDA device's (GPU sampling draws from those)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("the checkpoint holds RNG states of %d CUDA devices, this process sees %d: the "
                        "run continues, but its GPU sampling will not repeat the original run's "
                        "(resume with the same CUDA_VISIBLE_DEVICES for that)", len(cuda), torch.cuda.device_count())


def save_checkpoint(folder: Path, model: torch.nn.Module, tokenizer: object, state: dict, keep: int) -> Path:
    """Writes ``folder/step_<step:06d>/`` (written to a temp name, then renamed, so a kill never
    leaves a half checkpoint that looks complete) and keeps the newest ``keep`` of them."""
    final = folder / rf.step_name(state["step"])
    tmp = folder / f".tmp_{rf.step_name(state['step'])}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / rf.CHECKPOINT_POLICY)
    tokenizer.save_pretrained(tmp / rf.CHECKPOINT_POLICY)
    torch.save({**state, "rng": rng_state()}, tmp / STATE_FILE)
    _test_fault(state["step"])
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in sorted(folder.glob(rf.STEP_GLOB))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """``path`` is a checkpoint folder, or a run folder whose newest checkpoint is taken."""
    p = Path(path).expanduser()
    if (p / STATE_FILE).exists():
        return p
    found = sorted((p / rf.CHECKPOINTS).glob(rf.STEP_GLOB)) if p.is_dir() else []
    found = [c for c in found if (c / STATE_FILE).exists()]
    if not found:
        raise FileNotFoundError(
            f"trainer.resume_from={path}: no checkpoint there (expected {STATE_FILE} in it or a "
            "checkpoints/step_* folder under it); point it at a run folder that saved one"
        )
    return found[-1]


def load_state(checkpoint: Path) -> dict:
    """The trainer state, unpickled with ``weights_only=True``: tensors and plain types only, so a
    checkpoint someone sent cannot run code on load (every state_dict we save is plain)."""
    return torch.load(checkpoint / STATE_FILE, weights_only=True)
