"""Per-step metrics of a scored batch (docs/method.md section 7, arXiv 2508.02260 sections on the
instance- and token-level analysis), as (sum, count) pairs that reduce exactly across ranks.

Conventions:
- Entropy H_t = -sum_v p(v) log p(v) (nats, of the sampling distribution:
  the rollout temperature, 1 in the paper; see algos/logprobs.py) over response tokens only: padding
  is excluded with ``torch.where``, so even non-finite garbage in padding changes nothing.
  "pos"/"neg" are correct/wrong samples (``batch.correct``).
- Position buckets: token t = 1..L of a response of length L has r = (t-1)/L in [0, 1) and
  falls in bucket floor(r * n) of n buckets, computed in integers as ((t-1) * n) // L.
  ``entropy/pos_bucket_<i>`` is the token-mean entropy of bucket i.
- Top entropy: tau = Quantile_{1-rho}({H_{i,t}}) over the batch's response tokens (linear
  interpolation, numpy's default). ``entropy/top_share`` is the share of response tokens with
  H >= tau (ties at tau count, the rule of the ``high_entropy`` shaper, so it is the share that
  shaper would keep; ties make it differ from rho) and ``entropy/top_rel_position`` their mean r.
  tau is per rank (each rank's batch); the share and mean position then reduce exactly.
- logPPL_i = -(1/L_i) sum_t log pi_old(y_t) (docs/method.md section 3). ``ppl/logppl_{pos,neg}_q{10,50,90}``
  are linear-interpolation quantiles over one rank's responses: they do not reduce exactly, and
  after ``all_reduce`` they are the mean over ranks of the per-rank quantiles.
- A mean with no data anywhere (say ``entropy/pos`` in a batch without correct samples) reports
  NaN, which the run logger drops, rather than a fake 0. Every key is added on every rank (with
  count 0 when empty) so that ranks reduce the same key set.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rlvr_exp.algos.stats import log_ppl
from rlvr_exp.analysis.defects import RepetitionRule, defect_metrics
from rlvr_exp.answers import AnswerFormat
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.logging.meters import MeanMeter, distributed, reduce_device, union_keys

#: Quantile levels of the logPPL distribution, logged as ``q<percent>``.
PPL_QUANTILES = (0.1, 0.5, 0.9)


class StepMeter(MeanMeter):
    """A MeanMeter with maxima (reduced with MAX across ranks) and counters (reported as their
    total); any other key whose count is 0 on every rank reports NaN ("no data")."""

    def __init__(self) -> None:
        super().__init__()
        self.maxima: dict[str, float] = {}
        self.counters: set[str] = set()

    def add_max(self, key: str, value: float) -> None:
        self.maxima[key] = max(self.maxima.get(key, -math.inf), value)

    def add_counter(self, key: str, total: float) -> None:
        self.add(key, total, 0.0)
        self.counters.add(key)

    def all_reduce(self) -> None:
        """Sum (total, count) pairs and take the maximum of maxima over the default group."""
        super().all_reduce()
        if not distributed():
            return
        self.counters = set(union_keys(self.counters))
        keys = union_keys(self.maxima)
        if not keys:
            return
        t = torch.tensor([self.maxima.get(k, -math.inf) for k in keys], dtype=torch.float64, device=reduce_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        self.maxima.update(zip(keys, t.tolist()))

    def means(self) -> dict[str, float]:
        out = {k: (v / self.counts[k] if self.counts[k] else (v if k in self.counters else math.nan))
               for k, v in self.totals.items()}
        out.update(self.maxima)
        return out


@dataclass(frozen=True)
class LiveOptions:
    """What the detailed metrics need; ``None`` in :func:`batch_metrics` means basic only.
    ``answer_format``: the task's, for the no-answer defect (None: not measured)."""

    position_buckets: int = 5
    top_entropy_fraction: float = 0.2
    repetition: RepetitionRule = RepetitionRule()
    answer_format: AnswerFormat | None = None


