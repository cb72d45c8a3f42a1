"""Validation, in training and as the command ``python -m rlvr_exp.evaluate`` (rlvr_exp/eval/command.py):
k samples per held-out problem at the validation temperature; avg@k, maj@k and
the unbiased pass@k (docs/method.md section 7). Sampling runs under a forked RNG seeded by the step, so
evaluating never shifts the training run's random stream."""
from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.eval.metrics import summarize
from rlvr_exp.eval.voting import canonical_answers, same_by_reward
from rlvr_exp.rewards.base import Reward
from rlvr_exp.rollout.base import Rollout, SamplingParams
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder


class Evaluator:
    """``benchmarks`` maps a name to its problems; the name ``val`` logs as ``val/<metric>``,
    any other as ``val/<name>/<metric>``. ``val/accuracy`` (what the summary and the stage
    detector read) is avg@k of the ``val`` set, or with several named sets the unweighted mean of
    their avg@k, as the paper averages its benchmarks. maj@k votes over the answers that
    ``answer_format`` (the task's) extracts, counting answers math-verify judges equal as one vote
    (rlvr_exp/eval/voting.py), and ``<format>_rate`` (``val/boxed_rate``) is the share of samples
    stating an answer in it; without a format there is neither. ``problems_per_call`` (0: all at
    once) splits a set into rollout calls; ``progress`` shows a bar."""

    def __init__(
        self, benchmarks: dict[str, list[Problem]], rollout: Rollout, reward_fn: Reward,
        encoder: PromptEncoder, tokenizer: PreTrainedTokenizerBase, sampling: SamplingParams, seed: int,
        answer_format: AnswerFormat | None, problems_per_call: int = 0, progress: bool = False,
    ) -> None:
        self.benchmarks, self.rollout, self.reward_fn = benchmarks, rollout, reward_fn
        self.encoder, self.tokenizer, self.sampling, self.seed = encoder, tokenizer, sampling, seed
        self.answer_format, self.problems_per_call, self.progress = answer_format, problems_per_call, progress

    def _sample(self, name: str, problems: list[Problem]) -> tuple[list[list[bool]], list[list[str | None]], list[int]]:
        """Per problem: the verdicts and extracted answers of its n samples; the response lengths."""
        n, size, fmt = self.sampling.n, self.problems_per_call or len(problems), self.answer_format
        corr: list[list[bool]] = []
        answers: list[list[str | None]] = []
        lengths: list[int] = []
        with tqdm(total=len(problems), desc=name, unit="problem", disable=not self.progress) as bar:
            for lo in range(0, len(problems), size):
                chunk = problems[lo:lo + size]
                responses = self.rollout.generate([self.encoder(p) for p in chunk], self.sampling)
                texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
                _, correct = self.reward_fn(texts, [p.answer for p in chunk for _ in range(n)])
                corr += correct.view(-1, n).tolist()
                extracted = [fmt.extract(t) if fmt is not None else None for t in texts]
                answers += [extracted[i * n:(i + 1) * n] for i in range(len(chunk))]
                lengths += map(len, responses)
                bar.update(len(chunk))
        return corr, answers, lengths

    def score(self, name: str, problems: list[Problem]) -> dict[str, float]:
        """avg@k, maj@k, pass@k, accuracy (= avg@k), <format>_rate and response_len_mean of one set."""
        corr, answers, lengths = self._sample(name, problems)
        fmt = self.answer_format
        out = {"response_len_mean": sum(lengths) / len(lengths)}
        if fmt is not None:
            out[f"{fmt.name}_rate"] = sum(a is not None for row in answers for a in row) / len(lengths)
        corr, answers = merge_repeats(problems, corr, answers)
        if fmt is not None:
            answers = canonical_answers(answers, same_by_reward(self.reward_fn, fmt.render))
        k_max = len(corr[0])
        ks = sorted({k for k in (1, 2, 4, 8, 16, 32, k_max) if k <= k_max})
        out.update(summarize(corr, answers if fmt is not None else None, ks))
        out["accuracy"] = out[f"avg@{k_max}"]
        return out

    def __call__(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # fork the CUDA generator too: generate samples with it on GPU, and manual_seed reseeds it
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 7919 + step)
            for name, problems in self.benchmarks.items():
                prefix = "val/" if name == "val" else f"val/{name}/"
                metrics.update({prefix + k: v for k, v in self.score(name, problems).items()})
        if "val" not in self.benchmarks:
            metrics["val/accuracy"] = sum(metrics[f"val/{name}/accuracy"] for name in self.benchmarks) / len(self.benchmarks)
        return metrics


def merge_repeats(
    problems: list[Problem], correct: list[list[bool]], answers: list[list[str | None]]
) -> tuple[list[list[bool]], list[list[str | None]]]:
    """Pool the samples of rows that hold the same problem (the authors' AIME files repeat each
    problem 8 times for avg@8), so that pass@k and maj@k count a problem once, over all its
    samples. Only when every problem repeats equally often; otherwise rows stay as they are."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(problems):
        groups.setdefault((p.question, repr(p.messages), p.answer), []).append(i)
    if len(groups) == len(problems) or len({len(rows) for rows in groups.values()}) != 1:
        return correct, answers
    merged = list(groups.values())
    return ([[c for i in rows for c in correct[i]] for rows in merged],
            [[a for i in rows for a in answers[i]] for rows in merged])


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """``python -m rlvr_exp.evaluate model=... task=... [checkpoint=...]`` (rlvr_exp/eval/command.py)."""
    from hydra.core.hydra_config import HydraConfig

    from rlvr_exp.eval.command import evaluate_command

    results = evaluate_command(cfg, Path(HydraConfig.get().runtime.output_dir))
    return results["mean"]["accuracy"]


if __name__ == "__main__":
    main()
