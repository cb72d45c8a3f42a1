"""Rollout on the policy itself with a lean decoding loop (the default; no weight copy).

The loop is what transformers ``generate`` does for plain sampling, without its per-token
machinery: one prefill of the left-padded prompts into a ``DynamicCache``, then one token per
forward pass, sampled from softmax of the temperature- and nucleus-processed logits
(transformers' own ``TemperatureLogitsWarper`` and ``TopPLogitsWarper``, so the distribution is
``generate``'s with ``top_k=0``; greedy at temperature 0). Two differences, neither of which
changes what is sampled:
- a prompt's G samples share one prefill (``share_prompts``): the prompt runs once and its KV
  cache is copied to its rows; and rows that have emitted EOS leave the batch (their KV cache
  rows are dropped), so the decode steps after a response ends cost nothing for it (``generate``
  prefills every row and keeps computing finished ones as padding);
- the log-prob and entropy of each sampled token under softmax(z / temperature) are taken from
  the logits the sampler already has (:meth:`HFRollout.generate_scored`), so the trainer needs no
  scoring pass; they equal the recomputed ones (rlvr_exp/algos/logprobs.py) to float round-off
  (tests/unit/test_rollout.py states the tolerance).
The model's own ``generation_config`` (top_k, repetition penalty, ...) is never read. Under FSDP
with several ranks every rank keeps calling the (collective) forward until all ranks are done,
as ``generate(synced_gpus=True)`` does, and no row leaves the batch. Logits that are NaN or
infinite raise :class:`NonFiniteLogitsError` after sampling (rlvr_exp/faults.py), never a raw
``torch.multinomial`` error or CUDA device-side assert.
"""
from __future__ import annotations

import torch
import torch.distributed as tdist
from transformers import DynamicCache, LogitsProcessorList, PreTrainedModel, TemperatureLogitsWarper, TopPLogitsWarper
from transformers.integrations.fsdp import is_fsdp_managed_module

from rlvr_exp.algos.logprobs import logprob_and_entropy_from_logits
from rlvr_exp.faults import NonFiniteLogits, NonFiniteLogitsError
from rlvr_exp.rollout.base import SamplingParams, ScoredResponses


def warpers(sampling: SamplingParams) -> LogitsProcessorList:
    """The logits processing of plain temperature / nucleus sampling, in ``generate``'s order
    (none when greedy, or at temperature 1 with top_p 1)."""
    out = LogitsProcessorList()
    if sampling.temperature not in (0.0, 1.0):
        out.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.temperature != 0.0 and sampling.top_p < 1.0:
        out.append(TopPLogitsWarper(sampling.top_p))
    return out


