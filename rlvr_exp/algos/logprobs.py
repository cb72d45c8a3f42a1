"""Per-token log-probs and entropies of response tokens from one forward pass.

Both are taken on the distribution the rollout sampled from, softmax(z / temperature) with the
rollout's temperature (``trainer.temperature``), in scoring (``logp_old``, the entropy, the
reference pass) and in the update, as verl does: otherwise, at any temperature but 1, the
importance ratio would compare the trained policy with a distribution nobody sampled from. The
entropy metric is therefore the entropy of the sampling distribution; at temperature 1 (the
paper's setting, docs/method.md section 8) that is the model's own. Nucleus truncation
(``top_p`` < 1) is not modelled, as in verl: scores are over the full vocabulary.

Two paths give the same numbers (to float round-off; tests/unit/test_chunked_head.py):
- a block of N rows x T response positions with N*T <= ``chunk_tokens`` (or ``chunk_tokens`` 0)
  takes the model's own logits of the response positions (``logits_to_keep``), [N, T, V], and the
  full-vocabulary entropy H = logsumexp(z) - sum_v softmax(z)_v z_v row-chunk by row-chunk;
- a larger block takes the decoder's final hidden states of its response tokens (padding left
  out) and computes the head chunk by chunk, ``chunk_tokens`` tokens at a time, recomputing each
  chunk's logits in the backward (algos/chunked_head.py): the head's memory is bounded by
  ``chunk_tokens`` x V logits instead of growing with N x T x V.
Either way, with ``share_prompts`` a prompt repeated by neighbouring rows (a group's samples) runs
through the model once and its KV cache serves all its rows (``response_states``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from rlvr_exp.algos.chunked_head import check_chunkable, chunked_logprob_entropy
from rlvr_exp.batch import RolloutBatch


@dataclass(frozen=True)
class LogProbSpec:
    """How the trainer scores tokens: ``temperature`` divides the logits (the rollout's, > 0);
    blocks of more than ``chunk_tokens`` tokens go through the LM head in chunks of that many
    (0: never; ``trainer.logprob_chunk_tokens``); ``share_prompts``: a group's prompt runs once
    (``response_states``; ``trainer.share_prompts``)."""

    temperature: float
    chunk_tokens: int
    share_prompts: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"trainer.temperature must be > 0 to score samples, got {self.temperature}")
        if self.chunk_tokens < 0:
            raise ValueError(f"trainer.logprob_chunk_tokens must be >= 0 (0: unchunked), got {self.chunk_tokens}")

    def check(self, model: torch.nn.Module) -> None:
        """Fails early, naming the fix, when chunking is on and ``model``'s head cannot be chunked."""
        if self.chunk_tokens:
            check_chunkable(model)


def logprob_and_entropy_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, with_entropy: bool = True, chunk_rows: int = 64,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [N, T, V], labels [N, T] -> log p(label) [N, T] and entropy [N, T] (nats, float32+)
    of softmax(logits / temperature).

    The entropy is computed without grad (it is only ever a metric or a detached input)."""
    logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if temperature != 1.0:
        logits = logits / temperature
    lse = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse
    if not with_entropy:
        return logp, None
    ent = torch.empty_like(lse, requires_grad=False)
    with torch.no_grad():
        for s in range(0, logits.shape[0], chunk_rows):
            z = logits[s : s + chunk_rows]
            ent[s : s + chunk_rows] = lse[s : s + chunk_rows] - (torch.softmax(z, dim=-1) * z).sum(-1)
    return logp, ent


def model_inputs(batch: RolloutBatch, index: torch.Tensor | slice) -> dict[str, torch.Tensor]:
    """input ids [N, Tp+T], attention mask and position ids for rows ``index`` of the batch."""
    ids = torch.cat([batch.prompt_ids[index], batch.response_ids[index]], dim=1)
    mask = torch.cat([batch.prompt_mask[index], batch.response_mask[index]], dim=1).long()
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids}


def _decode(model: torch.nn.Module, inputs: dict[str, torch.Tensor], keep: int, hidden: bool,
            cache: DynamicCache | None = None) -> torch.Tensor:
    """The last ``keep`` positions' logits [N, keep, V], or (``hidden``) the decoder's final (normed)
    hidden states [N, keep, H], taken by a hook during the model's own forward with the logits of
    one position only: wrappers that act on the model's forward (FSDP2 gathers the root's
    parameters, the LM head's among them, there) see an ordinary call. ``cache``: the KV cache of
    the inputs' prefix (filled by this call)."""
    past = {"past_key_values": cache, "use_cache": True} if cache is not None else {"use_cache": False}
    if not hidden:
        return model(**inputs, logits_to_keep=keep, **past).logits
    captured: list[torch.Tensor] = []
    hook = model.get_decoder().register_forward_hook(lambda _m, _a, out: captured.append(out.last_hidden_state))
    try:
        model(**inputs, logits_to_keep=1, **past)
    finally:
        hook.remove()
    return captured[0][:, -keep:]


def final_hidden_states(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's final (normed) hidden states [N, L, H] of ``inputs`` (see ``_decode``)."""
    return _decode(model, inputs, inputs["input_ids"].shape[1], hidden=True)


def prompt_runs(batch: RolloutBatch, index: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Rows ``index`` that repeat the row before's prompt (a group's samples): the first row of each
    run [U] and each row's run [N]; None when no two neighbours share a prompt."""
    ids, mask = batch.prompt_ids[index], batch.prompt_mask[index]
    if ids.shape[0] < 2:
        return None
    same = ((ids[1:] == ids[:-1]) & (mask[1:] == mask[:-1])).all(-1)  # [N - 1]
    if not bool(same.any()):
        return None
    first = torch.cat([same.new_ones(1), ~same])
    return first.nonzero().squeeze(1), first.long().cumsum(0) - 1


def response_states(
    model: torch.nn.Module, batch: RolloutBatch, index: torch.Tensor | slice, hidden: bool, share: bool,
) -> torch.Tensor:
    """What predicts each response token of rows ``index``: logits [N, T, V], or (``hidden``) the
    decoder's final hidden states [N, T, H].

    ``share``: a prompt that several neighbouring rows repeat (a group's G samples) goes through
    the model once; its KV cache is copied to each of its rows, whose responses then run on it.
    The same numbers as every row running its own prompt (to float round-off, tests/unit/
    test_logprobs.py), with the prompt tokens' cost divided by G, gradients included (they flow
    back through the copied cache). Not under gradient checkpointing while training, where
    transformers turns the cache off."""
    t, tp = batch.response_ids.shape[1], batch.prompt_ids.shape[1]
    inputs = model_inputs(batch, index)
    runs = prompt_runs(batch, index) if share and not (model.training and model.is_gradient_checkpointing) else None
    if runs is None:
        return _decode(model, inputs, t + 1, hidden)[:, :-1]
    first, run = runs
    cache = DynamicCache(config=model.config)
    prompt = {k: v[first, :tp] for k, v in inputs.items()}
    last_prompt = _decode(model, prompt, 1, hidden, cache)  # [U, 1, X]: predicts each response's first token
    cache.batch_select_indices(run)
    rest = {"input_ids": inputs["input_ids"][:, tp:], "attention_mask": inputs["attention_mask"],
            "position_ids": inputs["position_ids"][:, tp:]}
    return torch.cat([last_prompt[run], _decode(model, rest, t, hidden, cache)[:, :-1]], dim=1)


def forward_response(
    model: torch.nn.Module, batch: RolloutBatch, index: torch.Tensor | slice, with_entropy: bool,
    spec: LogProbSpec,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log-probs (and entropies) [N, T] of the response tokens of rows ``index``; 0 on padding."""
    mask, labels = batch.response_mask[index], batch.response_ids[index]
    if spec.chunk_tokens and mask.numel() > spec.chunk_tokens:
        head = check_chunkable(model)
        hidden = response_states(model, batch, index, True, spec.share_prompts)  # [N, T, H]
        # head.weight read after the forward: under FSDP2 the root's gathered weight (rlvr_exp/distributed.py)
        logp, ent = chunked_logprob_entropy(
            hidden[mask], head.weight, labels[mask], spec.temperature, spec.chunk_tokens, with_entropy)
        zeros = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device)
        return zeros.masked_scatter(mask, logp), (zeros.masked_scatter(mask, ent) if ent is not None else None)
    logits = response_states(model, batch, index, False, spec.share_prompts)
    logp, ent = logprob_and_entropy_from_logits(logits, labels, with_entropy, temperature=spec.temperature)
    logp = logp * mask
    return logp, (ent * mask if ent is not None else None)


@torch.no_grad()
def score_batch(
    model: torch.nn.Module, batch: RolloutBatch, rows_per_pass: int, with_entropy: bool, spec: LogProbSpec,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs [B, T] and entropies [B, T] under ``model`` in passes of ``rows_per_pass`` rows."""
    was_training = model.training
    model.eval()
    parts = [forward_response(model, batch, slice(s, s + rows_per_pass), with_entropy, spec)
             for s in range(0, batch.size, rows_per_pass)]
    model.train(was_training)
    logp = torch.cat([p[0] for p in parts])
    ent = torch.cat([p[1] for p in parts]) if with_entropy else None
    return logp, ent
