"""Per-step metrics of a scored batch (SPEC section 7), as (sum, count) pairs that reduce across
ranks. Entropy is over response tokens only, never padding; "pos"/"neg" are correct/wrong samples."""
from __future__ import annotations

import torch

from rlvr_exp.batch import RolloutBatch
from rlvr_exp.logging.meters import MeanMeter


def _token_mean(meter: MeanMeter, key: str, values: torch.Tensor, mask: torch.Tensor) -> None:
    meter.add(key, float((values * mask).sum()), float(mask.sum()))


def batch_metrics(batch: RolloutBatch) -> MeanMeter:
    """Length, entropy and log-PPL metrics of the kept (trained-on) batch."""
    meter = MeanMeter()
    mask = batch.response_mask.float()
    lengths = batch.response_len.float()
    meter.add("train/response_len_mean", float(lengths.sum()), float(batch.size))
    meter.add("train/response_len_max", float(lengths.max()), 0.0)
    meter.add("train/clipped_share", float(batch.truncated.float().sum()), float(batch.size))
    meter.add("train/batch_responses", float(batch.size), 0.0)
    if batch.entropy is not None:
        pos = mask * batch.correct.float().unsqueeze(-1)
        _token_mean(meter, "entropy/mean", batch.entropy, mask)
        _token_mean(meter, "entropy/pos", batch.entropy, pos)
        _token_mean(meter, "entropy/neg", batch.entropy, mask - pos)
    if batch.logp_old is not None:
        logppl = -(batch.logp_old * mask).sum(-1) / lengths.clamp(min=1.0)
        meter.add("ppl/logppl_mean", float(logppl.sum()), float(batch.size))
    if batch.loss_mask is not None:
        meter.add("train/loss_token_share", float(batch.loss_mask.float().sum()), float(mask.sum()))
    return meter
