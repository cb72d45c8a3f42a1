"""Assembles a trainer from the composed config. The only place that calls ``instantiate``.

Everything cheap is built and checked first (trainer knobs, algorithm, shapers and their
schedules, the stage detector, task, reward, rollout, logger), so a bad config fails before
any model loads, with a message naming the key."""
from __future__ import annotations

import copy
import inspect
import json
import logging
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from rlvr_exp import run_files as rf
from rlvr_exp.checkpoint import find_checkpoint
from rlvr_exp.config import ConfigError, TrainerConfig
from rlvr_exp.distributed import SingleProcess
from rlvr_exp.logging.run_logger import SilentLogger
from rlvr_exp.logging.wandb_labels import choice_config
from rlvr_exp.models.base import ModelSpec
from rlvr_exp.preflight import audit_prompts, check_context
from rlvr_exp.shapers.base import OPTIONAL_INPUTS
from rlvr_exp.shapers.stack import ShaperStack
from rlvr_exp.stages.base import StageDetector
from rlvr_exp.tasks.base import Task
from rlvr_exp.tasks.prompts import PromptEncoder
from rlvr_exp.trainer import Parts, Trainer
from rlvr_exp.typos import closest

log = logging.getLogger(__name__)


def make(key: str, node: Any, **kwargs: Any) -> Any:
    """``instantiate(node)``, turning a constructor's ValueError into a ConfigError naming ``key``."""
    if node is None or (isinstance(node, DictConfig) and "_target_" not in node):
        raise ConfigError(f"{key} is missing or has no _target_; pick an option of the {key.split('.')[0]} group")
    check_keys(key, node)
    try:
        return instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {cause}") from err


