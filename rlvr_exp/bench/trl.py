"""Our training step against TRL's GRPOTrainer on the same work: ``python -m rlvr_exp.bench.trl``.

Both trainers run in one process on the same work, paired: after each TRL generation cycle (one
generation of ``prompts_per_step x samples_per_prompt`` completions, its scoring pass, and
``prompts_per_step / prompts_per_minibatch`` optimizer steps) one of our ``Trainer.train_step``,
each timed apart, so that the machine's load hits both alike. The figure of merit is the median
of the per-step ratios (ours / TRL's) with its interquartile range.

The work is the composed config's (Hydra overrides as arguments; the default is the default run:
the warm-started tiny Qwen2 and its character tokenizer, 32 ``a+b=`` prompts x 8 samples, up to
16 tokens, 4 updates of 64 completions, DAPO loss with clip 0.2/0.28, no KL, the model's dtype).
Ours runs with dynamic sampling, validation, checkpoints and token dumps off and the per-step
analysis as configured (on by default). TRL gets a copy of the same loaded policy and tokenizer,
the same prompts (as text or one user message; its token ids are checked against ours), and a
reward of the same math-verify verifier (its own instance: its own worker pool and cache), with
``per_device_train_batch_size`` = prompts_per_minibatch x samples_per_prompt,
``steps_per_generation`` = updates per step, ``num_generations`` = samples_per_prompt,
``max_completion_length``, temperature, top_p, ``top_k=0``, ``beta=0``, ``loss_type="dapo"``,
epsilon = algo.eps_low, epsilon_high = algo.eps_high, no gradient checkpointing, and bf16/fp16
autocast off (it trains in the model's own dtype, as ours does). The two sides keep separate torch
RNG states, so the pairing does not change what either samples.

Examples (``pip install -e ".[bench]"``):
    python -m rlvr_exp.bench.trl                                   # the default work, 20 steps
    python -m rlvr_exp.bench.trl experiment=smollm2_demo model.dtype=bfloat16 --steps 5 --warmup 1
    python -m rlvr_exp.bench.trl model=hf model.name_or_path=/path/to/model trainer.prompts_per_step=8
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from transformers import PrinterCallback, TrainerCallback

CONF = Path(__file__).resolve().parents[2] / "conf"
OURS_FIXED = ["logger.mode=disabled", "logger.progress_bar=false", "trainer.val_every=0", "trainer.checkpoint_every=0",
              "trainer.dump_tokens_every=0", "trainer.dynamic_sampling=false"]
PHASES = ("time/generate", "time/reward", "time/score", "time/shape", "time/update")


def trl_modules():
    """``trl`` and ``datasets``, or an ImportError naming the extra that installs them."""
    try:
        import datasets
        import trl
    except ImportError as err:
        raise ImportError(f"the TRL benchmark needs TRL ({err.name} is missing): pip install -e \".[bench]\"") from err
    return trl, datasets


def compose_config(overrides: list[str]) -> DictConfig:
    """The training config with the benchmark's fixed overrides last (they win)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides) + OURS_FIXED)


def rss_kb(field_name: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field_name))


def reset_peak() -> None:
    """VmHWM := VmRSS, after returning freed heap to the system (so each side sees its own peak)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


@dataclass
class Side:
    """One side's per-step seconds, mean completion lengths and peak RSS (GB) over its timed steps."""

    seconds: list[float] = field(default_factory=list)
    lengths: list[float] = field(default_factory=list)
    peak_gb: float = 0.0
    phases: dict[str, list[float]] = field(default_factory=dict)

    def record_peak(self) -> None:
        self.peak_gb = max(self.peak_gb, rss_kb("VmHWM:") / 2**20)


