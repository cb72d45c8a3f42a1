"""Data-parallel training as a handle the loop is given (``distributed`` config group).

:class:`SingleProcess` (the default) is today's one-process run: every collective is the
identity and checkpoints keep their one-process format. :class:`FSDP` runs one process per rank
under ``torchrun``: it joins the process group torchrun describes (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``), shards the policy (and a reference model) with FSDP2
(``torch.distributed.fsdp.fully_shard``: each decoder layer, then the root), and reduces,
gathers and broadcasts for the loop. The loop asks the handle, never ``if distributed:``.

Gradients: every rank's loss is its share of the GLOBAL mini-batch loss (divided by the
all-reduced token or sequence count, :func:`rlvr_exp.update.ppo_update`), so the global gradient
is the SUM of the ranks' gradients. FSDP would average them (divide by the world size); the
wrapper sets the gradient divide factor to 1 so that N ranks step like one process on the same rows.

The root (embeddings, final norm, LM head) is not resharded after its forward (FSDP2's own default
for the root; given explicitly because ``sharding=full`` reshards every layer): its gathered
parameters stay in place until the backward. The chunked LM head (``trainer.logprob_chunk_tokens``
> 0, :func:`rlvr_exp.algos.logprobs.forward_response`) relies on it: it takes the decoder's output
during the root's forward and reads ``lm_head.weight`` after it, so it multiplies by the gathered
weight, and FSDP2's post-backward reduce-scatters the gradient it puts there like any other.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from rlvr_exp import dist_checkpoint
from rlvr_exp import run_files as rf

T = TypeVar("T")
SHARDING = ("full", "grad_op", "none")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BACKENDS = ("auto", "gloo", "nccl")


class SingleProcess:
    """One process: rank 0 of 1. Every method is the identity or a plain call."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> int | None:
        """The rank in per-rank file names (``tokens/step_X.rank_R.parquet``); None: one file."""
        return None

    def check(self, trainer: Any, probing: bool) -> None:
        """Refuse, before a model loads, trainer settings these ranks cannot run (ConfigError);
        here also a launch by torchrun with several processes (each would train alone)."""
        from rlvr_exp.config import ConfigError

        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1:
            raise ConfigError(f"distributed=single, but torchrun started {launched} processes: add "
                              "distributed=fsdp (or run one process)")
        check_shares(trainer, probing, self.world_size)

    def start(self) -> None:
        """Join the process group (nothing to join here)."""

    def close(self) -> None:
        """Leave the process group."""

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum, max or min of ``tensor`` over ranks (a new tensor; ``op`` in sum/max/min)."""
        return tensor

    def gather_cat(self, values: torch.Tensor) -> torch.Tensor:
        """The 1-D ``values`` of all ranks, concatenated in rank order (lengths may differ)."""
        return values

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Each float averaged over ranks (keys held by some ranks only average where held)."""
        return values

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only; every rank returns rank 0's result."""
        return fn()

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0, then on the others (a download or cache fill happens once)."""
        return fn()

    def main_only(self, obj: T, stand_in: T) -> T:
        """``obj`` on rank 0, ``stand_in`` elsewhere (a logger that writes nothing)."""
        return obj

    def save_checkpoint(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        tokenizer: Any, state: dict, keep: int) -> Path:
        """Today's format: ``policy/`` (save_pretrained) and ``trainer_state.pt`` (with the optimizer)."""
        from rlvr_exp.checkpoint import save_checkpoint

        return save_checkpoint(folder, model, tokenizer, {**state, "optimizer": optimizer.state_dict()}, keep)

    def load_checkpoint(self, checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """Loads weights and optimizer into place; returns the trainer state (with ``rng``)."""
        from rlvr_exp.checkpoint import load_state

        state = load_state(checkpoint)
        weights = type(model).from_pretrained(checkpoint / rf.CHECKPOINT_POLICY, dtype=model.dtype)
        model.load_state_dict(weights.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        return state


class FSDP(SingleProcess):
    """Ranks started by ``torchrun``; the policy sharded by FSDP2.

    backend: ``auto`` (nccl with CUDA, else gloo), ``gloo`` or ``nccl``. sharding: ``full``
    (each layer's parameters resharded after its forward: ZeRO-3), ``grad_op`` (kept gathered from forward
    to backward: ZeRO-2) or ``none`` (every rank holds all parameters: DDP-like, a (N, 1) mesh).
    param_dtype / reduce_dtype: FSDP2 mixed precision (null keeps the model's dtype)."""

    def __init__(self, backend: str = "auto", sharding: str = "full", param_dtype: str | None = None,
                 reduce_dtype: str | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"distributed.backend must be one of {BACKENDS}, got {backend!r}")
        if sharding not in SHARDING:
            raise ValueError(f"distributed.sharding must be one of {SHARDING}, got {sharding!r}")
        for key, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value is not None and value not in DTYPES:
                raise ValueError(f"distributed.{key} must be null or one of {sorted(DTYPES)}, got {value!r}")
        self.backend, self.sharding = backend, sharding
        self.param_dtype, self.reduce_dtype = param_dtype, reduce_dtype
        self.rank, self.world_size, self.local_rank = launch_ranks()

    @property
    def shard(self) -> int | None:
        return self.rank

    def check(self, trainer: Any, probing: bool) -> None:
        """Each rank's share of the prompts (:func:`check_shares`); any ``trainer.logprob_chunk_tokens``
        runs (the chunked LM head reads the root's gathered weight: see the module doc)."""
        check_shares(trainer, probing, self.world_size)

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self._backend() == "nccl" else torch.device("cpu")

    def _backend(self) -> str:
        if self.backend == "auto":
            return "nccl" if torch.cuda.is_available() else "gloo"
        return self.backend

    def start(self) -> None:
        if "MASTER_ADDR" not in os.environ:  # a SLURM task (launcher=slurm): the first node hosts the store
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        if self._backend() == "nccl":
            torch.cuda.set_device(self.local_rank)
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(self._backend(), rank=self.rank, world_size=self.world_size)

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """fully_shard each decoder layer, then the root; gradients summed over ranks (module doc)."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        device_type = self.device.type
        mesh = (init_device_mesh(device_type, (self.world_size, 1), mesh_dim_names=("replicate", "shard"))
                if self.sharding == "none" else init_device_mesh(device_type, (self.world_size,)))
        mp = MixedPrecisionPolicy(param_dtype=DTYPES.get(self.param_dtype), reduce_dtype=DTYPES.get(self.reduce_dtype))
        kwargs = dict(mesh=mesh, mp_policy=mp, reshard_after_forward=self.sharding == "full")
        model.to(self.device)
        layers = decoder_layers(model)
        for layer in layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **{**kwargs, "reshard_after_forward": False})  # the root: see the module doc
        for module in (*layers, model):  # each FSDP module holds its own factor
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM; a factor of 1 costs nothing
        model._is_fsdp_managed_module = True  # transformers' generate then keeps ranks in step (synced_gpus)
        return model

    def _op(self, op: str) -> torch.distributed.ReduceOp:
        return {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX,
                "min": torch.distributed.ReduceOp.MIN}[op]

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        out = tensor.detach().clone().to(self.device)
        torch.distributed.all_reduce(out, op=self._op(op))
        return out.to(tensor.device)

    def gather_cat(self, values: torch.Tensor) -> torch.Tensor:
        n = self.all_reduce(torch.tensor([values.numel()]), "max").item()
        sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(self.world_size)]
        torch.distributed.all_gather(sizes, torch.tensor([values.numel()], device=self.device))
        padded = torch.zeros(int(n), dtype=values.dtype, device=self.device)
        padded[: values.numel()] = values.flatten().to(self.device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        torch.distributed.all_gather(parts, padded)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)]).to(values.device)

    def broadcast(self, obj: T) -> T:
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        gathered: list[dict | None] = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, values)
        keys = sorted(set().union(*gathered))
        return {k: sum(g[k] for g in gathered if k in g) / sum(k in g for g in gathered) for k in keys}

    def on_main(self, fn: Callable[[], T]) -> T:
        return self.broadcast(fn() if self.is_main else None)

    def main_first(self, fn: Callable[[], T]) -> T:
        out = fn() if self.is_main else None
        torch.distributed.barrier()
        return out if self.is_main else fn()

    def main_only(self, obj: T, stand_in: T) -> T:
        return obj if self.is_main else stand_in

    def save_checkpoint(self, folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        tokenizer: Any, state: dict, keep: int) -> Path:
        return dist_checkpoint.save(folder, model, optimizer, tokenizer, state, keep, self.rank)

    def load_checkpoint(self, checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return dist_checkpoint.load(checkpoint, model, optimizer, self.rank)


def launch_ranks() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) or,
    in a SLURM task started by ``launcher=slurm`` (submitit runs one task per GPU with srun), from
    SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
    raise ValueError("distributed=fsdp needs the ranks torchrun (or SLURM) describes: launch with "
                     "torchrun --nproc_per_node=N -m rlvr_exp.train distributed=fsdp ..., or use launcher=slurm")


def check_shares(trainer: Any, probing: bool, world_size: int) -> None:
    """Each rank takes whole prompt groups: ``trainer.prompts_per_step`` and
    ``trainer.prompts_per_minibatch`` must divide by the world size (checked before a model loads).
    The probe set (``analysis.probe_every``) is captured per rank, at steps that differ between
    ranks, so its forward passes would not line up across ranks: it is refused with several ranks."""
    from rlvr_exp.config import ConfigError

    for key in ("prompts_per_step", "prompts_per_minibatch"):
        value = getattr(trainer, key)
        if value % world_size:
            raise ConfigError(f"trainer.{key} ({value}) must be a multiple of the world size ({world_size}): "
                              "every rank takes whole prompt groups; change it or --nproc_per_node")
    if probing and world_size > 1:
        raise ConfigError(f"analysis.probe_every > 0 is not supported with {world_size} ranks (the probe set is "
                          "per rank); set analysis.probe_every=0")


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks that FSDP2 shards one by one: ``model.model.layers`` of a causal LM."""
    layers = model.get_decoder().layers
    return list(layers)


STAMP_FORMAT = "%Y-%m-%d/%H-%M-%S"
_stamp: list[str] = []


def run_stamp() -> str:
    """The run folder's time stamp (``hydra.run.dir: outputs/runs/${run_stamp:}``), taken once per
    process. Under torchrun (``WORLD_SIZE`` > 1) rank 0's clock wins: it is passed to every rank
    through the rendezvous store torchrun set up (the one ``init_process_group`` joins later), so
    ranks that start in different seconds still name one folder."""
    if not _stamp:
        from datetime import datetime

        now = datetime.now().strftime(STAMP_FORMAT)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            store, rank, _ = next(torch.distributed.rendezvous("env://"))
            if rank == 0:
                store.set("rlvr_exp/run_stamp", now)
            now = store.get("rlvr_exp/run_stamp").decode()
        _stamp.append(now)
    return _stamp[0]
