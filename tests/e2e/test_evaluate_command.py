"""The evaluation command on the tiny default's checkpoint: results.json and results.md with
avg@k, maj@k, pass@k per benchmark and their mean; a missing checkpoint is refused first."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from rlvr_exp.config import ConfigError
from rlvr_exp.eval.command import evaluate_command, load_checkpoint_weights
from tests.conftest import CONF

TINY_TASK = ["task.max_operand=4", "task.num_train=20", "task.num_val=5"]


def compose_eval(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("evaluate", overrides=overrides)


def test_defaults_are_the_papers_sampling_and_no_wandb():
    cfg = compose_eval([])
    assert (cfg.eval.temperature, cfg.eval.top_p) == (0.6, 0.95)
    assert cfg.logger.mode == "disabled" and cfg.checkpoint is None


def test_checkpoint_weights_replace_the_models(tiny_model, tmp_path):
    # own config copies: save_pretrained writes ``architectures`` into the config it is given, and
    # the session's tiny_model must stay a config-built model for the other tests
    trained = type(tiny_model)(copy.deepcopy(tiny_model.config))
    with torch.no_grad():
        for p in trained.parameters():
            p.fill_(0.25)
    trained.save_pretrained(tmp_path / "policy")
    fresh = type(tiny_model)(copy.deepcopy(tiny_model.config))
    load_checkpoint_weights(fresh, tmp_path)
    assert all(torch.equal(p, torch.full_like(p, 0.25)) for p in fresh.parameters())


def test_missing_checkpoint_is_refused_naming_the_key(tmp_path):
    cfg = compose_eval([f"checkpoint={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="checkpoint="):
        evaluate_command(cfg, tmp_path)


def _no_warmstart(*args, **kwargs):
    raise AssertionError("a warm-start ran although a checkpoint replaces the policy")


def test_evaluates_a_tiny_runs_checkpoint(run_inprocess, tmp_path, monkeypatch):
    _, run_dir, _ = run_inprocess(["trainer.steps=2", "trainer.checkpoint_every=2"])
    out = tmp_path / "eval"
    out.mkdir()
    # an empty cache: the checkpoint's weights replace the policy, so no warm-start may run
    monkeypatch.setattr("rlvr_exp.models.tiny.sft_warmstart", _no_warmstart)
    cfg = compose_eval([f"checkpoint={run_dir}", f"model.cache_dir={tmp_path / 'empty_cache'}",
                        "eval.samples_per_problem=4", "eval.problems_per_call=2", *TINY_TASK])
    results = evaluate_command(cfg, out)
    assert results["checkpoint"] == str(run_dir / "checkpoints" / "step_000002")
    assert results["problems"] == {"val": 5}
    val = results["benchmarks"]["val"]
    assert {"accuracy", "boxed_rate", "avg@4", "maj@4", "pass@1", "pass@2", "pass@4"} <= set(val)
    assert val["accuracy"] == val["avg@4"] == pytest.approx(val["pass@1"])
    assert val["pass@1"] <= val["pass@2"] <= val["pass@4"]
    assert results["mean"] == val  # one benchmark: the mean is its own numbers
    assert json.loads((out / "results.json").read_text())["mean"] == results["mean"]
    table = (out / "results.md").read_text().splitlines()
    assert table[0].startswith("| benchmark | problems | accuracy | boxed_rate |")
    assert table[2].startswith("| val | 5 | ") and table[3].startswith("| mean | 5 | ")