class Pairing(TrainerCallback):
    """A TRL callback that times TRL's generation cycles and runs one of our steps after each.

    TRL's cycle spans from the start of its first optimizer step to the start of the next cycle's,
    less the time spent in this callback (our step and the bookkeeping), so TRL's logging and data
    loading count as TRL's. Cycles 1..``warmup`` are left out; training stops after ``warmup +
    steps`` timed pairs (TRL runs one update of a last cycle, to close the timing of the one before)."""

    def __init__(self, ours, updates_per_cycle: int, warmup: int, steps: int, trl_lengths: list[float]) -> None:
        self.ours, self.updates, self.warmup, self.steps = ours, updates_per_cycle, warmup, steps
        self.trl, self.mine, self.trl_lengths = Side(), Side(), trl_lengths
        self.cycle, self.t_begin, self.t_aside = 0, None, 0.0
        self.our_rng = torch.get_rng_state()  # ours keep sampling from their own stream (seeded in setup)

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step % self.updates:
            return
        now = time.perf_counter()
        if self.t_begin is not None and self.cycle > self.warmup:
            self.trl.seconds.append(now - self.t_begin - self.t_aside)
        if self.cycle == self.warmup + self.steps:
            control.should_training_stop = True
        reset_peak()
        self.t_begin, self.t_aside = now, time.perf_counter() - now

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.updates or self.cycle == self.warmup + self.steps:
            return
        t_enter = time.perf_counter()
        self.cycle += 1
        timed = self.cycle > self.warmup
        if timed:
            self.trl.record_peak()
            self.trl.lengths.append(self.trl_lengths[-1])
        trl_rng = torch.get_rng_state()
        torch.set_rng_state(self.our_rng)
        reset_peak()
        t0 = time.perf_counter()
        metrics = self.ours.train_step(self.cycle)
        seconds = time.perf_counter() - t0
        self.our_rng = torch.get_rng_state()
        torch.set_rng_state(trl_rng)
        if timed:
            self.mine.seconds.append(seconds)
            self.mine.lengths.append(metrics["train/response_len_mean"])
            self.mine.record_peak()
            for key in PHASES:
                self.mine.phases.setdefault(key, []).append(metrics[key])
        self.t_aside += time.perf_counter() - t_enter


def trl_rows(problems: list, chat: bool) -> list[dict]:
    """The problems as TRL rows: ``prompt`` (the text, or one user message under a chat template) and ``answer``."""
    return [{"prompt": [{"role": "user", "content": p.question}] if chat else p.question, "answer": p.answer}
            for p in problems]


def check_prompt_ids(trainer, encoder, problems: list) -> None:
    """Raises when TRL would feed the model other prompt ids than ours (the two would not do the same work)."""
    sample = problems[:16]
    theirs, _, _ = trainer._tokenize_prompts([row["prompt"] for row in trl_rows(sample, encoder.chat_template)])
    ours = [encoder(p) for p in sample]
    if [list(t) for t in theirs] != ours:
        raise RuntimeError(f"TRL tokenises the prompts differently from ours (first: {list(theirs[0])} vs {ours[0]}); "
                           "the two sides would not do the same work")


def math_reward(reward_fn, lengths: list[float]):
    """A TRL reward function that scores with ``reward_fn`` (a verifier of ours) and keeps each
    generation's mean completion length (tokens, EOS included, as ours count them)."""

    def math_verify_reward(completions, answer, completion_ids, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        lengths.append(statistics.fmean(len(ids) for ids in completion_ids))
        rewards, _ = reward_fn(texts, answer)
        return rewards.tolist()

    return math_verify_reward


def trl_config(trl, tc, algo, cycles: int, seed: int, out_dir: str):
    """TRL's GRPOConfig for the same work as ours (module docstring)."""
    return trl.GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=tc.prompts_per_minibatch * tc.samples_per_prompt,
        gradient_accumulation_steps=1, steps_per_generation=tc.updates_per_step, num_generations=tc.samples_per_prompt,
        max_completion_length=tc.max_response_tokens, temperature=tc.temperature, top_p=tc.top_p, top_k=0,
        beta=0.0, loss_type="dapo", epsilon=algo.eps_low, epsilon_high=algo.eps_high, num_iterations=1,
        scale_rewards="group", mask_truncated_completions=tc.mask_truncated, gradient_checkpointing=False,
        learning_rate=tc.lr, lr_scheduler_type="constant", weight_decay=tc.weight_decay,
        adam_beta1=tc.adam_betas[0], adam_beta2=tc.adam_betas[1], max_grad_norm=tc.grad_clip,
        max_steps=cycles * tc.updates_per_step, logging_steps=tc.updates_per_step, save_strategy="no",
        report_to="none", disable_tqdm=True, bf16=False, fp16=False, use_cpu=not torch.cuda.is_available(),
        seed=seed, data_seed=seed, dataloader_num_workers=0, log_completions=False,
    )


