"""Shared fixtures: a tiny random Qwen2 and its character tokenizer, built in code."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def char_tokenizer():
    from rlvr_exp.models.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    from rlvr_exp.models.tiny import TinyQwen2

    torch.manual_seed(0)
    return TinyQwen2(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)._fresh(char_tokenizer).eval()
