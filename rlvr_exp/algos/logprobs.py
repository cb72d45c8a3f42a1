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
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from rlvr_exp.algos.chunked_head import check_chunkable, chunked_logprob_entropy
from rlvr_exp.batch import RolloutBatch


@dataclass(frozen=True)
class LogProbSpec:
    """How the trainer scores tokens: ``temperature`` divides the logits (the rollout's, > 0);
    blocks of more than ``chunk_tokens`` tokens go through the LM head in chunks of that many
    (0: never; ``trainer.logprob_chunk_tokens``)."""

    temperature: float
    chunk_tokens: int

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


def final_hidden_states(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's final (normed) hidden states [N, L, H], taken by a hook during the model's own
    forward with the logits of one position only: wrappers that act on the model's forward (FSDP2
    gathers the root's parameters, the LM head's among them, there) see an ordinary call."""
    captured: list[torch.Tensor] = []
    hook = model.get_decoder().register_forward_hook(lambda _m, _a, out: captured.append(out.last_hidden_state))
    try:
        model(**inputs, logits_to_keep=1, use_cache=False)
    finally:
        hook.remove()
    return captured[0]


def forward_response(
    model: torch.nn.Module, batch: RolloutBatch, index: torch.Tensor | slice, with_entropy: bool,
    spec: LogProbSpec,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log-probs (and entropies) [N, T] of the response tokens of rows ``index``; 0 on padding."""
    t = batch.response_ids.shape[1]
    mask, labels = batch.response_mask[index], batch.response_ids[index]
    if spec.chunk_tokens and mask.numel() > spec.chunk_tokens:
        head = check_chunkable(model)
        hidden = final_hidden_states(model, model_inputs(batch, index))[:, -(t + 1) : -1]  # [N, T, H]
        # head.weight read after the forward: under FSDP2 the root's gathered weight (rlvr_exp/distributed.py)
        logp, ent = chunked_logprob_entropy(
            hidden[mask], head.weight, labels[mask], spec.temperature, spec.chunk_tokens, with_entropy)
        zeros = torch.zeros(mask.shape, dtype=logp.dtype, device=logp.device)
        return zeros.masked_scatter(mask, logp), (zeros.masked_scatter(mask, ent) if ent is not None else None)
    logits = model(**model_inputs(batch, index), logits_to_keep=t + 1, use_cache=False).logits[:, :-1]
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
