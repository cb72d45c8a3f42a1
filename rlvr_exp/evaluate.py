"""Validation: k samples per held-out problem at the validation temperature; avg@k, maj@k and
the unbiased pass@k (docs/method.md section 7). Sampling runs under a forked RNG seeded by the step, so
evaluating never shifts the training run's random stream."""
from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.eval.metrics import summarize
from rlvr_exp.rewards.base import Reward
from rlvr_exp.rollout.base import Rollout, SamplingParams
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PromptEncoder


class Evaluator:
    """``benchmarks`` maps a name to its problems; the name ``val`` logs as ``val/<metric>``,
    any other as ``val/<name>/<metric>``. ``val/accuracy`` (what the summary and the stage
    detector read) is avg@k of the ``val`` set, or with several named sets the unweighted mean of
    their avg@k, as the paper averages its benchmarks. maj@k votes over the answers that
    ``answer_format`` (the task's) extracts; without a format there is no maj@k."""

    def __init__(
        self, benchmarks: dict[str, list[Problem]], rollout: Rollout, reward_fn: Reward,
        encoder: PromptEncoder, tokenizer: PreTrainedTokenizerBase, sampling: SamplingParams, seed: int,
        answer_format: AnswerFormat | None,
    ) -> None:
        self.benchmarks, self.rollout, self.reward_fn = benchmarks, rollout, reward_fn
        self.encoder, self.tokenizer, self.sampling, self.seed = encoder, tokenizer, sampling, seed
        self.answer_format = answer_format

    def _one(self, problems: list[Problem]) -> dict[str, float]:
        responses = self.rollout.generate([self.encoder(p) for p in problems], self.sampling)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        golds = [p.answer for p in problems for _ in range(self.sampling.n)]
        _, correct = self.reward_fn(texts, golds)
        n = self.sampling.n
        corr = correct.view(-1, n).tolist()
        fmt = self.answer_format
        extracted = [fmt.extract(t) if fmt is not None else None for t in texts]
        answers = [extracted[i * n : (i + 1) * n] for i in range(len(problems))]
        corr, answers = merge_repeats(problems, corr, answers)
        k_max = len(corr[0])
        ks = sorted({k for k in (1, 2, 4, 8, 16, 32, k_max) if k <= k_max})
        out = summarize(corr, answers if fmt is not None else None, ks)
        out["accuracy"] = out[f"avg@{k_max}"]
        out["response_len_mean"] = sum(map(len, responses)) / len(responses)
        return out

    def __call__(self, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        # fork the CUDA generator too: generate samples with it on GPU, and manual_seed reseeds it
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 7919 + step)
            for name, problems in self.benchmarks.items():
                prefix = "val/" if name == "val" else f"val/{name}/"
                metrics.update({prefix + k: v for k, v in self._one(problems).items()})
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
