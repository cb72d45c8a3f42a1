"""The per-token record (docs/method.md section 8, a contract): one parquet file per dumped step, one row
per response token (padding excluded), at ``<run dir>/tokens/step_<step:06d>.parquet``; under torchrun
one file per rank, ``tokens/step_<step:06d>.rank_<R>.parquet``, whose ``sample`` and ``group`` are
numbered as in the ranks' batches laid end to end (rank R's rows follow those of ranks 0..R-1), so
the files of a step concatenate into one batch's record. Readers glob ``step_*.parquet`` (both).

``delta_logp`` is how far the step's update moved each token's log-prob: one more scoring pass of
the dumped rows after the optimizer step (:func:`update_shift`), paid on dump steps only."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.algos.stats import log_ppl
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.run_files import TOKEN_COLUMNS, token_file


def token_path(run_dir: Path, step: int, shard: int | None = None) -> Path:
    """Where a step's record goes: one file, or rank ``shard``'s file."""
    return token_file(run_dir, step, shard)


def dumped_rows(batch: RolloutBatch, max_samples: int | None) -> int:
    """How many responses a record holds: the first ``max_samples`` (all when None)."""
    return batch.size if max_samples is None else min(max_samples, batch.size)


def update_shift(policy: torch.nn.Module, batch: RolloutBatch, max_samples: int | None, rows_per_pass: int,
                 spec: LogProbSpec) -> torch.Tensor:
    """[n, T] log pi_new(y_t) - logp_old on the first ``max_samples`` responses (0 on padding):
    called after the step's update, it re-scores the same tokens with the same ``spec`` (and in
    eval mode, as ``logp_old`` was scored) under the updated ``policy`` (docs/method.md section 8)."""
    rows = batch.select(torch.arange(dumped_rows(batch, max_samples), device=batch.response_ids.device))
    logp_new, _ = score_batch(policy, rows, rows_per_pass, False, spec)
    return (logp_new - rows.logp_old) * rows.response_mask


def token_table(batch: RolloutBatch, step: int, max_samples: int | None = None, shard: int | None = None,
                delta_logp: torch.Tensor | None = None) -> pa.Table:
    """The record of the first ``max_samples`` responses (all when None) as an arrow table; with
    ``shard`` (a rank; every rank holds as many rows and groups) samples and groups get global numbers.
    ``delta_logp`` ([n, T], :func:`update_shift`) fills its column; without it the column is null."""
    n = dumped_rows(batch, max_samples)
    mask = batch.response_mask[:n]
    rows, cols = mask.nonzero(as_tuple=True)
    lengths = batch.response_len[:n]
    logppl = log_ppl(batch.logp_old[:n], mask)  # the PPL shaper's definition (docs/method.md section 3)
    groups, sample_offset = batch.group_ids, 0
    if shard is not None:
        unique, dense = torch.unique(batch.group_ids, return_inverse=True)
        groups, sample_offset = dense + shard * unique.numel(), shard * batch.size

    def tok(x: torch.Tensor) -> list:
        return x[:n][rows, cols].tolist()

    def per_sample(x: torch.Tensor) -> list:
        return x[:n][rows].tolist()

    data = {
        "step": pa.array([step] * len(rows), pa.int64()),
        "sample": pa.array((rows + sample_offset).tolist(), pa.int32()),
        "group": pa.array(per_sample(groups), pa.int32()),
        "position": pa.array(cols.tolist(), pa.int32()),
        "rel_position": pa.array(tok(batch.rel_position), pa.float32()),
        "token_id": pa.array(tok(batch.response_ids), pa.int32()),
        "logp_old": pa.array(tok(batch.logp_old), pa.float32()),
        "entropy": pa.array(tok(batch.entropy), pa.float32()),
        "advantage_raw": pa.array(tok(batch.advantages_raw), pa.float32()),
        "advantage": pa.array(tok(batch.advantages), pa.float32()),
        "in_loss": pa.array(tok(batch.loss_mask), pa.bool_()),
        "reward": pa.array(per_sample(batch.rewards), pa.float32()),
        "correct": pa.array(per_sample(batch.correct), pa.bool_()),
        "response_len": pa.array(per_sample(lengths), pa.int32()),
        "logppl": pa.array(per_sample(logppl), pa.float32()),
        "delta_logp": (pa.array(delta_logp[rows, cols].tolist(), pa.float32()) if delta_logp is not None
                       else pa.nulls(len(rows), pa.float32())),
    }
    return pa.table({name: data[name] for name in TOKEN_COLUMNS})  # the contract order


def dump_tokens(run_dir: Path, batch: RolloutBatch, step: int, max_samples: int | None = None,
                shard: int | None = None, delta_logp: torch.Tensor | None = None) -> Path:
    path = token_path(run_dir, step, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(token_table(batch, step, max_samples, shard, delta_logp), path, compression="zstd")
    return path
