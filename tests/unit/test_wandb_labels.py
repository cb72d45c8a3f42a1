"""W&B grouping of a run, derived from its config (rlvr_exp/logging/wandb_labels.py), and the
kwargs that RunLogger passes to wandb.init."""
from __future__ import annotations

import sys
import types

import pytest

from rlvr_exp.logging.run_logger import RunLogger
from rlvr_exp.logging.wandb_labels import choice_config, schedule_kind, shaper_schedules, wandb_labels

ALWAYS = {"_target_": "rlvr_exp.stages.schedules.AlwaysSchedule"}
PLATEAU = {"_target_": "rlvr_exp.stages.schedules.PlateauSchedule"}


def config(shaper: dict, stage_schedule: dict, group=None, job_type=None, tags=(), **choices) -> dict:
    """The parts of build.run_config's dict that the labels read."""
    return {"shaper": shaper, "stage": {"schedule": stage_schedule, "detector": {}},
            "logger": {"group": group, "job_type": job_type, "tags": list(tags)}, **choices}


# experiment=ppl_position inside sweep=shaper_ablation: PPL always, position from the plateau.
PPL_POSITION = config({"ppl": {"alpha": 0.01, "schedule": ALWAYS}, "position": {"alpha": 0.05, "schedule": PLATEAU}},
                      ALWAYS, group="shaper_ablation", job_type="ppl_position",
                      **{"choice/stage": "always", "choice/experiment": "ppl_position", "choice/sweep": "shaper_ablation"})


def labels_of(cfg: dict):
    return wandb_labels(cfg, cfg["logger"]["group"], cfg["logger"]["job_type"], cfg["logger"]["tags"])


def test_schedule_kind_is_the_class_name_without_schedule():
    assert schedule_kind(PLATEAU) == "plateau"
    assert schedule_kind({"_target_": "rlvr_exp.stages.schedules.WindowSchedule", "start": 201}) == "window"


def test_a_shaper_without_its_own_schedule_takes_the_stages():
    cfg = config({"ppl": {"schedule": None}, "position": {"schedule": PLATEAU}}, ALWAYS)
    assert shaper_schedules(cfg) == {"ppl": "always", "position": "plateau"}


def test_sweep_arm_group_job_type_and_tags():
    labels = labels_of(PPL_POSITION)
    assert labels.group == "shaper_ablation"
    assert labels.job_type == "ppl_position"
    assert labels.tags == ["shaper:ppl", "shaper:position", "stage:always", "ppl@always", "position@plateau"]


def test_without_logger_labels_the_choices_then_the_strategy_name_the_run():
    from_choices = config({"none": {"schedule": None}}, ALWAYS, **{"choice/sweep": "controls", "choice/experiment": "grpo",
                                                                    "choice/stage": "always"})
    assert (labels_of(from_choices).group, labels_of(from_choices).job_type) == ("controls", "grpo")
    # outside @hydra.main there are no choice/* keys: the strategy (stack @ stage schedule) is the arm
    bare = config({"ppl": {"schedule": None}, "position": {"schedule": None}}, PLATEAU, tags=["mine"])
    labels = labels_of(bare)
    assert (labels.group, labels.job_type) == (None, "ppl+position@plateau")
    assert labels.tags == ["mine", "shaper:ppl", "shaper:position", "stage:plateau", "ppl@plateau", "position@plateau"]


def test_choice_config_joins_the_stack_and_drops_hydras_groups():
    choices = {"shaper": None, "stage": "plateau", "experiment": None, "hydra/launcher": "basic", "model": "tiny"}
    assert choice_config(choices, ["ppl", "position"]) == {
        "choice/stage": "plateau", "choice/model": "tiny", "choice/shaper": "ppl,position"}


def test_run_logger_passes_the_labels_and_the_config_to_wandb_init(tmp_path, monkeypatch):
    captured: dict = {}

    def fake_init(**kwargs):
        captured.update(kwargs)
        return types.SimpleNamespace(id="abc123", finish=lambda exit_code=0: None)

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=fake_init))
    logger = RunLogger(mode="offline", group="shaper_ablation", job_type="ppl_position", progress_bar=False)
    assert logger.start(tmp_path, PPL_POSITION, total_steps=3) == "abc123"
    assert captured["group"] == "shaper_ablation" and captured["job_type"] == "ppl_position"
    assert captured["tags"] == ["shaper:ppl", "shaper:position", "stage:always", "ppl@always", "position@plateau"]
    assert captured["config"]["choice/experiment"] == "ppl_position"  # choice/* keys reach W&B as filters
    assert captured["mode"] == "offline"


def test_disabled_logger_never_calls_wandb(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **_: pytest.fail("wandb.init called")))
    assert RunLogger(mode="disabled", progress_bar=False).start(tmp_path, PPL_POSITION, total_steps=3) is None
