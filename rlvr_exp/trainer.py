"""The loop: rollout -> reward -> advantage -> shaper stack -> loss -> step -> log.

Steps are 1-based: step k is the k-th policy update; the evaluation logged at step 0 is the
policy before RL. The trainer passes data through and never learns a shaper's name.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr_exp import run_files as rf
from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.analysis.step import StepAnalysis
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.checkpoint import find_checkpoint, set_rng_state
from rlvr_exp.collect import Collector, ProblemStream
from rlvr_exp.config import TrainerConfig
from rlvr_exp.distributed import SingleProcess
from rlvr_exp.evaluate import Evaluator
from rlvr_exp.faults import CheckpointError, FaultGuard, NonFiniteLogitsError
from rlvr_exp.logging.run_logger import RunLogger
from rlvr_exp.logging.summary import run_summary
from rlvr_exp.logging.token_dump import dump_tokens, update_shift
from rlvr_exp.rewards.base import Reward
from rlvr_exp.rollout.base import Rollout, SamplingParams
from rlvr_exp.shapers.base import ShaperContext
from rlvr_exp.shapers.stack import ShaperStack
from rlvr_exp.stages.base import StageDetector
from rlvr_exp.tasks.base import Task
from rlvr_exp.tasks.prompts import PromptEncoder
from rlvr_exp.update import ppo_update

log = logging.getLogger(__name__)
SEED_STRIDE = 1_000_003  # rank r samples with seed + r * SEED_STRIDE


@dataclass
class Parts:
    """What ``build.py`` assembles for the trainer."""

    policy: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    task: Task
    rollout: Rollout
    reward_fn: Reward
    algo: PolicyGradient
    shapers: ShaperStack
    detector: StageDetector
    logger: RunLogger
    encoder: PromptEncoder
    analysis: StepAnalysis
    reference: PreTrainedModel | None = None
    dist: SingleProcess = field(default_factory=SingleProcess)  # ranks: reduce, gather, checkpoint format


class Trainer:
    def __init__(self, cfg: TrainerConfig, parts: Parts, run_dir: Path, seed: int, config: dict) -> None:
        self.cfg, self.p, self.run_dir, self.seed, self.config = cfg, parts, Path(run_dir), seed, config
        self.history: list[dict] = []  # the rows logged so far (for the summary)
        self.start_step = 0
        self.run_id: str | None = None

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg, p = self.cfg, self.p
        torch.manual_seed(self.seed + SEED_STRIDE * p.dist.rank)  # ranks sample differently; rank 0 as one process
        self.optimizer = torch.optim.AdamW(
            [q for q in p.policy.parameters() if q.requires_grad], lr=cfg.lr,
            weight_decay=cfg.weight_decay, betas=tuple(cfg.adam_betas))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, cfg.lr_factor)
        self.spec = LogProbSpec(cfg.temperature, cfg.logprob_chunk_tokens, cfg.share_prompts)  # the sampling distribution
        self.spec.check(p.policy)
        sampling = SamplingParams(cfg.samples_per_prompt, cfg.temperature, cfg.top_p, cfg.max_response_tokens)
        self.stream = ProblemStream(p.task.train_problems(), self.seed)
        self.collector = Collector(
            self.stream, p.rollout, p.reward_fn, p.encoder, p.tokenizer, sampling, cfg.prompts_per_step,
            cfg.dynamic_sampling, cfg.max_sampling_rounds, cfg.overlong_buffer_tokens, cfg.overlong_penalty, p.dist,
            scored=cfg.score_entropy if cfg.sampler_scores(p.rollout.scores_samples) else None)
        val = {name: problems[: cfg.val_max_problems] for name, problems in p.task.val_sets().items()}
        val_sampling = SamplingParams(cfg.val_samples_per_problem, cfg.val_temperature, cfg.val_top_p, cfg.max_response_tokens)
        self.evaluator = Evaluator(val, p.rollout, p.reward_fn, p.encoder, p.tokenizer, val_sampling, self.seed,
                                   p.task.answer_format)
        self.guard = FaultGuard(cfg.max_nonfinite_skips)
        if cfg.resume_from:
            self._resume(find_checkpoint(cfg.resume_from))

    def _resume(self, checkpoint: Path) -> None:
        """Restores every piece of state and continues in the checkpoint's run folder (its
        ``metrics.jsonl`` is cut back to the checkpoint's step, its W&B run id reused)."""
        state = self.p.dist.load_checkpoint(checkpoint, self.p.policy, self.optimizer)
        if checkpoint.parent.name == rf.CHECKPOINTS:
            self.run_dir = checkpoint.parent.parent
        self.scheduler.load_state_dict(state["scheduler"])
        self.stream.load_state_dict(state["stream"])
        self.p.detector.load_state_dict(state["detector"])
        self.p.analysis.load_state_dict(state["analysis"])
        self.history, self.start_step, self.run_id = state["history"], state["step"], state["wandb_run_id"]
        set_rng_state(state["rng"])
        self.p.rollout.sync_weights(self.p.policy)
        self.p.logger.cut_back(self.run_dir, self.start_step)  # drop rows logged after the checkpoint
        self.guard.last_checkpoint = checkpoint
        log.info("resumed from %s at step %d", checkpoint, self.start_step)

    def _save(self, step: int) -> None:
        state = {
            "step": step, "scheduler": self.scheduler.state_dict(),
            "stream": self.stream.state_dict(), "detector": self.p.detector.state_dict(),
            "analysis": self.p.analysis.state_dict(),
            "history": self.history, "wandb_run_id": self.run_id,
        }
        try:
            self.guard.last_checkpoint = self.p.dist.save_checkpoint(
                self.run_dir / rf.CHECKPOINTS, self.p.policy, self.optimizer, self.p.tokenizer, state,
                self.cfg.keep_checkpoints)
        except OSError as err:
            raise CheckpointError(step, self.run_dir / rf.CHECKPOINTS, err, self.guard.last_checkpoint) from err

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, float]:
        """Trains ``cfg.steps`` steps (from a checkpoint when resuming); returns the summary."""
        cfg = self.cfg
        self.setup()
        self.run_id = self.p.logger.start(self.run_dir, self.config, cfg.steps, self.start_step, self.run_id)
        exit_code = 1
        try:
            start = time.perf_counter()
            if self.start_step == 0 and cfg.val_every:
                self._log(0, {**self.evaluator(0), "time/eval": time.perf_counter() - start})
            for step in range(self.start_step + 1, cfg.steps + 1):
                self.guard.step = step
                metrics = self.train_step(step)
                if cfg.val_every and (step % cfg.val_every == 0 or step == cfg.steps):
                    t0 = time.perf_counter()
                    metrics.update(self.evaluator(step))
                    metrics["time/eval"] = time.perf_counter() - t0
                self._log(step, metrics)
                if cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                    self._save(step)
            summary = run_summary(self.history)
            summary["time/wall_seconds"] = time.perf_counter() - start
            self.p.logger.summary(summary)
            exit_code = 0
            return summary
        except NonFiniteLogitsError as err:  # met by the rollout, which does not know the step
            raise self.guard.fault(str(err)) from None
        finally:
            self.p.logger.finish(exit_code)
            # Stop the verifier's worker pool now: a job that ends inside a launcher's worker
            # process (joblib/loky) exits without running the interpreter hooks that would,
            # and would then wait forever on the idle pool worker.
            self.p.reward_fn.close()
            self.p.rollout.close()

    def _log(self, step: int, metrics: dict) -> None:
        self.history.append({"step": step, **metrics})
        self.p.logger.log(step, metrics)

    def train_step(self, step: int) -> dict:
        """One step; returns its metrics (``stage/*`` from the detector after this step)."""
        cfg, p = self.cfg, self.p
        t_step = time.perf_counter()
        batch, metrics = self.collector.collect()
        if batch is None:  # every group was all-equal in every round: nothing to learn from
            metrics["train/skipped_step"] = 1.0
            return {**metrics, **self._stage(step, metrics)}
        batch = batch.to(p.policy.device)
        t0 = time.perf_counter()
        if batch.logp_old is None:  # the sampler did not score its samples (trainer.old_logprobs)
            batch.logp_old, batch.entropy = score_batch(
                p.policy, batch, cfg.score_rows_per_pass, cfg.score_entropy, self.spec)
        self.guard.check_scores("log-probs or entropies", batch.logp_old, batch.entropy)
        if p.reference is not None:
            batch.ref_logp, _ = score_batch(p.reference, batch, cfg.score_rows_per_pass, False, self.spec)
        p.analysis.observe(batch, step)
        t1 = time.perf_counter()
        metrics.update(self._shape(batch, step))
        t2 = time.perf_counter()
        g = cfg.samples_per_prompt
        meter = ppo_update(p.policy, self.optimizer, p.algo, batch, cfg.prompts_per_minibatch * g // p.dist.world_size,
                           cfg.samples_per_microbatch, cfg.max_response_tokens, cfg.grad_clip, self.guard,
                           self.spec, p.dist)
        self.guard.check_parameters(p.policy.parameters())
        self.scheduler.step()
        p.rollout.sync_weights(p.policy)
        t3 = time.perf_counter()
        stats = p.analysis.batch_metrics(batch)
        stats.all_reduce()
        meter.all_reduce()
        metrics.update(stats.means())
        metrics.update(meter.means())
        metrics.update({"time/score": t1 - t0, "time/shape": t2 - t1, "time/update": t3 - t2,
                        "train/lr": self.scheduler.get_last_lr()[0]})
        metrics.update(p.analysis.probe_metrics(step, p.policy, self.spec))
        if cfg.dump_tokens_every and step % cfg.dump_tokens_every == 0:
            shift = update_shift(p.policy, batch, cfg.dump_samples, cfg.score_rows_per_pass, self.spec)
            dump_tokens(self.run_dir, batch, step, cfg.dump_samples, p.dist.shard, shift)
            if p.logger.has_run:
                p.logger.log_media(step, p.analysis.media(step, batch))
        metrics.update(self._stage(step, metrics))
        metrics["time/step"] = time.perf_counter() - t_step
        return metrics

    def _shape(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        batch.advantages_raw = self.p.algo.advantages(batch.rewards, batch.group_ids, batch.response_mask)
        loss_mask = batch.response_mask.clone()
        if self.cfg.mask_truncated:
            loss_mask &= ~batch.truncated.unsqueeze(-1)
        state = self.p.detector.state
        ctx = ShaperContext(
            advantages=batch.advantages_raw, response_mask=batch.response_mask, loss_mask=loss_mask,
            response_len=batch.response_len, step=step, stage=state.name, group_ids=batch.group_ids,
            logp_old=batch.logp_old, entropy=batch.entropy, rel_position=batch.rel_position,
            rewards=batch.rewards, correct=batch.correct, gather=self.p.dist.gather_cat)
        out = self.p.shapers(ctx, state)
        batch.advantages = out.advantages * batch.response_mask
        batch.loss_mask = (out.loss_mask if out.loss_mask is not None else loss_mask) & loss_mask
        batch.token_loss = out.token_loss  # a shaper's per-token loss term, called inside the update
        return self.p.dist.mean_over_ranks(out.metrics)

    def _stage(self, step: int, metrics: dict) -> dict:
        """Every rank's detector sees rank 0's metrics (the logged ones), so all switch together."""
        state = self.p.detector.update(step, self.p.dist.broadcast(metrics))
        return {**self.p.detector.signals(), "stage/name": state.name}