class HFRollout:
    """Samples on the live policy in chunks of ``max_batch_sequences`` sequences (module docstring)."""

    scores_samples = True

    def __init__(self, max_batch_sequences: int = 512, share_prompts: bool = True) -> None:
        if max_batch_sequences < 1:
            raise ValueError(f"rollout.max_batch_sequences must be >= 1, got {max_batch_sequences}")
        self.max_batch_sequences, self.share_prompts = max_batch_sequences, share_prompts
        self.model: PreTrainedModel | None = None
        self.pad_id = self.eos_id = 0

    def bind(self, model: PreTrainedModel, pad_id: int, eos_id: int) -> None:
        self.model, self.pad_id, self.eos_id = model, pad_id, eos_id

    def sync_weights(self, model: torch.nn.Module) -> None:
        self.model = model  # generates with the live policy: nothing to copy

    def close(self) -> None:
        self.model = None

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        return self._run(prompts, sampling, None)[0]

    def generate_scored(self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool) -> ScoredResponses:
        if not sampling.temperature > 0:
            raise ValueError(f"scored sampling needs a temperature > 0 (the scores are of softmax(z / T)), "
                             f"got {sampling.temperature}")
        return ScoredResponses(*self._run(prompts, sampling, with_entropy))

    @torch.no_grad()
    def _run(
        self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool | None,
    ) -> tuple[list[list[int]], torch.Tensor | None, torch.Tensor | None]:
        """Responses, log-probs [B, T] and entropies [B, T]; ``with_entropy`` None: no scores at all."""
        if self.model is None:
            raise RuntimeError("HFRollout.generate called before bind(model, pad_id, eos_id)")
        flat = [p for p in prompts for _ in range(sampling.n)]
        parts = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(flat), self.max_batch_sequences):
                parts.append(self._sample(flat[start : start + self.max_batch_sequences], sampling, with_entropy))
        finally:
            self.model.train(was_training)
        responses = [r for part in parts for r in part[0]]
        if with_entropy is None:
            return responses, None, None
        width = max(1, max(map(len, responses)))

        def stack(k: int) -> torch.Tensor:
            return torch.cat([torch.nn.functional.pad(part[k], (0, width - part[k].shape[1])) for part in parts])

        return responses, stack(1), (stack(2) if with_entropy else None)

    def _sample(
        self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool | None,
    ) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
        """One chunk: responses, and their log-probs and entropies [N, T] (T: the longest response)."""
        model, device, n = self.model, self.model.device, len(prompts)
        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        position = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate sets them
        synced = is_fsdp_managed_module(model) and tdist.is_initialized() and tdist.get_world_size() > 1
        process, check = warpers(sampling), NonFiniteLogits()
        steps = sampling.max_new_tokens
        tokens = torch.full((n, steps), self.pad_id, dtype=torch.long, device=device)
        logp = torch.zeros(n, steps, device=device)
        ent = torch.zeros(n, steps, device=device)
        lengths = torch.full((n,), steps, dtype=torch.long, device=device)
        active = torch.arange(n, device=device)  # rows of the chunk still sampling
        logits, cache = self._prefill(ids, mask, position)  # [A, V]
        for t in range(steps):
            z = check(None, logits)
            nxt = (torch.multinomial(torch.softmax(process(None, z), -1), 1).squeeze(1) if sampling.temperature
                   else z.argmax(-1))
            nxt = torch.where(lengths[active] > t, nxt, self.pad_id)  # rows done on other ranks' account (synced)
            tokens[active, t] = nxt
            if with_entropy is not None:
                lp, h = logprob_and_entropy_from_logits(z.unsqueeze(1), nxt.unsqueeze(1), with_entropy,
                                                        temperature=sampling.temperature)
                logp[active, t] = lp.squeeze(1)
                if h is not None:
                    ent[active, t] = h.squeeze(1)
            ended = (nxt == self.eos_id) & (lengths[active] > t)
            lengths[active[ended]] = t + 1
            running = lengths[active] > t + 1
            if not self._go_on(bool(running.any()), synced, device) or t + 1 == steps:
                break
            if not synced and not bool(running.all()):
                keep = running.nonzero().squeeze(1)
                active, nxt, mask, position = active[keep], nxt[keep], mask[keep], position[keep]
                cache.batch_select_indices(keep)
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            position = position[:, -1:] + 1
            logits = model(input_ids=nxt.unsqueeze(1), attention_mask=mask, position_ids=position,
                           past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        if check.seen:
            raise NonFiniteLogitsError("the policy's logits were NaN or infinite while sampling")
        longest = max(1, int(lengths.max()))
        keep_mask = torch.arange(steps, device=device) < lengths.unsqueeze(1)
        responses = [row[: int(k)] for row, k in zip(tokens.tolist(), lengths.tolist())]
        return responses, (logp * keep_mask)[:, :longest].cpu(), (ent * keep_mask)[:, :longest].cpu()

    def _prefill(self, ids: torch.Tensor, mask: torch.Tensor, position: torch.Tensor) -> tuple[torch.Tensor, DynamicCache]:
        """The last prompt position's logits [N, V] (float32) and the prompts' KV cache; with
        ``share_prompts`` a prompt repeated by neighbouring rows runs once."""
        same = (ids[1:] == ids[:-1]).all(-1) & (mask[1:] == mask[:-1]).all(-1)  # [N - 1]
        first = torch.cat([same.new_ones(1), ~same]) if self.share_prompts else torch.ones_like(ids[:, 0], dtype=torch.bool)
        unique = first.nonzero().squeeze(1)
        cache = DynamicCache(config=self.model.config)
        logits = self.model(input_ids=ids[unique], attention_mask=mask[unique], position_ids=position[unique],
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        if len(unique) < len(ids):
            run = first.long().cumsum(0) - 1
            cache.batch_select_indices(run)
            logits = logits[run]
        return logits, cache

    @staticmethod
    def _go_on(local: bool, synced: bool, device: torch.device) -> bool:
        """Whether to decode another token: any row of this rank (or, under FSDP, of any rank) runs."""
        if not synced:
            return local
        flag = torch.tensor([float(local)], device=device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        return bool(flag.item())
