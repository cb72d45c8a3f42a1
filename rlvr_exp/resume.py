"""Resuming with ``trainer.resume_from``: one run, one folder, the saved config.

``python -m rlvr_exp.train trainer.resume_from=<run folder or checkpoint>`` continues the run it
names:

- **One folder.** ``hydra.run.dir`` resolves (``${rlvr_run_dir:...}`` in conf/train.yaml) to the
  run folder of that checkpoint, so the resumed process writes its log, metrics, checkpoints and
  W&B files there, and no new dated folder is made. Hydra does not rewrite ``.hydra/`` then
  (``hydra.output_subdir`` resolves to null), and ``config_resolved.yaml`` and ``choices.json``
  stay the original run's.
- **The saved config is the config.** The run's ``config_resolved.yaml`` is what trains. An
  override on the resume command that changes it is refused with the list of differences, except:

  - ``trainer.steps`` (train further, or stop sooner). The learning-rate schedule keeps the
    original run's horizon (``trainer.lr_horizon_steps`` is set to the original ``trainer.steps``),
    so the cosine schedule never jumps: past the original last step it stays at
    ``lr_min_ratio * lr``.
  - the environment of the process, which does not change what is trained: ``logger.*`` (W&B mode,
    project, progress bar), ``trainer.num_threads`` and ``trainer.resume_from`` itself. These
    always take the resume command's values.

A sweep job that finds its own checkpoint (a rerun, a SLURM requeue) resumes through
:mod:`rlvr_exp.jobs` instead, with the same command and so the same config.
"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from rlvr_exp import run_files as rf
from rlvr_exp.checkpoint import STATE_FILE, find_checkpoint
from rlvr_exp.config import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE = rf.CONFIG
#: Keys a resume may change (prefix match); see the module docstring.
CHANGEABLE = ("trainer.steps",)
#: Keys that always take the resume command's values: they describe the process, not the run.
ENVIRONMENT = ("logger", "trainer.num_threads", "trainer.resume_from")


def run_dir_of(resume_from: str | None, default: str) -> str | None:
    """The folder a run writes to: ``default`` for a new run; the run folder of ``resume_from``
    (a run folder, or a ``checkpoints/step_*`` folder in one) for a resume. A path that does not
    exist gives ``default``: the trainer then refuses it with a clear message."""
    if resume_from is None:
        return default
    path = Path(resume_from).expanduser()
    if (path / STATE_FILE).is_file() and path.parent.name == rf.CHECKPOINTS:
        return str(path.parent.parent)
    return str(path) if (path / CONFIG_FILE).is_file() else default


def hydra_subdir_of(resume_from: str | None) -> str | None:
    """``.hydra`` for a new run; None (Hydra writes no config files) when resuming one."""
    return ".hydra" if resume_from is None else None


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("rlvr_run_dir", run_dir_of, replace=True)
    OmegaConf.register_new_resolver("rlvr_hydra_subdir", hydra_subdir_of, replace=True)


def flatten(node: object, prefix: str = "") -> dict[str, object]:
    """``{"trainer.steps": 200, ...}``: the leaves of a plain container, by dotted key."""
    if isinstance(node, dict):
        if not node and prefix:
            return {prefix: {}}
        out: dict[str, object] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def _matches(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


_MISSING = "<absent>"


def changes(saved: dict, base: dict, current: dict, overrides: list[str]) -> dict[str, tuple[object, object]]:
    """The keys the resume command sets (named by an override, or differing from the plain
    defaults ``base``: an experiment preset) to a value other than the saved one:
    key -> (saved, asked)."""
    saved_f, base_f, current_f = flatten(saved), flatten(base), flatten(current)
    named = tuple(o.split("=", 1)[0].lstrip("+~") for o in overrides)
    touched = {k for k in base_f.keys() | current_f.keys() | saved_f.keys()
               if base_f.get(k, _MISSING) != current_f.get(k, _MISSING) or _matches(k, named)}
    return {k: (saved_f.get(k, _MISSING), current_f.get(k, _MISSING)) for k in sorted(touched)
            if saved_f.get(k, _MISSING) != current_f.get(k, _MISSING)}


def continue_config(run_dir: Path, cfg: DictConfig) -> DictConfig:
    """The config of the resumed run in ``run_dir``: its saved config with the changeable keys
    and the environment taken from ``cfg``. Raises ConfigError (before any model loads) when
    ``trainer.resume_from`` holds no checkpoint or the command changes what is trained."""
    resume_from = cfg.trainer.resume_from
    try:
        checkpoint = find_checkpoint(resume_from)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    saved_path = Path(run_dir) / CONFIG_FILE
    if not saved_path.is_file():
        raise ConfigError(f"trainer.resume_from={resume_from}: {saved_path} is missing, so the run's config is "
                          "unknown; resume a run folder written by `python -m rlvr_exp.train`")
    saved = OmegaConf.to_container(OmegaConf.load(saved_path))
    current = OmegaConf.to_container(cfg, resolve=True)
    base = OmegaConf.to_container(compose(config_name=HydraConfig.get().job.config_name), resolve=True)
    asked = changes(saved, base, current, list(HydraConfig.get().overrides.task))
    diff = {k: v for k, v in asked.items() if not _matches(k, CHANGEABLE + ENVIRONMENT)}
    if diff:
        lines = "\n".join(f"  {k}: saved {s!r}, asked {c!r}" for k, (s, c) in diff.items())
        raise ConfigError(
            f"trainer.resume_from={resume_from} continues the run in {run_dir} with its saved config "
            f"({CONFIG_FILE}); this command changes it:\n{lines}\nDrop these overrides (a resume may change only "
            f"{', '.join(CHANGEABLE)} and {', '.join(ENVIRONMENT)}), or start a new run.")
    out = dict(saved)
    out["logger"] = current["logger"]
    trainer = dict(saved["trainer"])
    trainer.update(num_threads=current["trainer"]["num_threads"], resume_from=str(checkpoint))
    if "trainer.steps" in asked:
        horizon = saved["trainer"].get("lr_horizon_steps") or saved["trainer"]["steps"]  # absent in older runs
        trainer.update(steps=current["trainer"]["steps"], lr_horizon_steps=horizon)
        log.info("trainer.steps %d -> %d on resume; the lr schedule keeps its horizon of %d steps",
                 saved["trainer"]["steps"], trainer["steps"], horizon)
    out["trainer"] = trainer
    result = OmegaConf.create(out)
    OmegaConf.set_struct(result, True)
    return result
