"""Every option of an extension-point group instantiates to an object that satisfies that
point's Protocol (what ``build.py`` and the trainer rely on), not just to something."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.build import make
from rlvr_exp.models.base import ModelSpec
from rlvr_exp.rewards.base import Reward
from rlvr_exp.rollout.base import Rollout
from rlvr_exp.stages.base import Schedule, StageDetector
from rlvr_exp.tasks.base import Task
from tests.config.test_compose import NEEDS, group_options, hydra_job

PROTOCOLS = {"model": ModelSpec, "task": Task, "reward": Reward, "rollout": Rollout, "stage/detector": StageDetector}
OPTIONS = [(g, o) for g, o in group_options() if g in PROTOCOLS or g == "stage"]


def test_every_extension_group_is_covered():
    assert {g for g, _ in OPTIONS} == {*PROTOCOLS, "stage"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=lambda v: v)
def test_option_satisfies_its_protocol(group: str, option: str) -> None:
    if (group, option) == ("rollout", "vllm"):
        pytest.importorskip("vllm", reason="the optional vLLM extra (its config check is in test_compose)")
    needs = [*NEEDS.get((group, option), []), *(["model.name_or_path=/models/any"] if (group, option) == ("model", "hf") else [])]
    with hydra_job([f"{group}={option}", *needs]) as cfg:
        if group == "stage":
            obj, protocol = make("stage.schedule", cfg.stage.schedule), Schedule
        else:
            key = group.replace("/", ".")
            obj, protocol = make(key, OmegaConf.select(cfg, key)), PROTOCOLS[group]
    assert isinstance(obj, protocol), f"{group}={option} gives {type(obj).__name__}, not a {protocol.__name__}"
    if group == "task":
        assert obj.answer_format is None or isinstance(obj.answer_format, AnswerFormat)
