"""Trainer knobs: the YAML and the dataclass agree, bad values name their key."""
from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from rlvr_exp.config import ConfigError, TrainerConfig
from tests.conftest import CONF


def test_yaml_defaults_equal_dataclass_defaults():
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "trainer" / "default.yaml"))
    yaml.pop("_target_")
    fields = {f.name: f.default for f in dataclasses.fields(TrainerConfig)}
    assert set(yaml) == set(fields)
    for name, value in yaml.items():
        expected = list(fields[name]) if isinstance(fields[name], tuple) else fields[name]
        assert value == expected, name


def test_derived_sizes():
    cfg = TrainerConfig(prompts_per_step=32, samples_per_prompt=8, prompts_per_minibatch=8)
    assert cfg.responses_per_step == 256 and cfg.updates_per_step == 4


@pytest.mark.parametrize(
    "kwargs, key",
    [({"steps": 0}, "trainer.steps"), ({"samples_per_prompt": 1}, "trainer.samples_per_prompt"),
     ({"top_p": 0.0}, "trainer.top_p"), ({"lr": -1.0}, "trainer.lr"),
     ({"overlong_buffer_tokens": 16}, "trainer.overlong_buffer_tokens"),
     ({"prompts_per_step": 6, "prompts_per_minibatch": 4}, "trainer.prompts_per_step"),
     ({"old_logprobs": "sampler"}, "trainer.old_logprobs")],
)
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        TrainerConfig(**kwargs)


def test_lr_schedules():
    const = TrainerConfig(steps=100, warmup_steps=10, lr_schedule="constant")
    assert [const.lr_factor(s) for s in (0, 4, 9, 10, 99)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    cos = TrainerConfig(steps=100, warmup_steps=0, lr_schedule="cosine", lr_min_ratio=0.1)
    assert cos.lr_factor(0) == 1.0
    assert abs(cos.lr_factor(50) - 0.55) < 1e-12  # 0.1 + 0.9 * 0.5 * (1 + cos(pi / 2))
    assert abs(cos.lr_factor(100) - 0.1) < 1e-12
    with pytest.raises(ConfigError, match="trainer.lr_schedule"):
        TrainerConfig(lr_schedule="linear")


def test_old_logprobs_come_from_the_sampler_when_it_can_score():
    assert TrainerConfig().sampler_scores(True) and not TrainerConfig().sampler_scores(False)  # auto
    assert TrainerConfig(old_logprobs="rollout").sampler_scores(True)
    assert not TrainerConfig(old_logprobs="recompute").sampler_scores(True)
