"""The per-step analysis a run carries along: live metrics of the scored batch, the probe set,
and W&B media (docs/method.md section 7; arXiv 2508.02260, instance- and token-level analysis). The
trainer calls these hooks and knows nothing else about them."""
from __future__ import annotations

from dataclasses import replace

import torch
from transformers import PreTrainedTokenizerBase

from rlvr_exp.algos.logprobs import LogProbSpec
from rlvr_exp.analysis.defects import RepetitionRule
from rlvr_exp.analysis.live import LiveOptions, batch_metrics
from rlvr_exp.analysis.media import TokenTexts, build_media
from rlvr_exp.analysis.probe import ProbeSet
from rlvr_exp.answers import AnswerFormat
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.logging.meters import MeanMeter


def _int_at_least(key: str, value: object, low: int) -> int:
    """``value`` when it is an int >= ``low``; else ValueError naming ``analysis.<key>``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"analysis.{key} must be an integer >= {low}, got {value!r}")
    return value


def _fraction(key: str, value: object) -> float:
    """``value`` when it is a number in (0, 1]; else ValueError naming ``analysis.<key>``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"analysis.{key} must be a number in (0, 1], got {value!r}")
    return float(value)


class TokenDecoder:
    """Token texts of ids, one ``decode`` per id (special tokens shown)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, ids: list[int]) -> list[str]:
        return self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)


class StepAnalysis:
    """Hooks, in the order the trainer calls them each step:
    ``observe(batch, step)`` after scoring (the probe set is filled from the first batches that
    have each side, :mod:`rlvr_exp.analysis.probe`), ``batch_metrics(batch)`` after the update,
    ``probe_metrics(step, policy, spec)`` every step (returns {} unless ``step % probe_every == 0``),
    ``media(step, batch)`` on token-dump steps when a W&B run exists. ``bind_tokenizer`` (called once by ``build``) lets the media
    show token texts; ``bind_answer_format`` (the task's, also from ``build``) turns on the
    no-answer defect share.

    With ``enabled=False`` only :func:`rlvr_exp.analysis.live.basic_metrics` is computed: no
    position/top-entropy/quantile/defect metrics, no probe, no media. ``probe_every=0`` turns
    the probe off alone; ``table_rows=0`` keeps the histograms but drops the sample table.
    The repetition knobs are those of :class:`rlvr_exp.analysis.defects.RepetitionRule`; the
    ``probe_*`` knobs those of :class:`rlvr_exp.analysis.probe.ProbeSet`.
    """

    def __init__(
        self,
        enabled: bool = True,
        position_buckets: int = 5,
        top_entropy_fraction: float = 0.2,
        probe_every: int = 10,
        probe_samples_per_side: int = 32,
        probe_rows_per_pass: int = 64,
        probe_max_per_prompt: int = 2,
        probe_fill_steps: int = 5,
        probe_bootstrap_resamples: int = 1000,
        probe_bootstrap_seed: int = 0,
        table_rows: int = 16,
        repetition_tail_fraction: float = 0.5,
        repetition_min_repeats: int = 3,
        repetition_min_tail_chars: int = 8,
    ) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"analysis.enabled must be true or false, got {enabled!r}")
        self.enabled = enabled
        rule = RepetitionRule(
            tail_fraction=_fraction("repetition_tail_fraction", repetition_tail_fraction),
            min_repeats=_int_at_least("repetition_min_repeats", repetition_min_repeats, 2),
            min_tail_chars=_int_at_least("repetition_min_tail_chars", repetition_min_tail_chars, 1),
        )
        self.options = LiveOptions(
            position_buckets=_int_at_least("position_buckets", position_buckets, 1),
            top_entropy_fraction=_fraction("top_entropy_fraction", top_entropy_fraction),
            repetition=rule,
        )
        self.probe_every = _int_at_least("probe_every", probe_every, 0)
        self.probe = ProbeSet(
            _int_at_least("probe_samples_per_side", probe_samples_per_side, 1),
            _int_at_least("probe_rows_per_pass", probe_rows_per_pass, 1),
            max_per_prompt=_int_at_least("probe_max_per_prompt", probe_max_per_prompt, 1),
            fill_steps=_int_at_least("probe_fill_steps", probe_fill_steps, 1),
            bootstrap_resamples=_int_at_least("probe_bootstrap_resamples", probe_bootstrap_resamples, 1),
            bootstrap_seed=_int_at_least("probe_bootstrap_seed", probe_bootstrap_seed, 0))
        self.table_rows = _int_at_least("table_rows", table_rows, 0)
        self.token_texts: TokenTexts | None = None

    @property
    def probing(self) -> bool:
        return self.enabled and self.probe_every > 0

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Lets ``media`` render token texts (without it, token ids are shown)."""
        self.token_texts = TokenDecoder(tokenizer)

    def bind_answer_format(self, answer_format: AnswerFormat | None) -> None:
        """Measures ``defect/no_<name>_share`` in ``answer_format`` (None: not measured)."""
        self.options = replace(self.options, answer_format=answer_format)

    def observe(self, batch: RolloutBatch, step: int) -> None:
        """Fills the probe sides still open from the scored ``batch`` of ``step``."""
        if self.probing:
            self.probe.capture(batch, step)

    def batch_metrics(self, batch: RolloutBatch) -> MeanMeter:
        return batch_metrics(batch, self.options if self.enabled else None)

    def probe_metrics(self, step: int, policy: torch.nn.Module, spec: LogProbSpec) -> dict[str, float]:
        """Re-scores the probe with ``spec`` (the trainer's: the one its ``logp_old`` came from)."""
        if not self.probing or step % self.probe_every:
            return {}
        return self.probe.metrics(policy, spec)

    def media(self, step: int, batch: RolloutBatch) -> dict[str, object]:
        if not self.enabled:
            return {}
        return build_media(step, batch, self.table_rows, self.token_texts)

    def state_dict(self) -> dict:
        return {"probe": self.probe.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.probe.load_state_dict(state["probe"])
