"""One step's policy update: mini-batches of whole prompt groups, gradient accumulation over
micro-batches, one optimizer step per mini-batch (one PPO epoch, docs/method.md section 2).

Under several ranks (``dist``) a mini-batch is the union of the ranks' mini-batches: each rank
holds ``rows_per_minibatch`` of its own rows (every rank holds as many rows, see
:class:`rlvr_exp.collect.Collector`, so all run the same passes), and divides its loss by the
mini-batch's token and sequence counts summed over ranks. The ranks' gradients then add up (FSDP
sums them, :mod:`rlvr_exp.distributed`) to the gradient one process computes on the same rows."""
from __future__ import annotations

import torch

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec, forward_response
from rlvr_exp.algos.losses import Normaliser
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.distributed import SingleProcess
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
    dist: SingleProcess | None = None,
) -> MeanMeter:
    """Runs the updates; returns token- and step-weighted means of the loss statistics (this
    rank's sums: ``all_reduce`` them; ``loss/policy`` is the global mini-batch loss then). An
    update whose global loss or gradient norm is not finite is skipped on every rank
    (``guard.admit``, rlvr_exp/faults.py)."""
    dist = dist if dist is not None else SingleProcess()
    share = 1.0 / dist.world_size  # per-mini-batch entries sum to one over ranks
    meter = MeanMeter()
    meter.add("train/nonfinite_skips", 0.0, 0.0)
    meter.add("train/optimizer_steps", 0.0, 0.0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for start in range(0, batch.size, rows_per_minibatch):
        rows = torch.arange(start, min(start + rows_per_minibatch, batch.size))
        mask = batch.loss_mask[rows]
        counts = dist.all_reduce(torch.tensor([float(mask.sum()), float(len(rows))], dtype=torch.float64))
        norm = Normaliser(tokens=float(counts[0]), seqs=float(counts[1]), max_len=float(max_len))
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in rows.split(rows_per_microbatch):
            m = batch.loss_mask[micro]
            logp, _ = forward_response(model, batch, micro, False, spec)
            ref = batch.ref_logp[micro] if batch.ref_logp is not None else None
            loss, info = algo.loss(logp, batch.logp_old[micro], batch.advantages[micro], m, norm, ref,
                                   batch.token_loss)
            loss.backward()
            total += float(loss.detach())
            for key, value in info.items():  # per-token stats: means over the loss tokens
                meter.add(key, float((value * m).sum()), float(m.sum()))
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        meter.add("loss/policy", total, share)
        meter.add("train/grad_norm", grad_norm, 1.0)
        global_loss = float(dist.all_reduce(torch.tensor([total], dtype=torch.float64))[0])
        if guard.admit(global_loss, grad_norm):  # the same decision on every rank
            optimizer.step()
            meter.add("train/optimizer_steps", share, 0.0)
        else:
            optimizer.zero_grad(set_to_none=True)
            meter.add("train/nonfinite_skips", share, 0.0)
    return meter
