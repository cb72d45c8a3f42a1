"""The FSDP handle's collectives with two real gloo ranks (no model): hand-checked values, and the
high_entropy shaper's threshold over the GLOBAL batch (docs/method.md section 5)."""
from __future__ import annotations

import os

import torch
import torch.multiprocessing as mp

from rlvr_exp.shapers.base import ShaperContext
from rlvr_exp.shapers.high_entropy import HighEntropyShaper
from tests.dist.test_fsdp_update import free_port

# 2 responses per rank, 3 tokens; rank 0 holds low entropies, rank 1 high ones.
ENTROPY = torch.tensor([[0.1, 0.2, 0.0], [0.3, 0.4, 0.5],   # rank 0 (row 0 has 2 tokens)
                        [1.0, 1.1, 1.2], [1.3, 1.4, 0.0]])  # rank 1 (row 3 has 2 tokens)
MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)


def context(rows: slice, gather=None) -> ShaperContext:
    extra = {"gather": gather} if gather is not None else {}
    return ShaperContext(advantages=MASK[rows].float(), response_mask=MASK[rows],
                         loss_mask=MASK[rows], response_len=MASK[rows].sum(-1), step=1, stage="rising",
                         entropy=ENTROPY[rows] * MASK[rows], **extra)


def _rank_main(rank: int, port: int, out: str) -> None:
    from rlvr_exp.distributed import FSDP

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = FSDP(backend="gloo")
    dist.start()
    try:
        rows = slice(2 * rank, 2 * rank + 2)
        shaped = HighEntropyShaper(rho=0.5)(context(rows, dist.gather_cat))
        result = {
            "gather": dist.gather_cat(torch.arange(rank + 2, dtype=torch.float32) + 10 * rank),
            "max": dist.all_reduce(torch.tensor([float(rank), 5.0 - rank]), "max"),
            "mean": dist.mean_over_ranks({"a": float(rank), **({"b": 4.0} if rank else {})}),
            "bcast": dist.broadcast({"from": rank}),
            "main": dist.on_main(lambda: rank),
            "keep": shaped.loss_mask, "tau": shaped.metrics["threshold"],
        }
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.close()


def test_collectives_and_global_entropy_threshold(tmp_path):
    mp.spawn(_rank_main, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["gather"].tolist() == r1["gather"].tolist() == [0.0, 1.0, 10.0, 11.0, 12.0]  # lengths 2 and 3
    assert r0["max"].tolist() == [1.0, 5.0]
    assert r0["mean"] == r1["mean"] == {"a": 0.5, "b": 4.0}  # b: held by rank 1 only
    assert r0["bcast"] == r1["bcast"] == {"from": 0} and r0["main"] == r1["main"] == 0
    whole = HighEntropyShaper(rho=0.5)(context(slice(0, 4)))  # one process on the whole batch
    # 10 response tokens 0.1..0.5, 1.0..1.4: the median (linear) is (0.5 + 1.0) / 2 = 0.75
    assert abs(whole.metrics["threshold"] - 0.75) < 1e-6
    assert r0["tau"] == r1["tau"] == whole.metrics["threshold"]
    assert torch.equal(torch.cat([r0["keep"], r1["keep"]]), whole.loss_mask)
    assert not r0["keep"].any() and r1["keep"].sum() == 5  # the top half lives on rank 1 only


def test_per_rank_token_records_number_samples_and_groups_as_one_batch(tmp_path):
    from rlvr_exp.logging.token_dump import token_path, token_table
    from tests.dist.test_fsdp_update import fixed_batch

    batch = fixed_batch()  # 8 responses in groups [0]*4 + [1]*4
    batch.group_ids = torch.tensor([3, 3, 3, 3, 7, 7, 7, 7])  # ids as dynamic sampling leaves them
    batch.entropy, batch.advantages_raw = batch.logp_old.abs(), batch.advantages
    batch.rewards, batch.correct = torch.zeros(8), torch.zeros(8, dtype=torch.bool)
    one = token_table(batch, 5)
    rank1 = token_table(batch, 5, shard=1)
    assert sorted(set(one.column("sample").to_pylist())) == list(range(8))
    assert sorted(set(rank1.column("sample").to_pylist())) == list(range(8, 16))  # after rank 0's 8 rows
    assert set(one.column("group").to_pylist()) == {3, 7}  # one process: ids kept as they are
    assert set(rank1.column("group").to_pylist()) == {2, 3}  # rank 1 of 2-group ranks: groups 2 and 3
    assert token_path(tmp_path, 5).name == "step_000005.parquet"
    assert token_path(tmp_path, 5, 1).name == "step_000005.rank_1.parquet"
