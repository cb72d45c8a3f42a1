"""Checkpoint RNG state: restoring it repeats the random draws exactly."""
from __future__ import annotations

import random

import torch

from rlvr_exp.checkpoint import rng_state, set_rng_state


def test_checkpoint_rng_state_round_trips():
    torch.manual_seed(5)
    random.seed(5)
    saved = rng_state()
    a = (torch.rand(3).tolist(), random.random())
    torch.manual_seed(6)
    random.seed(6)
    set_rng_state(saved)
    assert (torch.rand(3).tolist(), random.random()) == a
