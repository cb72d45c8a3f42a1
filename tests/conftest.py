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
BENCHMARKS = Path(os.environ.get("RLVR_EXP_BENCHMARKS", REPO.parent / "shared" / "data" / "benchmarks"))


@pytest.fixture(scope="session")
def char_tokenizer():
    from rlvr_exp.models.tiny import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(char_tokenizer):
    from rlvr_exp.models.tiny import TinyQwen2

    torch.manual_seed(0)
    model = TinyQwen2(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64)
    return model._fresh(char_tokenizer).eval()


# A small, fast configuration of the real pipeline: an easy task (sums of 0..4), a warm-start
# that stops at 30% sampled accuracy (a few seconds), W&B disabled. Measured: train accuracy
# 0.14 -> 0.25 over 25 steps on seeds 0 and 1.
FAST = [
    "task.max_operand=4", "task.num_train=20", "task.num_val=5",
    "trainer.prompts_per_step=16", "trainer.prompts_per_minibatch=8", "trainer.samples_per_prompt=8",
    "trainer.lr=1.0e-4", "trainer.lr_schedule=constant",
    "trainer.val_every=0", "trainer.checkpoint_every=0", "trainer.dump_tokens_every=1",
    "trainer.num_threads=1", "logger.mode=disabled", "logger.progress_bar=false",
]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One warm-start cache per test session (CI starts cold)."""
    return str(tmp_path_factory.mktemp("model_cache"))


@pytest.fixture
def run_inprocess(tmp_path, model_cache):
    """Build and fit the real trainer in-process; returns (summary, run_dir, trainer)."""
    from rlvr_exp.build import build

    def run(overrides: list[str], name: str = "run"):
        cfg = compose(FAST + [f"model.cache_dir={model_cache}"] + overrides)
        run_dir = tmp_path / name
        run_dir.mkdir()
        trainer = build(cfg, run_dir)
        return trainer.fit(), run_dir, trainer

    return run
