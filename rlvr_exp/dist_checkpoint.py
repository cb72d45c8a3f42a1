"""Sharded checkpoints of an FSDP2 run (``distributed=fsdp``), beside the one-process format.

``checkpoints/step_<6 digits>/`` holds:
- ``sharded/``: model and optimizer state written by every rank with ``torch.distributed.checkpoint``
  (``get_state_dict``/``set_state_dict``), so resuming on the same world size restores them exactly;
- ``rng_rank<R>.pt``: each rank's RNG states (ranks sample with different seeds);
- ``policy/``: the full weights and tokenizer (``save_pretrained`` by rank 0), for evaluation and
  analysis: the same export as a one-process checkpoint;
- ``trainer_state.pt``: the rest of the run's state (rank 0), written last, so
  :func:`rlvr_exp.checkpoint.find_checkpoint` never takes a half-written folder.
The folder is written under a temporary name and renamed when complete, like the one-process format.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from rlvr_exp import run_files as rf
from rlvr_exp.checkpoint import STATE_FILE, load_state, rng_state

SHARDED_DIR = "sharded"


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def export_weights(model: torch.nn.Module, tokenizer: Any, folder: Path, rank: int) -> None:
    """Gathers the full weights (a collective: every rank calls it) and rank 0 writes them with
    ``save_pretrained``, under the model's own class name (not FSDP2's wrapper class)."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        model.save_pretrained(folder, state_dict=full)
        tokenizer.save_pretrained(folder)
        config = folder / "config.json"
        data = json.loads(config.read_text())
        data["architectures"] = [a.removeprefix("FSDP") for a in data.get("architectures") or []]
        config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, tokenizer: Any,
         state: dict, keep: int, rank: int) -> Path:
    """Every rank calls this; returns ``folder/step_<step>``."""
    final = folder / rf.step_name(state["step"])
    tmp = folder / f".tmp_{rf.step_name(state['step'])}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    torch.distributed.barrier()
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=tmp / SHARDED_DIR)
    torch.save(rng_state(), tmp / rng_file(rank))
    export_weights(model, tokenizer, tmp / rf.CHECKPOINT_POLICY, rank)
    torch.distributed.barrier()
    if rank == 0:
        world = torch.distributed.get_world_size()
        torch.save({**state, "rng": rng_state(), "world_size": world}, tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(folder.glob(rf.STEP_GLOB))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    torch.distributed.barrier()
    return final


def load(checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rank: int) -> dict:
    """Restores model and optimizer shards in place; returns the trainer state with this rank's RNG."""
    state = load_state(checkpoint)
    world = torch.distributed.get_world_size()
    if not (checkpoint / SHARDED_DIR).is_dir() or state.get("world_size") != world:
        raise ValueError(
            f"trainer.resume_from={checkpoint}: not a sharded checkpoint of world size {world} "
            f"(it holds {state.get('world_size', 'a one-process run')}); resume with the world size that "
            f"wrote it, or start a new run from its exported weights ({checkpoint / 'policy'})")
    model_state, optim_state = get_state_dict(model, optimizer)
    loaded = {"model": model_state, "optim": optim_state}
    dcp.load(loaded, checkpoint_id=checkpoint / SHARDED_DIR)
    set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
    state["rng"] = torch.load(checkpoint / rng_file(rank), weights_only=True)  # tensors and plain types
    return state