def linear_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation ``q``-quantile of a non-empty 1-D tensor (``torch.quantile``'s rule:
    rank q (n-1), lerp between floor and ceil ranks) via ``kthvalue``, without its size limit."""
    rank = q * (values.numel() - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    below = values.kthvalue(lo + 1).values
    above = values.kthvalue(hi + 1).values if hi != lo else below
    return torch.lerp(below, above, torch.tensor(rank - lo, dtype=values.dtype, device=values.device))


def _masked_sum(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(torch.where(mask, values, values.new_zeros(())).sum(dtype=torch.float64))


def basic_metrics(batch: RolloutBatch) -> StepMeter:
    """Lengths, entropy (all/pos/neg), mean logPPL and loss-token share: what the trainer's summary
    and the stage detector need, computed even with the analysis off."""
    meter = StepMeter()
    mask = batch.response_mask.bool()
    lengths = batch.response_len.double()
    meter.add("train/response_len_mean", float(lengths.sum()), float(batch.size))
    meter.add_max("train/response_len_max", float(lengths.max()) if batch.size else 0.0)
    meter.add("train/clipped_share", float(batch.truncated.sum()), float(batch.size))
    meter.add_counter("train/batch_responses", float(batch.size))
    if batch.entropy is not None:
        pos = mask & batch.correct.bool().unsqueeze(-1)
        meter.add("entropy/mean", _masked_sum(batch.entropy, mask), float(mask.sum()))
        meter.add("entropy/pos", _masked_sum(batch.entropy, pos), float(pos.sum()))
        meter.add("entropy/neg", _masked_sum(batch.entropy, mask & ~pos), float((mask & ~pos).sum()))
    if batch.logp_old is not None:
        meter.add("ppl/logppl_mean", float(log_ppl(batch.logp_old, mask).sum()), float(batch.size))
    if batch.loss_mask is not None:
        meter.add("train/loss_token_share", float((batch.loss_mask.bool() & mask).sum()), float(mask.sum()))
    return meter


def position_buckets(batch: RolloutBatch, n: int) -> torch.Tensor:
    """[B, T] long bucket floor(r * n) of each token, r = (t-1)/L (0 on padding), in integers."""
    length = batch.response_len.clamp(min=1).unsqueeze(-1)
    return ((batch.positions * n) // length).clamp(max=n - 1)


def entropy_detail(meter: StepMeter, batch: RolloutBatch, n_buckets: int, top_fraction: float) -> None:
    """``entropy/pos_bucket_<i>``, ``entropy/top_share`` and ``entropy/top_rel_position``."""
    mask = batch.response_mask.bool()
    ent = torch.where(mask, batch.entropy, batch.entropy.new_zeros(())).double()
    bucket = position_buckets(batch, n_buckets)[mask]  # [n] response tokens only
    sums = torch.zeros(n_buckets, dtype=torch.float64, device=ent.device).index_add_(0, bucket, ent[mask])
    counts = torch.bincount(bucket, minlength=n_buckets)
    for i, (s, c) in enumerate(zip(sums.tolist(), counts.tolist())):
        meter.add(f"entropy/pos_bucket_{i}", s, float(c))
    values = ent[mask]
    if values.numel():
        top = mask & (ent >= linear_quantile(values, 1.0 - top_fraction))
    else:
        top = mask
    rel = batch.rel_position.double()
    meter.add("entropy/top_share", float(top.sum()), float(mask.sum()))
    meter.add("entropy/top_rel_position", _masked_sum(rel, top), float(top.sum()))


def ppl_detail(meter: StepMeter, batch: RolloutBatch) -> None:
    """``ppl/logppl_{pos,neg}_mean`` and the per-rank quantiles ``ppl/logppl_{pos,neg}_q<p>``."""
    logppl = log_ppl(batch.logp_old, batch.response_mask)  # [B] float64
    correct = batch.correct.bool()
    for side, rows in (("pos", correct), ("neg", ~correct)):
        values = logppl[rows]
        meter.add(f"ppl/logppl_{side}_mean", float(values.sum()), float(values.numel()))
        for q in PPL_QUANTILES:
            key = f"ppl/logppl_{side}_q{round(q * 100)}"
            if values.numel():
                meter.add(key, float(linear_quantile(values, q)), 1.0)
            else:
                meter.add(key, 0.0, 0.0)


def batch_metrics(batch: RolloutBatch, options: LiveOptions | None = None) -> StepMeter:
    """The basic metrics, plus (with ``options``) entropy by position and top share, the logPPL
    split and quantiles, and the defect shares of :mod:`rlvr_exp.analysis.defects`."""
    meter = basic_metrics(batch)
    if options is None:
        return meter
    if batch.entropy is not None:
        entropy_detail(meter, batch, options.position_buckets, options.top_entropy_fraction)
    if batch.logp_old is not None:
        ppl_detail(meter, batch)
    defect_metrics(meter, batch.texts, batch.truncated, options.repetition, options.answer_format)
    return meter
