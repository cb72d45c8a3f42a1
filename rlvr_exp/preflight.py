"""Start-up checks that need the model's size or tokenizer but not its weights: prompt plus
response must fit the model's context, and prompts must not lose most of their text to
``trainer.max_prompt_tokens``. Both fail with a ConfigError naming the knob and the fix."""
from __future__ import annotations

import logging

from rlvr_exp.config import ConfigError, TrainerConfig
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder

log = logging.getLogger(__name__)
AUDIT_PROMPTS = 512  # training prompts encoded at start-up (evenly spaced over the set)


def check_context(max_positions: int | None, cfg: TrainerConfig, model: str) -> None:
    """Refuse ``max_prompt_tokens + max_response_tokens`` beyond the model's positions (its
    config's ``max_position_embeddings``; None: unknown, not checked)."""
    if max_positions is None:
        return
    total = cfg.max_prompt_tokens + cfg.max_response_tokens
    if total > max_positions:
        raise ConfigError(
            f"trainer.max_prompt_tokens ({cfg.max_prompt_tokens}) + trainer.max_response_tokens "
            f"({cfg.max_response_tokens}) = {total} exceeds the context of {model} ({max_positions} positions, "
            f"max_position_embeddings); lower them so that they sum to at most {max_positions}")


def audit_prompts(encoder: PromptEncoder, problems: list[Problem], max_cut_share: float) -> float:
    """Encode up to :data:`AUDIT_PROMPTS` training prompts; warn once with the number that are
    cut, and refuse when most of them lose more than ``max_cut_share`` of their tokens. Returns
    the share of audited prompts that are cut."""
    if not problems:
        return 0.0
    stride = max(1, len(problems) // AUDIT_PROMPTS)
    sample = problems[::stride][:AUDIT_PROMPTS]
    lost = []
    for problem in sample:
        full = len(encoder.full_ids(problem))
        lost.append(max(0, full - encoder.max_prompt_tokens) / max(1, full))
    cut = sum(share > 0 for share in lost)
    heavy = sum(share > max_cut_share for share in lost)
    if cut:
        log.warning("%d of %d training prompts checked are longer than trainer.max_prompt_tokens=%d and lose "
                    "their start (up to %.0f%% of their tokens); raise trainer.max_prompt_tokens to keep them whole",
                    cut, len(sample), encoder.max_prompt_tokens, 100 * max(lost))
    if heavy * 2 > len(sample):
        raise ConfigError(
            f"{heavy} of {len(sample)} training prompts checked would lose more than "
            f"trainer.max_prompt_cut_share={max_cut_share} of their tokens to trainer.max_prompt_tokens="
            f"{encoder.max_prompt_tokens}: the model would not see the questions. Raise trainer.max_prompt_tokens "
            "(within the model's context), pick a model that fits, or raise trainer.max_prompt_cut_share")
    return cut / len(sample)
