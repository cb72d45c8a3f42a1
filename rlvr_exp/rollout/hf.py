"""Rollout with transformers ``generate`` on the policy itself (the default; no weight copy)."""
from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel

from rlvr_exp.faults import NonFiniteLogits, NonFiniteLogitsError
from rlvr_exp.rollout.base import SamplingParams


def generation_config(sampling: SamplingParams, pad_id: int, eos_id: int) -> GenerationConfig:
    """Every parameter that shapes the sampled distribution, set explicitly: plain temperature /
    nucleus sampling (greedy at temperature 0), no top-k, repetition or length penalties, no
    minimum length. transformers fills any value left None from the model's own
    ``generation_config`` (a Qwen or SmolLM2 checkpoint ships top_k, repetition_penalty, ...),
    which would change what the trainer believes it sampled; :meth:`HFRollout._generate_chunk`
    also hides the model's config during the call."""
    greedy = sampling.temperature == 0.0
    return GenerationConfig(
        do_sample=not greedy, num_beams=1, temperature=1.0 if greedy else sampling.temperature,
        top_p=1.0 if greedy else sampling.top_p, top_k=None if greedy else 0, min_p=None, typical_p=1.0,
        epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, length_penalty=1.0, min_new_tokens=0,
        max_new_tokens=sampling.max_new_tokens, renormalize_logits=False, remove_invalid_values=False,
        num_return_sequences=1, pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=None,
    )


class HFRollout:
    """Samples with ``model.generate`` in chunks of ``max_batch_sequences`` sequences.

    Sampling is set completely by :func:`generation_config` (``top_k`` 0 so temperature 1 /
    top_p 1 samples the full distribution; transformers' default top_k=50 would truncate it) and
    never inherits the model's ``generation_config``. Logits that are NaN or infinite
    raise :class:`NonFiniteLogitsError` after sampling (rlvr_exp/faults.py), never a raw
    ``torch.multinomial`` error or CUDA device-side assert.
    """

    def __init__(self, max_batch_sequences: int = 512) -> None:
        if max_batch_sequences < 1:
            raise ValueError(f"rollout.max_batch_sequences must be >= 1, got {max_batch_sequences}")
        self.max_batch_sequences = max_batch_sequences
        self.model: PreTrainedModel | None = None
        self.pad_id = self.eos_id = 0

    def bind(self, model: PreTrainedModel, pad_id: int, eos_id: int) -> None:
        self.model, self.pad_id, self.eos_id = model, pad_id, eos_id

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # generates with the live policy: nothing to copy

    def close(self) -> None:
        self.model = None

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        if self.model is None:
            raise RuntimeError("HFRollout.generate called before bind(model, pad_id, eos_id)")
        flat = [p for p in prompts for _ in range(sampling.n)]
        out: list[list[int]] = []
        was_training = self.model.training
        self.model.eval()
        for start in range(0, len(flat), self.max_batch_sequences):
            out.extend(self._generate_chunk(flat[start : start + self.max_batch_sequences], sampling))
        self.model.train(was_training)
        return out

    def _generate_chunk(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        width = max(map(len, prompts))
        device = self.model.device
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        check = NonFiniteLogits()
        model_defaults = self.model.generation_config
        self.model.generation_config = GenerationConfig()  # nothing to inherit: see generation_config()
        try:
            seqs = self.model.generate(
                input_ids=ids, attention_mask=mask, logits_processor=LogitsProcessorList([check]),
                generation_config=generation_config(sampling, self.pad_id, self.eos_id),
            )[:, width:].tolist()
        finally:
            self.model.generation_config = model_defaults
        if check.seen:
            raise NonFiniteLogitsError("the policy's logits were NaN or infinite while sampling")
        responses = []
        for s in seqs:
            end = s.index(self.eos_id) + 1 if self.eos_id in s else len(s)
            responses.append(s[:end])
        return responses
