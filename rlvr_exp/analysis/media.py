"""W&B media of a step: a sample table with entropy-shaded responses, and three histograms.

What is shown (arXiv 2508.02260, token-level analysis: where the high-entropy tokens are):
- ``samples``: a ``wandb.Table`` of the first ``rows`` responses with columns
  step, prompt, response, reward, correct, advantage (token mean of the shaped advantage over the
  response), logppl (-(1/L) sum_t log pi_old(y_t)) and entropy_html, the response with each
  token's background shaded by H_t / max H over the table's tokens (its H in the tooltip).
- ``hist/token_entropy``: the entropy of every response token of the batch (padding excluded).
- ``hist/advantage``: the per-response token mean of the shaped advantage, over the batch.
- ``hist/shaping_weight``: A'_{i,t} / A_{i,t} over response tokens with A_{i,t} != 0 (absent
  when there is none).
Token texts come from the bound tokenizer's ``decode`` of each id; without one, ids are shown.
``wandb`` is imported here, lazily, only when media are built (a run is open).
"""
from __future__ import annotations

import html
from collections.abc import Callable

import torch

from rlvr_exp.algos.stats import log_ppl
from rlvr_exp.batch import RolloutBatch

TokenTexts = Callable[[list[int]], list[str]]


def ids_as_text(ids: list[int]) -> list[str]:
    """The fallback token texts when no tokenizer is bound: ``<id>`` per token."""
    return [f"<{i}>" for i in ids]


def entropy_html(tokens: list[str], entropies: list[float], scale: float) -> str:
    """HTML of ``tokens`` with a red background of opacity H / scale (capped at 1)."""
    spans = []
    for tok, h in zip(tokens, entropies):
        alpha = min(1.0, h / scale) if scale > 0 else 0.0
        spans.append(f'<span title="H={h:.3f}" style="background-color: rgba(255, 0, 0, {alpha:.3f})">'
                     f"{html.escape(tok)}</span>")
    return '<div style="font-family: monospace; white-space: pre-wrap">' + "".join(spans) + "</div>"


def response_means(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] float64 token mean of ``values`` [B, T] over ``mask``; 0 for an empty response."""
    masked = torch.where(mask, values.double(), values.new_zeros((), dtype=torch.float64))
    return masked.sum(-1) / mask.sum(-1).clamp(min=1)


def sample_table(step: int, batch: RolloutBatch, rows: int, token_texts: TokenTexts) -> object:
    """The ``samples`` table of the first ``rows`` responses (module docstring)."""
    import wandb

    n = min(rows, batch.size)
    mask = batch.response_mask[:n].bool().cpu()
    entropy = torch.where(mask, batch.entropy[:n].float().cpu(), 0.0)
    scale = float(entropy.max()) if n else 0.0
    advantage = response_means(batch.advantages[:n].cpu(), mask).tolist()
    logppl = log_ppl(batch.logp_old[:n].cpu(), mask).tolist()
    rewards, correct = batch.rewards[:n].tolist(), batch.correct[:n].tolist()
    table = wandb.Table(columns=["step", "prompt", "response", "reward", "correct", "advantage", "logppl",
                                 "entropy_html"])
    for i in range(n):
        ids = batch.response_ids[i].cpu()[mask[i]].tolist()
        shaded = entropy_html(token_texts(ids), entropy[i][mask[i]].tolist(), scale)
        table.add_data(step, batch.problems[i].question, batch.texts[i], rewards[i], bool(correct[i]),
                       advantage[i], logppl[i], wandb.Html(shaded, inject=False, data_is_not_path=True))
    return table


def histograms(batch: RolloutBatch) -> dict[str, object]:
    """``hist/token_entropy``, ``hist/advantage`` and ``hist/shaping_weight`` over the batch."""
    import wandb

    mask = batch.response_mask.bool().cpu()
    out: dict[str, object] = {}
    if batch.entropy is not None:
        out["hist/token_entropy"] = wandb.Histogram(batch.entropy.float().cpu()[mask].numpy())
    if batch.advantages is not None:
        advantages = batch.advantages.double().cpu()
        out["hist/advantage"] = wandb.Histogram(response_means(advantages, mask).numpy())
        if batch.advantages_raw is not None:
            raw = batch.advantages_raw.double().cpu()
            shaped = mask & (raw != 0)
            if shaped.any():
                out["hist/shaping_weight"] = wandb.Histogram((advantages[shaped] / raw[shaped]).numpy())
    return out


def build_media(step: int, batch: RolloutBatch, rows: int, token_texts: TokenTexts | None) -> dict[str, object]:
    """The table (when ``rows`` > 0 and the batch is scored and shaped) and the histograms."""
    out = histograms(batch)
    shaped = batch.entropy is not None and batch.advantages is not None and batch.logp_old is not None
    if rows > 0 and shaped:
        out["samples"] = sample_table(step, batch, rows, token_texts or ids_as_text)
    return out
