"""Data-parallel training (rlvr_exp/distributed.py) with two real gloo ranks on this CPU.

One update on a fixed batch: two FSDP2 ranks, each holding half of every mini-batch, must leave
the parameters one process leaves on the whole batch (fp32; the only difference is the order of
float sums, so the tolerance is 1e-6 absolute on parameters of size ~0.02..1). With the chunked LM
head (``trainer.logprob_chunk_tokens`` > 0) on the ranks, including ranks that decide differently
whether to chunk, against the unchunked head in the one process: 1e-5 (see ATOL_CHUNKED)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from rlvr_exp.algos.grpo import PolicyGradient
from rlvr_exp.algos.logprobs import LogProbSpec
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.config import ConfigError, TrainerConfig
from rlvr_exp.distributed import FSDP, SingleProcess, check_shares, launch_ranks
from rlvr_exp.faults import FaultGuard
from rlvr_exp.shapers.kl_cov import KLCovShaper
from rlvr_exp.update import ppo_update
from tests.conftest import CONF

ROWS, G, TP, T = 8, 4, 5, 6  # 2 groups of 4 responses, prompts of 5 and responses of up to 6 tokens
ROWS_PER_MINIBATCH, ROWS_PER_MICRO = 4, 2  # two optimizer steps, two micro-batches each (one process)
ATOL = 1.0e-6
# The chunked LM head sums its float products in another order than the unchunked one: one process
# with chunk_tokens=4 leaves parameters up to 2.2e-6 away from chunk_tokens=0 (k_proj.bias, whose
# exact gradient is 0, so Adam scales float noise up), and two FSDP ranks with chunk_tokens=4 are
# bit-identical to that one process. Measured here: 2.2e-6 ("chunked"), 3.3e-7 ("mixed").
ATOL_CHUNKED = 1.0e-5
# KL-Cov picks its tokens in each micro-batch (as verl does). Each rank's micro-batch holds the same
# rows as one of the one process's (rows 0-1 | 2-3 of each mini-batch), so the picks, and the
# weights, agree. ratio 0.25: floor(0.25 x 7..11 valid tokens) = 1-2 tokens per micro-batch.
KL_COV = KLCovShaper(ratio=0.25, coef=1.0)


def fixed_batch() -> RolloutBatch:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([6, 3, 5, 1, 4, 6, 2, 5])
    response_mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    prompt_mask = torch.ones(ROWS, TP, dtype=torch.bool)
    prompt_mask[::3, :2] = False  # some left padding
    batch = RolloutBatch(
        prompt_ids=torch.randint(5, 40, (ROWS, TP), generator=g), prompt_mask=prompt_mask,
        response_ids=torch.randint(5, 40, (ROWS, T), generator=g) * response_mask, response_mask=response_mask,
        group_ids=torch.arange(ROWS) // G, truncated=torch.zeros(ROWS, dtype=torch.bool),
        problems=[None] * ROWS, texts=[""] * ROWS)
    batch.logp_old = -torch.rand(ROWS, T, generator=g) * 3 * response_mask
    batch.advantages = torch.randn(ROWS, T, generator=g) * response_mask
    batch.loss_mask = response_mask.clone()
    return batch


def model(char_tokenizer_: object) -> torch.nn.Module:
    from rlvr_exp.models.tiny import TinyQwen2

    spec = TinyQwen2(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                     init_seed=0, warmstart={"enabled": False})
    return spec._fresh(char_tokenizer_)


def update(policy: torch.nn.Module, batch: RolloutBatch, rows_per_minibatch: int, dist: SingleProcess,
           chunk_tokens: int = 0) -> None:
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1.0e-2, weight_decay=0.01)
    algo = PolicyGradient(eps_low=0.2, eps_high=0.28, loss_agg="token-mean")
    ppo_update(policy, optimizer, algo, batch, rows_per_minibatch, ROWS_PER_MICRO, T, 0.5, FaultGuard(1),
               LogProbSpec(1.0, chunk_tokens), dist)


def crop_responses(batch: RolloutBatch, width: int) -> RolloutBatch:
    """The batch with its response columns cut to ``width`` (only padding may be cut)."""
    assert not batch.response_mask[:, width:].any()
    for name in ("response_ids", "response_mask", "logp_old", "advantages", "loss_mask"):
        setattr(batch, name, getattr(batch, name)[:, :width])
    return batch


def rank_rows(rank: int, world: int) -> torch.Tensor:
    """Rank r's rows: its share of every global mini-batch, in mini-batch order."""
    per = ROWS_PER_MINIBATCH // world
    return torch.cat([torch.arange(s + rank * per, s + (rank + 1) * per) for s in range(0, ROWS, ROWS_PER_MINIBATCH)])


