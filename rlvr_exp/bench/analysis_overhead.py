"""What the per-step analysis costs: ``python -m rlvr_exp.bench.analysis_overhead``.

1. The hooks alone, on a batch of the default run (8 prompts x 8 samples x up to 16 tokens, the
   default tiny Qwen2, fresh weights): ``observe`` + ``batch_metrics`` + ``probe_metrics`` with
   ``conf/analysis/default.yaml`` against ``off.yaml``. The probe runs on 1 step in
   ``probe_every``; the per-step figure amortises it.
2. Whole trainer steps (``Trainer.train_step``) of the default config with ``analysis=default``
   and ``analysis=off``, interleaved so that machine load hits both alike. The warm-started
   tiny model is used when its cache exists; otherwise fresh weights with dynamic sampling off
   (a fresh model gets every answer wrong, which would skip every step).
The target is analysis-on step time <= 1.10 x analysis-off. Medians over repeats.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
from rlvr_exp.analysis.step import StepAnalysis
from rlvr_exp.answers import BoxedAnswer
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.collect import build_batch
from rlvr_exp.config import TrainerConfig
from rlvr_exp.models.tiny import TinyQwen2, build_char_tokenizer
from rlvr_exp.tasks.arithmetic import ArithmeticTask
from rlvr_exp.tasks.prompts import PromptEncoder

CONF = Path(__file__).resolve().parents[2] / "conf"
STEP_OVERRIDES = ["logger.mode=disabled", "logger.progress_bar=false", "trainer.val_every=0",
                  "trainer.checkpoint_every=0", "trainer.dump_tokens_every=0"]
SPEC = LogProbSpec(TrainerConfig().temperature, TrainerConfig().logprob_chunk_tokens)  # the default run's scoring


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def default_batch(prompts: int = 8, samples: int = 8, max_tokens: int = 16) -> tuple[RolloutBatch, torch.nn.Module]:
    """A scored, shaped batch of the default run's size, and the fresh tiny policy."""
    tokenizer = build_char_tokenizer()
    policy = TinyQwen2()._fresh(tokenizer).eval()
    problems = ArithmeticTask().train_problems()[:prompts]
    gen = torch.Generator().manual_seed(0)
    responses, correct = [], []
    for p in problems:
        for _ in range(samples):
            ok = bool(torch.rand((), generator=gen) < 0.5)
            text = f"\\boxed{{{p.answer if ok else int(p.answer) + 1}}}"
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            extra = torch.randint(4, len(tokenizer), (max_tokens,), generator=gen).tolist()
            responses.append((ids + extra)[: int(torch.randint(len(ids), max_tokens + 1, (), generator=gen))])
            correct.append(ok)
    batch = build_batch(problems, responses, samples, PromptEncoder(tokenizer, False, 64), tokenizer, max_tokens)
    batch.logp_old, batch.entropy = score_batch(policy, batch, 64, True, SPEC)
    batch.correct = torch.tensor(correct)
    batch.rewards = batch.correct.float() * 2 - 1
    r = batch.rewards.view(prompts, samples)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1.0e-6)).flatten()
    batch.advantages_raw = adv.unsqueeze(-1) * batch.response_mask
    batch.advantages, batch.loss_mask = batch.advantages_raw.clone(), batch.response_mask.clone()
    return batch, policy


def hook_times(repeats: int) -> dict[str, float]:
    """Median seconds of each hook, analysis on and off, on the default batch."""
    batch, policy = default_batch()
    on, off = StepAnalysis(), StepAnalysis(enabled=False)
    on.bind_tokenizer(build_char_tokenizer())
    on.bind_answer_format(BoxedAnswer())
    on.observe(batch, 1)  # capture once, as on the first step
    res = {
        "score_batch (reference)": statistics.median(timed(lambda: score_batch(policy, batch, 64, True, SPEC), repeats)),
        "off: batch_metrics": statistics.median(timed(lambda: off.batch_metrics(batch).means(), repeats)),
        "on: batch_metrics": statistics.median(timed(lambda: on.batch_metrics(batch).means(), repeats)),
        "on: observe (first, captures)": statistics.median(timed(lambda: StepAnalysis().observe(batch, 1), repeats)),
        "on: observe (captured)": statistics.median(timed(lambda: on.observe(batch, 100), repeats)),
        "on: probe_metrics (due)": statistics.median(timed(lambda: on.probe_metrics(on.probe_every, policy, SPEC), repeats)),
        "on: media (token-dump steps only)": statistics.median(timed(lambda: on.media(1, batch), repeats)),
    }
    res["on: hooks per step (probe amortised)"] = (res["on: batch_metrics"] + res["on: observe (captured)"]
                                                   + res["on: probe_metrics (due)"] / on.probe_every)
    return res


def warmstart_cached(cfg: DictConfig) -> bool:
    """Whether the default warm-started tiny policy is already cached (so building is cheap)."""
    spec, task = instantiate(cfg.model, _convert_="all"), instantiate(cfg.task, _convert_="all")
    return isinstance(spec, TinyQwen2) and (spec.cache_folder(task) / "meta.json").exists()


def step_times(steps: int, warmup: int) -> tuple[dict[str, list[float]], str]:
    """Seconds of ``Trainer.train_step`` with analysis on and off, interleaved step by step."""
    from rlvr_exp.build import build  # imports the whole pipeline

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        extra = [] if warmstart_cached(compose("train", overrides=STEP_OVERRIDES)) else [
            "model.warmstart.enabled=false", "trainer.dynamic_sampling=false"]
        cfgs = {a: compose("train", overrides=STEP_OVERRIDES + extra + [f"analysis={a}"]) for a in ("default", "off")}
    times: dict[str, list[float]] = {a: [] for a in cfgs}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {a: build(cfg, Path(tmp) / a) for a, cfg in cfgs.items()}
        for trainer in trainers.values():
            trainer.setup()
        for k in range(1, warmup + steps + 1):
            for a, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.train_step(k)
                if k > warmup:
                    times[a].append(time.perf_counter() - t0)
        for trainer in trainers.values():
            trainer.p.reward_fn.close()
    return times, " ".join(extra) or "warm-started policy (cached)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="repeats of each hook timing")
    parser.add_argument("--steps", type=int, default=20, help="timed trainer steps per setting (0: skip)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed trainer steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"hooks on the default batch (8 x 8 x 16, tiny Qwen2), median of {args.repeats}:")
    for name, sec in hook_times(args.repeats).items():
        print(f"  {name:40s} {sec * 1e3:9.3f} ms")
    if args.steps:
        times, setup = step_times(args.steps, args.warmup)
        med = {a: statistics.median(t) for a, t in times.items()}
        mean = {a: statistics.fmean(t) for a, t in times.items()}
        print(f"trainer steps ({setup}; {args.steps} steps each after {args.warmup} warm-up, interleaved):")
        for a in times:
            print(f"  analysis={a:8s} median {med[a] * 1e3:9.1f} ms   mean {mean[a] * 1e3:9.1f} ms")
        print(f"  ratio on/off: median {med['default'] / med['off']:.3f}   mean {mean['default'] / mean['off']:.3f}"
              "   (target <= 1.10)")


if __name__ == "__main__":
    main()
