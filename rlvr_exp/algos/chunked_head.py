"""Log-probs and entropies from the final hidden states, chunk by chunk along the tokens, so the
LM head never holds more than ``chunk_tokens`` x V logits.

For hidden states h [M, H] (the response positions of a batch, padding left out), the LM-head
weight W [V, H] and labels y [M], with z = h W^T / temperature:

    logp_m = z_{m, y_m} - logsumexp(z_m)          H_m = logsumexp(z_m) - sum_v softmax(z_m)_v z_{m,v}

The forward pass takes the logits of ``chunk_tokens`` tokens at a time and keeps only
logsumexp(z_m) per token; the backward recomputes each chunk's logits and forms the gradient in
place, d logp_m / d (h W^T)_{m,v} = (1[v = y_m] - softmax(z_m)_v) / temperature, then
grad h = G W and grad W = G^T h chunk by chunk. Memory for the head is then about one chunk's
float32 logits (plus W's gradient), instead of M x V several times over; the cost is one
extra LM-head matmul per chunk in the backward. The entropy is a detached metric (no gradient).
The element-wise work inside a chunk goes in blocks of rows that hold about 2^24 logits.
"""
from __future__ import annotations

import torch

BLOCK_LOGITS = 2**24  # logits per element-wise block inside a chunk (64 MB in float32)
# Causal LMs whose logits are exactly lm_head(final hidden state): no soft-cap, no scale.
PLAIN_HEAD_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")


def check_chunkable(model: torch.nn.Module) -> torch.nn.Linear:
    """The model's LM head, when its logits are a bias-free linear map of the decoder's output;
    otherwise a ValueError naming the fix (``trainer.logprob_chunk_tokens=0``)."""
    model_type = model.config.model_type
    head = model.get_output_embeddings()
    if model_type not in PLAIN_HEAD_MODEL_TYPES or not isinstance(head, torch.nn.Linear) or head.bias is not None:
        raise ValueError(
            f"trainer.logprob_chunk_tokens > 0 computes logits as lm_head(hidden) from the decoder's output, "
            f"which holds for model types {PLAIN_HEAD_MODEL_TYPES} with a bias-free linear head; this model "
            f"is {model_type!r} with head {type(head).__name__}: set trainer.logprob_chunk_tokens=0")
    return head


def _logits(hidden: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    """[c, H] x [V, H] -> [c, V] float32 (at least) logits / temperature, a fresh tensor."""
    z = torch.nn.functional.linear(hidden, weight)
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    return z.div_(temperature) if temperature != 1.0 else z


def _chunk_forward(
    z: torch.Tensor, labels: torch.Tensor, lse: torch.Tensor, logp: torch.Tensor, ent: torch.Tensor | None
) -> None:
    """Fills lse, logp and ent [c] of one chunk's logits z [c, V] in blocks of rows."""
    rows = max(1, BLOCK_LOGITS // z.shape[1])
    for s in range(0, z.shape[0], rows):
        zb = z[s : s + rows]
        lse[s : s + rows] = torch.logsumexp(zb, dim=-1)
        if ent is not None:
            ent[s : s + rows] = lse[s : s + rows] - (torch.softmax(zb, dim=-1) * zb).sum(-1)
    logp.copy_(z.gather(1, labels.unsqueeze(1)).squeeze(1) - lse)


class ChunkedLogProb(torch.autograd.Function):
    """(hidden [M, H], weight [V, H], labels [M]) -> (logp [M], entropy [M] or [0]); see module."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, temperature, chunk_tokens, with_entropy):  # noqa: ANN001, ANN205
        m = hidden.shape[0]
        dtype = torch.promote_types(weight.dtype, torch.float32)
        lse = torch.empty(m, dtype=dtype, device=hidden.device)
        logp = torch.empty_like(lse)
        ent = torch.empty_like(lse) if with_entropy else lse.new_empty(0)
        for s in range(0, m, chunk_tokens):
            e = min(s + chunk_tokens, m)
            z = _logits(hidden[s:e], weight, temperature)
            _chunk_forward(z, labels[s:e], lse[s:e], logp[s:e], ent[s:e] if with_entropy else None)
            del z
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.temperature, ctx.chunk_tokens = temperature, chunk_tokens
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):  # noqa: ANN001, ANN205
        hidden, weight, labels, lse = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk_tokens
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        g = grad_logp.to(lse.dtype) / tau  # [M]
        for s in range(0, hidden.shape[0], chunk):
            e = min(s + chunk, hidden.shape[0])
            z = _logits(hidden[s:e], weight, tau)  # [c, V]
            z.sub_(lse[s:e].unsqueeze(1)).exp_().mul_(-g[s:e].unsqueeze(1))  # -g p
            z.scatter_add_(1, labels[s:e].unsqueeze(1), g[s:e].unsqueeze(1))  # + g 1[v = y]
            gz = z.to(weight.dtype)
            del z
            if need_h:
                grad_h[s:e] = gz @ weight
            if need_w and acc == weight.dtype:
                grad_w.addmm_(gz.t(), hidden[s:e])
            elif need_w:  # half precision: each chunk's product in W's dtype, summed in float32
                grad_w.add_(gz.t() @ hidden[s:e])
            del gz
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None


def chunked_logprob_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float, chunk_tokens: int,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """hidden [M, H], weight [V, H], labels [M] -> log p(label) [M] (with grad to hidden and
    weight) and the detached entropy [M] (or None) of softmax(hidden W^T / temperature)."""
    logp, ent = ChunkedLogProb.apply(hidden, weight, labels, temperature, chunk_tokens, with_entropy)
    return logp, (ent if with_entropy else None)