def _rank_main(rank: int, port: int, out: str, chunk_tokens: int, widths: tuple[int, int], kl_cov: bool = False) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from rlvr_exp.algos import logprobs
    from rlvr_exp.models.tiny import build_char_tokenizer

    chunked_calls = []  # the micro-batches that took the chunked LM head on this rank
    chunked = logprobs.chunked_logprob_entropy
    logprobs.chunked_logprob_entropy = lambda *a: chunked_calls.append(1) or chunked(*a)

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist = FSDP(backend="gloo")
    dist.start()
    try:
        policy = dist.wrap(model(build_char_tokenizer()))
        batch = crop_responses(fixed_batch().select(rank_rows(rank, 2)), widths[rank])
        batch.token_loss = KL_COV.token_terms if kl_cov else None
        update(policy, batch, ROWS_PER_MINIBATCH // 2, dist, chunk_tokens)
        full = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.save(full, out)
        torch.save(len(chunked_calls), f"{out}.chunked_calls.rank{rank}")
    finally:
        dist.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# (chunk_tokens, response widths of ranks 0 and 1, micro-batches of each rank on the chunked head).
# A micro-batch takes the chunked head when its 2 rows x width exceed chunk_tokens: "mixed" has
# rank 0 chunked (2 x 6 = 12 > 11) and rank 1, whose responses end by 5 tokens, unchunked (10).
CASES = {"unchunked": (0, (T, T), (0, 0)), "chunked": (4, (T, T), (2, 2)), "mixed": (11, (T, 5), (2, 0))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_ranks_update_like_one_process(tmp_path, char_tokenizer, case):
    """The one process always runs the unchunked head; the FSDP ranks run the case's."""
    chunk_tokens, widths, calls = CASES[case]
    torch.manual_seed(0)
    single = model(char_tokenizer)
    before = {k: v.clone() for k, v in single.state_dict().items()}
    update(single, fixed_batch(), ROWS_PER_MINIBATCH, SingleProcess())
    out = str(tmp_path / "fsdp.pt")
    mp.spawn(_rank_main, args=(free_port(), out, chunk_tokens, widths), nprocs=2, join=True)
    assert tuple(torch.load(f"{out}.chunked_calls.rank{r}") for r in range(2)) == calls
    got = torch.load(out)
    moved = 0.0
    for name, value in single.state_dict().items():
        if name in got:  # a tied lm_head may be left out of one of them
            torch.testing.assert_close(got[name], value, atol=ATOL_CHUNKED if chunk_tokens else ATOL, rtol=0.0, msg=name)
            moved = max(moved, float((value - before[name]).abs().max()))
    assert moved > 1.0e-3  # the update did move the weights (the comparison is not vacuous)


def test_kl_cov_selects_per_rank_like_one_process(tmp_path, char_tokenizer):
    torch.manual_seed(0)
    plain, single = model(char_tokenizer), model(char_tokenizer)
    update(plain, fixed_batch(), ROWS_PER_MINIBATCH, SingleProcess())
    batch = fixed_batch()
    batch.token_loss = KL_COV.token_terms
    update(single, batch, ROWS_PER_MINIBATCH, SingleProcess())
    out = str(tmp_path / "fsdp.pt")
    mp.spawn(_rank_main, args=(free_port(), out, 0, (T, T), True), nprocs=2, join=True)
    got = torch.load(out)
    effect = 0.0
    for name, value in single.state_dict().items():
        if name in got:
            torch.testing.assert_close(got[name], value, atol=ATOL, rtol=0.0, msg=name)
            effect = max(effect, float((value - plain.state_dict()[name]).abs().max()))
    assert effect > 1.0e-4  # the penalty changed the update (the comparison is not vacuous)


def test_rank_rows_cover_each_minibatch_once():
    assert rank_rows(0, 2).tolist() == [0, 1, 4, 5] and rank_rows(1, 2).tolist() == [2, 3, 6, 7]


def test_shares_must_divide_by_world_size():
    cfg = TrainerConfig(prompts_per_step=6, prompts_per_minibatch=2)
    check_shares(cfg, probing=False, world_size=2)
    with pytest.raises(ConfigError, match=r"trainer.prompts_per_step \(6\) must be a multiple of the world size \(4\)"):
        check_shares(cfg, probing=False, world_size=4)
    with pytest.raises(ConfigError, match="analysis.probe_every=0"):
        check_shares(cfg, probing=True, world_size=2)
    check_shares(cfg, probing=True, world_size=1)


def test_single_process_is_the_identity():
    dist = SingleProcess()
    t = torch.tensor([1.5, 2.0])
    assert dist.all_reduce(t, "max") is t and dist.gather_cat(t) is t
    assert (dist.rank, dist.world_size, dist.is_main, dist.shard) == (0, 1, True, None)
    assert dist.on_main(lambda: 3) == 3 and dist.mean_over_ranks({"a": 1.0}) == {"a": 1.0}


def test_fsdp_yaml_holds_the_constructor_defaults(monkeypatch):
    import inspect

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    yaml = OmegaConf.to_container(OmegaConf.load(CONF / "distributed" / "fsdp.yaml"))
    assert yaml.pop("_target_") == "rlvr_exp.distributed.FSDP"
    defaults = {k: p.default for k, p in inspect.signature(FSDP.__init__).parameters.items() if k != "self"}
    assert yaml == defaults
    with pytest.raises(ValueError, match="distributed.sharding must be one of"):
        FSDP(sharding="zero3")


def test_fsdp_outside_torchrun_says_how_to_launch(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="launch with torchrun"):
        FSDP()


def test_fsdp_check_takes_the_chunked_head(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    FSDP().check(TrainerConfig(prompts_per_step=4, prompts_per_minibatch=2, logprob_chunk_tokens=1024), False)
    FSDP().check(TrainerConfig(prompts_per_step=4, prompts_per_minibatch=2, logprob_chunk_tokens=0), False)
    monkeypatch.delenv("WORLD_SIZE")
    SingleProcess().check(TrainerConfig(logprob_chunk_tokens=1024), True)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun without distributed=fsdp: every rank would train alone
    with pytest.raises(ConfigError, match="add distributed=fsdp"):
        SingleProcess().check(TrainerConfig(), False)


def test_ranks_come_from_torchrun_or_slurm(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")  # launcher=slurm: 2 nodes x 4 tasks, the second node's second task
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert launch_ranks() == (5, 8, 1)
    monkeypatch.setenv("RANK", "3")  # torchrun's variables win (torchrun inside a SLURM allocation)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert launch_ranks() == (3, 4, 3)