def run(overrides: list[str], steps: int, warmup: int) -> tuple[Pairing, str]:
    """Builds both trainers and runs ``warmup + steps`` paired cycles; returns the pairing (its record)."""
    trl, datasets = trl_modules()
    from rlvr_exp.build import build, make  # the whole pipeline

    cfg = compose_config(overrides)
    with tempfile.TemporaryDirectory() as tmp:
        ours = build(cfg, Path(tmp) / "ours")
        ours.setup()
        p, tc = ours.p, ours.cfg
        work = describe_work(cfg, tc, p.policy.dtype)
        twin = copy.deepcopy(p.policy)  # the same loaded (warm-started) weights, trained apart
        trl_reward = make("reward", cfg.reward)
        lengths: list[float] = []
        pairing = Pairing(ours, tc.updates_per_step, warmup, steps, lengths)
        trainer = trl.GRPOTrainer(
            model=twin, reward_funcs=[math_reward(trl_reward, lengths)], processing_class=p.tokenizer,
            args=trl_config(trl, tc, p.algo, warmup + steps + 1, int(cfg.seed), str(Path(tmp) / "trl")),
            train_dataset=datasets.Dataset.from_list(trl_rows(p.task.train_problems(), p.encoder.chat_template)),
            callbacks=[pairing])
        trainer.remove_callback(PrinterCallback)
        check_prompt_ids(trainer, p.encoder, p.task.train_problems())
        try:
            trainer.train()
        finally:
            p.reward_fn.close()
            trl_reward.close()
    return pairing, work


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], q[1], q[2]


def versions() -> str:
    from importlib.metadata import version

    names = ("torch", "transformers", "trl", "accelerate", "math-verify")
    return f"python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def describe_work(cfg: DictConfig, tc, dtype: torch.dtype) -> str:
    model = cfg.model._target_.rsplit(".", 1)[-1]
    return (f"{model} ({str(dtype).removeprefix('torch.')}), {tc.prompts_per_step} prompts x {tc.samples_per_prompt} samples, "
            f"<= {tc.max_response_tokens} tokens, {tc.updates_per_step} updates of "
            f"{tc.prompts_per_minibatch * tc.samples_per_prompt}, analysis {'on' if cfg.analysis.enabled else 'off'}")


def report(pairing: Pairing, work: str, threads: int, load: tuple[float, float]) -> list[str]:
    """The printed table: ratio median and IQR, each side's median, our phases, memory, lengths, versions."""
    mine, theirs = pairing.mine, pairing.trl
    ratios = [a / b for a, b in zip(mine.seconds, theirs.seconds)]
    q1, med, q3 = quartiles(ratios)
    len_ours, len_trl = statistics.fmean(mine.lengths), statistics.fmean(theirs.lengths)
    phases = ", ".join(f"{k.split('/')[1]} {statistics.median(v):.3f}" for k, v in mine.phases.items())
    lines = [
        f"work: {work}",
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads {threads}; "
        f"load average {load[0]:.2f} before, {load[1]:.2f} after",
        f"versions: {versions()}",
        f"paired steps: {len(ratios)} (after {pairing.warmup} warm-up)",
        f"  ours / TRL step time: median {med:.3f}  IQR [{q1:.3f}, {q3:.3f}]",
        f"  ours median {statistics.median(mine.seconds):.3f} s   TRL median {statistics.median(theirs.seconds):.3f} s",
        f"  our phases (median s): {phases}",
        f"  peak RSS of the process during a step: ours {mine.peak_gb:.2f} GB, TRL {theirs.peak_gb:.2f} GB "
        "(one process: both models resident)",
        f"  mean completion length (tokens): ours {len_ours:.2f}, TRL {len_trl:.2f}",
    ]
    if abs(len_ours - len_trl) > 0.1 * max(len_ours, len_trl):
        lines.append("  WARNING: the completion lengths differ by more than 10%: the two sides are not doing the same work")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="other arguments are Hydra overrides of the training config, e.g. model=smollm2_135m")
    parser.add_argument("--steps", type=int, default=20, help="timed pairs (our steps and TRL generation cycles)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (both sides)")
    args, overrides = parser.parse_known_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1 and --warmup >= 0")
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        parser.error(f"unknown option(s) {bad}; overrides of the training config look like key=value")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    pairing, work = run(overrides, args.steps, args.warmup)
    for line in report(pairing, work, args.threads, (load_before, os.getloadavg()[0])):
        print(line)


if __name__ == "__main__":
    main()
