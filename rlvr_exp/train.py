"""Entry point: ``python -m rlvr_exp.train [overrides]``. Builds, fits, returns the metric that
a Hydra sweeper optimises (``optimized_metric``, default ``val/accuracy_final``).

Under ``torchrun ... -m rlvr_exp.train distributed=fsdp`` every rank runs this; rank 0 alone
plans the job folder and writes the config files (the others wait and take its plan)."""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import hydra
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlvr_exp import jobs, resume, typos
from rlvr_exp import run_files as rf
from rlvr_exp.build import build, make
from rlvr_exp.config import ConfigError
from rlvr_exp.distributed import SingleProcess, run_stamp
from rlvr_exp.faults import CheckpointError, NumericalFault

log = logging.getLogger(__name__)
resume.register_resolvers()  # conf/train.yaml's hydra.run.dir uses them
OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True)
HYDRA_FILES = {".hydra", "train.log"}  # what Hydra writes into a run folder before main runs


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    made_now = {p.name for p in run_dir.iterdir()} <= HYDRA_FILES  # Hydra made it for this process
    try:
        dist = make("distributed", cfg.distributed)
        dist.start()
        try:
            return run(cfg, dist, run_dir, overrides)
        finally:
            dist.close()
    except ConfigError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the launcher reports it; the job folder keeps error.txt
            jobs.record_error(run_dir, overrides)
            raise
        if made_now:  # a refused config leaves no run folder behind (nor an empty dated parent)
            shutil.rmtree(run_dir, ignore_errors=True)
            if run_dir.parent != Path.cwd() and not any(run_dir.parent.iterdir()):
                run_dir.parent.rmdir()
        log.error("refused: %s", err)
        sys.exit(2)
    except (NumericalFault, CheckpointError) as err:  # named faults: the message says what to do
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        log.error("stopped: %s", err)  # the line before names error.txt, which holds the traceback
        sys.exit(3)


def start_job(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> tuple[DictConfig, dict | None]:
    """The config to train (the saved one on a user's resume) and, for a finished sweep job to
    skip, its stored summary (None otherwise). Files the folder's leftovers and writes the config."""
    try:  # the folder Hydra made must take files before anything else is checked
        (run_dir / ".write_test").write_text("")
        (run_dir / ".write_test").unlink()
    except OSError as err:
        raise ConfigError(f"the output folder {run_dir} cannot be written ({err}); point hydra.run.dir "
                          "(hydra.sweep.dir for -m) at a writable place") from None
    if cfg.trainer.resume_from is not None:  # the user's resume: the saved config, in its folder
        return resume.continue_config(run_dir, cfg), None
    job = jobs.plan(run_dir, overrides, None)
    if job.action == "skip":
        return cfg, job.summary
    jobs.prepare(job, overrides)
    if job.action == "resume":
        log.info("resuming from %s", job.checkpoint)
        cfg.trainer.resume_from = str(job.checkpoint)
    write_config(run_dir, cfg)
    return cfg, None


def run(cfg: DictConfig, dist: SingleProcess, run_dir: Path, overrides: list[str]) -> float | None:
    cfg, finished = dist.on_main(lambda: start_job(run_dir, cfg, overrides))  # rank 0 decides for all
    if finished is not None:
        log.info("skipped: %s already holds %s (delete it to train again)", run_dir, jobs.SUMMARY_FILE)
        return jobs.stored_metric(finished, cfg.optimized_metric)
    try:
        jobs.use_standard_start_method()
        transformers.utils.logging.disable_progress_bar()
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        trainer = build(cfg, run_dir, dist)
        summary = trainer.fit()
    except ConfigError:
        raise  # refused before training: main prints one line
    except Exception:
        log.error("failed; traceback in %s", jobs.record_error(run_dir, overrides))
        raise
    log.info("summary: %s", {k: summary[k] for k in sorted(summary) if k.startswith(("val/accuracy", "entropy/mean_"))})
    return jobs.stored_metric(summary, cfg.optimized_metric)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """The resolved config and the config-group choices, beside the metrics."""
    (run_dir / resume.CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    choices = dict(HydraConfig.get().runtime.choices)
    choices.setdefault("shaper", list(cfg.shaper))  # Hydra leaves list choices (shaper=[ppl,position]) out
    (run_dir / rf.CHOICES).write_text(json.dumps(choices, indent=2))


if __name__ == "__main__":
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and (hint := typos.unknown_key_hint(sys.argv[1:])):  # Hydra refused a typo
            log.error("%s", hint)
        raise
