"""The per-token record (docs/method.md section 8, a contract): one parquet file per dumped step, one row
per response token (padding excluded), at ``<run dir>/tokens/step_<step:06d>.parquet``."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from rlvr_exp.batch import RolloutBatch
from rlvr_exp.shapers.ppl import log_ppl

COLUMNS = ("step", "sample", "group", "position", "rel_position", "token_id", "logp_old", "entropy",
           "advantage_raw", "advantage", "in_loss", "reward", "correct", "response_len", "logppl")


def token_table(batch: RolloutBatch, step: int, max_samples: int | None = None) -> pa.Table:
    """The record of the first ``max_samples`` responses (all when None) as an arrow table."""
    n = batch.size if max_samples is None else min(max_samples, batch.size)
    mask = batch.response_mask[:n]
    rows, cols = mask.nonzero(as_tuple=True)
    lengths = batch.response_len[:n]
    logppl = log_ppl(batch.logp_old[:n], mask)  # the PPL shaper's own definition

    def tok(x: torch.Tensor) -> list:
        return x[:n][rows, cols].tolist()

    def per_sample(x: torch.Tensor) -> list:
        return x[:n][rows].tolist()

    data = {
        "step": pa.array([step] * len(rows), pa.int64()),
        "sample": pa.array(rows.tolist(), pa.int32()),
        "group": pa.array(per_sample(batch.group_ids), pa.int32()),
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
    }
    return pa.table(data)


def dump_tokens(run_dir: Path, batch: RolloutBatch, step: int, max_samples: int | None = None) -> Path:
    path = Path(run_dir) / "tokens" / f"step_{step:06d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(token_table(batch, step, max_samples), path, compression="zstd")
    return path
