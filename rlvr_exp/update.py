"""One step's policy update: mini-batches of whole prompt groups, gradient accumulation over
micro-batches, one optimizer step per mini-batch (one PPO epoch, docs/method.md section 2)."""
from __future__ import annotations

import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, forward_response
from rlvr_exp.algos.losses import Normaliser
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.faults import FaultGuard
from rlvr_exp.logging.meters import MeanMeter


def ppo_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    algo: PolicyGradient,
    batch: RolloutBatch,
    rows_per_minibatch: int,
    rows_per_microbatch: int,
    max_len: int,
    grad_clip: float,
    guard: FaultGuard,
    spec: LogProbSpec,
) -> MeanMeter:
    """Runs the updates; returns token- and step-weighted means of the loss statistics. An update
    whose loss or gradient norm is not finite is skipped (``guard.admit``, rlvr_exp/faults.py)."""
    meter = MeanMeter()
    meter.add("train/nonfinite_skips", 0.0, 0.0)
    meter.add("train/optimizer_steps", 0.0, 0.0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for start in range(0, batch.size, rows_per_minibatch):
        rows = torch.arange(start, min(start + rows_per_minibatch, batch.size))
        mask = batch.loss_mask[rows]
        norm = Normaliser(tokens=float(mask.sum()), seqs=float(len(rows)), max_len=float(max_len))
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in rows.split(rows_per_microbatch):
            m = batch.loss_mask[micro]
            logp, _ = forward_response(model, batch, micro, False, spec)
            ref = batch.ref_logp[micro] if batch.ref_logp is not None else None
            loss, info = algo.loss(logp, batch.logp_old[micro], batch.advantages[micro], m, norm, ref)
            loss.backward()
            total += float(loss.detach())
            for key, value in info.items():
                meter.add(f"train/{key}", float((value * m).sum()), float(m.sum()))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        meter.add("loss/policy", total, 1.0)
        meter.add("train/grad_norm", grad_norm, 1.0)
        if guard.admit(total, grad_norm):
            optimizer.step()
            meter.add("train/optimizer_steps", 1.0, 0.0)
        else:
            optimizer.zero_grad(set_to_none=True)
            meter.add("train/nonfinite_skips", 1.0, 0.0)
    return meter
