"""The trainer's knobs, checked at start-up (before any model loads). Sizes carry their units;
derived sizes (responses per step, optimizer updates per step) are computed, never set."""
from __future__ import annotations

import math
from dataclasses import dataclass

LR_SCHEDULES = ("constant", "cosine")
OLD_LOGPROBS = ("auto", "rollout", "recompute")


class ConfigError(ValueError):
    """A bad configuration value; the message names the key, the value and the fix."""


@dataclass(frozen=True)
class TrainerConfig:
    steps: int = 200
    prompts_per_step: int = 32
    samples_per_prompt: int = 8
    prompts_per_minibatch: int = 8
    samples_per_microbatch: int = 64
    max_prompt_tokens: int = 64
    max_response_tokens: int = 16
    max_prompt_cut_share: float = 0.25
    temperature: float = 1.0
    top_p: float = 1.0
    dynamic_sampling: bool = True
    max_sampling_rounds: int = 2
    overlong_buffer_tokens: int = 0
    overlong_penalty: float = 1.0
    mask_truncated: bool = False
    lr: float = 3.0e-4
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    lr_min_ratio: float = 0.1
    lr_horizon_steps: int | None = None
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    max_nonfinite_skips: int = 3
    val_every: int = 20
    val_samples_per_problem: int = 4
    val_temperature: float = 0.6
    val_top_p: float = 0.95
    val_max_problems: int | None = None
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    dump_tokens_every: int = 10
    dump_samples: int | None = None
    score_rows_per_pass: int = 64
    score_entropy: bool = True
    old_logprobs: str = "auto"
    share_prompts: bool = True
    logprob_chunk_tokens: int = 1024
    num_threads: int = 0
    resume_from: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "prompts_per_step", "samples_per_prompt", "prompts_per_minibatch",
                    "samples_per_microbatch", "max_prompt_tokens", "max_response_tokens",
                    "max_sampling_rounds", "val_samples_per_problem", "score_rows_per_pass", "max_nonfinite_skips")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"trainer.{name} must be >= 1, got {getattr(self, name)}")
        if self.prompts_per_step % self.prompts_per_minibatch:
            divisors = [d for d in range(1, self.prompts_per_step + 1) if self.prompts_per_step % d == 0]
            raise ConfigError(
                f"trainer.prompts_per_step ({self.prompts_per_step}) must be a multiple of "
                f"trainer.prompts_per_minibatch ({self.prompts_per_minibatch}), the prompts per optimizer update; "
                f"changing one means setting the other too, e.g. trainer.prompts_per_minibatch="
                f"{max(d for d in divisors if d <= self.prompts_per_minibatch)} (divisors of "
                f"{self.prompts_per_step}: {divisors[:12]})")
        if not 0.0 <= self.max_prompt_cut_share <= 1.0:
            raise ConfigError(f"trainer.max_prompt_cut_share must be in [0, 1], got {self.max_prompt_cut_share}")
        if self.samples_per_prompt < 2:
            raise ConfigError(f"trainer.samples_per_prompt must be >= 2 for group advantages, got {self.samples_per_prompt}")
        if not self.temperature > 0:
            raise ConfigError(f"trainer.temperature must be > 0 (the trainer scores samples at it), got {self.temperature}")
        if self.val_temperature < 0:
            raise ConfigError(f"trainer.val_temperature must be >= 0 (0 is greedy), got {self.val_temperature}")
        for name in ("top_p", "val_top_p"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"trainer.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"trainer.{name} must be > 0, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_every", "checkpoint_every", "dump_tokens_every",
                     "overlong_buffer_tokens", "weight_decay", "num_threads", "keep_checkpoints",
                     "logprob_chunk_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"trainer.{name} must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if self.old_logprobs not in OLD_LOGPROBS:
            raise ConfigError(f"trainer.old_logprobs must be one of {OLD_LOGPROBS}, got {self.old_logprobs!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"trainer.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_horizon_steps is not None and self.lr_horizon_steps < 1:
            raise ConfigError(f"trainer.lr_horizon_steps must be >= 1 or null (= trainer.steps), got {self.lr_horizon_steps}")
        if not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ConfigError(f"trainer.lr_min_ratio must be in [0, 1], got {self.lr_min_ratio}")
        if self.overlong_buffer_tokens >= self.max_response_tokens:
            raise ConfigError(
                f"trainer.overlong_buffer_tokens ({self.overlong_buffer_tokens}) must be below "
                f"trainer.max_response_tokens ({self.max_response_tokens})")

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` after ``step`` scheduler steps: linear warm-up over
        ``warmup_steps``, then constant (the paper's setting) or a cosine decay to
        ``lr_min_ratio`` at step ``lr_horizon_steps`` (default ``steps``; a resume that changes
        ``steps`` keeps the original horizon, rlvr_exp/resume.py), constant after it."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return 1.0
        horizon = self.lr_horizon_steps or self.steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, horizon - self.warmup_steps))
        return self.lr_min_ratio + (1.0 - self.lr_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def sampler_scores(self, rollout_scores_samples: bool) -> bool:
        """Whether ``logp_old`` and the entropies come from the sampling pass (``old_logprobs``:
        ``rollout``, or ``auto`` with a rollout that samples with the policy's own forward) rather
        than from a scoring pass over the batch (``recompute``)."""
        return self.old_logprobs == "rollout" or (self.old_logprobs == "auto" and rollout_scores_samples)

    @property
    def responses_per_step(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def updates_per_step(self) -> int:
        return self.prompts_per_step // self.prompts_per_minibatch
