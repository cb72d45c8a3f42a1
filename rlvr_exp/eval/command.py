"""The evaluation command, ``python -m rlvr_exp.evaluate`` (conf/evaluate.yaml): a base model or a
trained checkpoint, k samples per problem on each benchmark of the task, avg@k / maj@k / pass@k per
benchmark and their unweighted mean (docs/method.md section 7), written to ``results.json`` and
``results.md`` in the output folder (and to W&B when ``logger.mode`` is not ``disabled``)."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import transformers
from omegaconf import DictConfig, OmegaConf

from rlvr_exp.build import make
from rlvr_exp.checkpoint import find_checkpoint
from rlvr_exp.config import ConfigError
from rlvr_exp.evaluate import Evaluator
from rlvr_exp.rollout.base import SamplingParams
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

log = logging.getLogger(__name__)
RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


@dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` node of conf/evaluate.yaml (its defaults live there)."""

    samples_per_problem: int
    temperature: float
    top_p: float
    max_prompt_tokens: int
    max_response_tokens: int
    max_problems: int | None
    problems_per_call: int
    num_threads: int

    def __post_init__(self) -> None:
        for key in ("samples_per_problem", "max_prompt_tokens", "max_response_tokens", "problems_per_call"):
            if getattr(self, key) < 1:
                raise ValueError(f"eval.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_problems is not None and self.max_problems < 1:
            raise ValueError(f"eval.max_problems must be >= 1 or null, got {self.max_problems}")
        if not self.temperature > 0.0:
            raise ValueError(f"eval.temperature must be > 0 (sampling), got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"eval.top_p must be in (0, 1], got {self.top_p}")
        if self.num_threads < 0:
            raise ValueError(f"eval.num_threads must be >= 0, got {self.num_threads}")

    def sampling(self) -> SamplingParams:
        return SamplingParams(n=self.samples_per_problem, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_response_tokens)


def resolve_checkpoint(checkpoint: str | None) -> Path | None:
    """The checkpoint folder named by ``checkpoint=`` (a run folder: its newest one)."""
    if checkpoint is None:
        return None
    try:
        return find_checkpoint(checkpoint)
    except FileNotFoundError as err:
        raise ConfigError(str(err).replace("trainer.resume_from", "checkpoint")) from err


def load_checkpoint_weights(policy: torch.nn.Module, checkpoint: Path) -> None:
    """Load ``checkpoint/policy`` (save_pretrained by the trainer) into the model built by ``model=``."""
    weights = type(policy).from_pretrained(checkpoint / "policy", dtype=policy.dtype)
    policy.load_state_dict(weights.state_dict())


def benchmarks_of(task: object, max_problems: int | None) -> dict[str, list[Problem]]:
    sets = {name: problems[:max_problems] for name, problems in task.val_sets().items()}
    empty = [name for name, problems in sets.items() if not problems]
    if empty:
        raise ConfigError(f"task: the benchmarks {empty} hold no problems; check the task's validation files")
    return sets


def markdown_table(results: dict) -> str:
    rows = {**results["benchmarks"], "mean": results["mean"]}
    first = ("accuracy", "boxed_rate")
    keys = [k for k in first if k in results["mean"]] + [k for k in results["mean"] if k not in first]
    lines = ["| benchmark | problems | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for name, metrics in rows.items():
        count = results["problems"].get(name, sum(results["problems"].values()))
        lines.append(f"| {name} | {count} | " + " | ".join(f"{metrics[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def evaluate_command(cfg: DictConfig, out_dir: Path) -> dict:
    """Build (cheap parts and checks first), load, score, write the results; returns them."""
    settings: EvalSettings = make("eval", cfg.eval)
    checkpoint = resolve_checkpoint(cfg.checkpoint)
    task, reward_fn, rollout = make("task", cfg.task), make("reward", cfg.reward), make("rollout", cfg.rollout)
    model_cfg = cfg.model
    if checkpoint is not None and "warmstart" in model_cfg:
        # the checkpoint's weights replace the whole policy: a warm-start (minutes on a new machine) would be thrown away
        model_cfg = OmegaConf.merge(model_cfg, {"warmstart": {"enabled": False}})
    logger, model_spec = make("logger", cfg.logger), make("model", model_cfg)
    benchmarks = benchmarks_of(task, settings.max_problems)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    transformers.utils.logging.disable_progress_bar()
    policy, tokenizer = model_spec.load(task)
    if checkpoint is not None:
        log.info("loading the policy of %s", checkpoint)
        load_checkpoint_weights(policy, checkpoint)
    policy.eval()
    rollout.bind(policy, tokenizer.pad_token_id, tokenizer.eos_token_id)
    encoder = PromptEncoder(tokenizer, model_spec.chat_template, settings.max_prompt_tokens)
    evaluator = Evaluator(benchmarks, rollout, reward_fn, encoder, tokenizer, settings.sampling(), int(cfg.seed),
                          task.answer_format, problems_per_call=settings.problems_per_call, progress=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    logger.start(out_dir, config, total_steps=0)
    try:
        torch.manual_seed(int(cfg.seed))
        scores = {name: evaluator.score(name, problems) for name, problems in benchmarks.items()}
        shared = [k for k in next(iter(scores.values())) if all(k in s for s in scores.values())]
        mean = {k: sum(s[k] for s in scores.values()) / len(scores) for k in shared}
        results = {"benchmarks": scores, "mean": mean, "problems": {n: len(p) for n, p in benchmarks.items()},
                   "checkpoint": None if checkpoint is None else str(checkpoint), "settings": asdict(settings),
                   "config": config}
        (out_dir / RESULTS_JSON).write_text(json.dumps(results, indent=2))
        (out_dir / RESULTS_MD).write_text(markdown_table(results))
        logger.log(0, {f"eval/{name}/{k}": v for name, s in {**scores, "mean": mean}.items() for k, v in s.items()})
        logger.summary({f"eval/mean/{k}": v for k, v in mean.items()})
        log.info("results in %s\n%s", out_dir / RESULTS_MD, markdown_table(results))
    finally:
        logger.finish()
        reward_fn.close()
        rollout.close()
    return results