def check_keys(key: str, node: DictConfig) -> None:
    """Raise a ConfigError naming the closest valid keys when ``node`` sets a key its target does
    not take (a typo added with ``+``, e.g. ``+trainer.lerning_rate=1.0e-5``)."""
    params = inspect.signature(get_object(node._target_)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [name for name in params if name != "self"]
    for name in node:
        if not str(name).startswith("_") and name not in params:
            close = closest(str(name), valid)
            hint = f"did you mean {', '.join(f'{key}.{c}' for c in close)}? " if close else ""
            raise ConfigError(f"{key}.{name} is not a setting of {key}; {hint}valid keys: {', '.join(valid)}")


def build_shapers(shaper_cfg: DictConfig, stage_cfg: DictConfig) -> ShaperStack:
    """One stack entry per option of the ``shaper`` group, in command-line order. An entry with
    ``schedule: null`` takes the ``stage`` group's schedule."""
    if not isinstance(shaper_cfg, DictConfig) or not len(shaper_cfg):
        raise ConfigError("shaper is empty; pick one or more options, e.g. shaper=none or shaper=[ppl,position]")
    entries = []
    for name, node in shaper_cfg.items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise ConfigError(f"shaper.{name} is not a shaper option (no _target_); "
                              f"valid options are the files in conf/shaper/")
        node = copy.deepcopy(node)
        with _open(node):
            schedule_node = node.pop("schedule", None)
        schedule = make(f"shaper.{name}.schedule" if schedule_node is not None else "stage.schedule",
                        schedule_node if schedule_node is not None else stage_cfg.schedule)
        entries.append((str(name), make(f"shaper.{name}", node), schedule))
    return ShaperStack(entries)


class _open:
    """Temporarily lift struct mode so a key can be popped from a composed node."""

    def __init__(self, node: DictConfig) -> None:
        self.node = node

    def __enter__(self) -> None:
        OmegaConf.set_struct(self.node, False)

    def __exit__(self, *exc: object) -> None:
        OmegaConf.set_struct(self.node, True)


def provided_inputs(trainer_cfg: TrainerConfig) -> frozenset[str]:
    """The optional shaper inputs this pipeline computes."""
    return OPTIONAL_INPUTS if trainer_cfg.score_entropy else OPTIONAL_INPUTS - {"entropy"}


def check_stage_inputs(
    cfg: DictConfig, shapers: ShaperStack, detector: StageDetector, trainer_cfg: TrainerConfig
) -> None:
    """Refuse a stage-gated schedule whose detector watches a metric this pipeline never computes
    (the stage would never change, so the schedule would silently never switch)."""
    unmet = detector.requires - provided_inputs(trainer_cfg)
    gated = [name for name, _, schedule in shapers.entries if schedule.uses_stage]
    if not (unmet and gated):
        return
    keys = sorted({f"shaper.{name}.schedule" if OmegaConf.select(cfg.shaper[name], "schedule") is not None else "stage.schedule"
                   for name in gated})
    raise ConfigError(
        f"{', '.join(keys)} switches shaper(s) {gated} by stage, but the stage detector (stage.detector) "
        f"watches a metric computed from {sorted(unmet)}, which trainer.score_entropy=false leaves out, so the "
        "stage would never change; set trainer.score_entropy=true, or gate by step instead (stage=always or stage=window)")


def build(cfg: DictConfig, run_dir: Path, dist: SingleProcess | None = None) -> Trainer:
    """``dist``: the started ``distributed`` handle (train.py's); built from the config when None."""
    dist = dist if dist is not None else make("distributed", cfg.distributed)
    trainer_cfg: TrainerConfig = make("trainer", cfg.trainer)
    algo = make("algo", cfg.algo)
    shapers = build_shapers(cfg.shaper, cfg.stage)
    missing = shapers.requires - provided_inputs(trainer_cfg)
    if missing:
        raise ConfigError(
            f"shaper stack {list(cfg.shaper)} needs {sorted(missing)}, which this pipeline does not compute; "
            "set trainer.score_entropy=true or drop the shaper")
    detector: StageDetector = make("stage.detector", cfg.stage.detector)
    check_stage_inputs(cfg, shapers, detector, trainer_cfg)
    task = make("task", cfg.task)
    reward_fn = make("reward", cfg.reward)
    rollout = make("rollout", cfg.rollout)
    if trainer_cfg.old_logprobs == "rollout" and not rollout.scores_samples:
        raise ConfigError(f"trainer.old_logprobs=rollout needs a rollout that scores its own samples, and "
                          f"{type(rollout).__name__} (rollout={cfg.rollout._target_}) does not; set trainer.old_logprobs=auto "
                          "or recompute (a scoring pass after sampling)")
    logger = make("logger", cfg.logger)
    analysis = make("analysis", cfg.analysis)
    model_spec: ModelSpec = make("model", cfg.model)
    dist.check(trainer_cfg, analysis.probing)
    if trainer_cfg.resume_from is not None:  # a wrong path costs seconds, not a model load
        try:
            find_checkpoint(trainer_cfg.resume_from)
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
    preflight(model_spec, task, trainer_cfg)
    log.info("config checked; loading the model")
    policy, tokenizer = dist.main_first(lambda: model_spec.load(task))  # a download or cache fill once
    check_context(policy.config.max_position_embeddings, trainer_cfg, "the loaded model")
    analysis.bind_tokenizer(tokenizer)
    analysis.bind_answer_format(task.answer_format)
    reference = None
    if algo.needs_reference:
        reference = dist.wrap(copy.deepcopy(policy).eval().requires_grad_(False))
    policy = dist.wrap(policy)
    logger = dist.main_only(logger, SilentLogger())
    rollout.bind(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    encoder = PromptEncoder(tokenizer, model_spec.chat_template, trainer_cfg.max_prompt_tokens)
    parts = Parts(policy=policy, tokenizer=tokenizer, task=task, rollout=rollout, reward_fn=reward_fn, algo=algo,
                  shapers=shapers, detector=detector, logger=logger, encoder=encoder, analysis=analysis, reference=reference,
                  dist=dist)
    return Trainer(trainer_cfg, parts, run_dir, int(cfg.seed), run_config(cfg, run_dir))


def preflight(model_spec: ModelSpec, task: Task, trainer_cfg: TrainerConfig) -> None:
    """Checks that need the model's context and tokenizer but not its weights (rlvr_exp/preflight.py)."""
    check_context(model_spec.max_positions(), trainer_cfg, "the model")
    encoder = PromptEncoder(model_spec.tokenizer(), model_spec.chat_template, trainer_cfg.max_prompt_tokens)
    audit_prompts(encoder, task.train_problems(), trainer_cfg.max_prompt_cut_share)


def run_config(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """The resolved config for W&B, with each config group's choice as a top-level key
    (``choice/shaper: ppl,position``) so runs group by strategy in the UI. The choices come from
    the run folder's ``choices.json`` when it holds one (a resumed run's are the original's)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    saved = Path(run_dir) / rf.CHOICES if run_dir is not None else None
    if saved is not None and saved.is_file():
        for group, choice in json.loads(saved.read_text()).items():
            if not group.startswith("hydra/") and choice is not None:
                out[f"choice/{group}"] = ",".join(choice) if isinstance(choice, list) else str(choice)
        return out
    try:
        from hydra.core.hydra_config import HydraConfig

        out.update(choice_config(dict(HydraConfig.get().runtime.choices), list(cfg.shaper)))
    except ValueError:  # composed outside @hydra.main (tests): no runtime choices
        pass
    return out
