"""How a run is found in W&B: its group, job type, tags and ``choice/*`` config keys, derived from
the run's config so that every run of a sweep lands in the same group and each arm in its own job type.

- group: ``logger.group`` (every ``conf/sweep/*.yaml`` sets it to the sweep's name), else the
  ``sweep`` choice, else none.
- job_type (the arm): ``logger.job_type`` (every ``conf/experiment/*`` arm sets it), else the
  ``experiment`` choice, else the strategy, ``<shaper stack>@<stage>`` (``ppl+position@plateau``).
- tags: ``logger.tags``, then ``shaper:<name>`` for each shaper of the stack in order,
  ``stage:<stage choice or schedule>``, and ``<shaper>@<schedule>`` for the schedule that gates each
  shaper (its own, else the stage's), e.g. ``position@plateau``.
The dashboard (``python -m rlvr_exp.dashboard``) groups runs with the same function, reading the
saved ``config_resolved.yaml`` and ``choices.json`` of each run folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_LABEL_CHARS = 64  # W&B's limit for a tag and for a job type


@dataclass(frozen=True)
class WandbLabels:
    group: str | None
    job_type: str
    tags: list[str] = field(default_factory=list)


def choice_config(choices: dict[str, Any], shaper_names: list[str]) -> dict[str, str]:
    """``{"choice/<group>": <option>}`` for each chosen config group (Hydra's own groups left out).
    Hydra leaves a list choice (``shaper=[ppl,position]``) out of its choices: ``choice/shaper``
    is the stack's names joined by commas (``ppl,position``)."""
    out = {f"choice/{group}": str(choice) for group, choice in choices.items()
           if not group.startswith("hydra/") and choice is not None and group != "shaper"}
    out["choice/shaper"] = ",".join(shaper_names)
    return out


def schedule_kind(schedule: dict[str, Any]) -> str:
    """``{"_target_": "rlvr_exp.stages.schedules.PlateauSchedule", ...}`` -> ``"plateau"``."""
    name = str(schedule["_target_"]).rsplit(".", 1)[-1]
    return (name.removesuffix("Schedule") or name).lower()


def shaper_schedules(config: dict[str, Any]) -> dict[str, str]:
    """Each shaper of the stack -> the kind of schedule that switches it on (its own, else the stage's)."""
    stage = schedule_kind(config["stage"]["schedule"])
    return {name: schedule_kind(node["schedule"]) if node["schedule"] else stage
            for name, node in config["shaper"].items()}


def _clip(label: str) -> str:
    return label[:MAX_LABEL_CHARS]


def wandb_labels(config: dict[str, Any], group: str | None, job_type: str | None, tags: list[str]) -> WandbLabels:
    """The W&B group, job type and tags of a run (module docstring): ``group``, ``job_type`` and
    ``tags`` are the logger's own (``logger.*``), the rest is derived from the resolved ``config``
    (``build.run_config``'s dict, with ``choice/*`` keys when composed by Hydra, or a saved
    config_resolved.yaml updated with ``choice_config`` of the run's choices.json)."""
    schedules = shaper_schedules(config)
    choices = {k: v for k, v in config.items() if k.startswith("choice/")}  # absent outside @hydra.main
    stage = str(choices.get("choice/stage") or schedule_kind(config["stage"]["schedule"]))
    group = group or choices.get("choice/sweep")
    job_type = job_type or choices.get("choice/experiment") or f"{'+'.join(schedules)}@{stage}"
    derived = [f"shaper:{name}" for name in schedules] + [f"stage:{stage}"]
    derived += [f"{name}@{kind}" for name, kind in schedules.items()]
    every = list(dict.fromkeys([*map(str, tags), *derived]))
    return WandbLabels(group=str(group) if group else None, job_type=_clip(str(job_type)),
                       tags=[_clip(t) for t in every])
