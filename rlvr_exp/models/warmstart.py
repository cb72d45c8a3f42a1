"""Supervised warm-start on generated demonstrations, stopped at a target sampled accuracy."""
from __future__ import annotations

import logging
import random
import time

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.tasks.base import Problem

log = logging.getLogger(__name__)


def _sft_batch(
    tokenizer: PreTrainedTokenizerBase, problems: list[Problem], answer_format: AnswerFormat
) -> tuple[torch.Tensor, ...]:
    """Right-padded prompt+completion ids [N, T], attention mask, labels (-100 off the completion)."""
    rows, labels = [], []
    for p in problems:
        prompt = tokenizer(p.question, add_special_tokens=False)["input_ids"]
        completion = p.solution if p.solution is not None else answer_format.render(p.answer)
        target = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(prompt + target)
        labels.append([-100] * len(prompt) + target)
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    lab = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask, lab


@torch.no_grad()
def sampled_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem], max_new_tokens: int,
    answer_format: AnswerFormat,
) -> float:
    """Share of problems whose one sample at temperature 1 states the right answer in ``answer_format``."""
    tokenizer.padding_side = "left"
    enc = tokenizer([p.question for p in problems], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(answer_format.extract(t) == p.answer for t, p in zip(texts, problems)) / len(problems)


def sft_warmstart(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: list[Problem],
    answer_format: AnswerFormat,
    seed: int = 0,
    lr: float = 1.0e-3,
    batch_size: int = 64,
    target_accuracy: float = 0.3,
    check_every: int = 10,
    check_problems: int = 64,
    max_new_tokens: int = 16,
    max_seconds: float = 600.0,
    max_steps: int = 2000,
) -> dict:
    """Train on completions that state the answer in ``answer_format`` (``\\boxed{answer}``), or on the
    problems' worked solutions where they have one (``Problem.solution``), until
    the sampled accuracy on ``check_problems`` training problems first reaches ``target_accuracy``
    (checked every ``check_every`` steps), or a cap is hit. Returns what happened (steps, seconds, accuracy)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    start, acc, step = time.perf_counter(), 0.0, 0
    probe = rng.sample(problems, min(check_problems, len(problems)))
    for step in range(1, max_steps + 1):
        model.train()
        picked = rng.sample(problems, batch_size) if len(problems) >= batch_size else rng.choices(problems, k=batch_size)
        ids, mask, labels = _sft_batch(tokenizer, picked, answer_format)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % check_every == 0:
            model.eval()
            acc = sampled_accuracy(model, tokenizer, probe, max_new_tokens, answer_format)
            elapsed = time.perf_counter() - start
            log.info("warm-start step %d/%d: sampled accuracy %.3f (target %.3f), loss %.3f, %.0f s of %.0f",
                     step, max_steps, acc, target_accuracy, float(loss.detach()), elapsed, max_seconds)
            if acc >= target_accuracy or elapsed > max_seconds:
                break
    model.eval()
    if acc < target_accuracy:
        log.warning("warm-start gave up after %d steps and %.0f s at sampled accuracy %.3f, below its target %.3f "
                    "(model.warmstart.max_steps / max_seconds); the policy starts from there. A task the tiny model "
                    "cannot learn (long real-math prompts) belongs to a pretrained model (model=smollm2_135m or model=hf)",
                    step, time.perf_counter() - start, acc, target_accuracy)
    return {"steps": step, "seconds": round(time.perf_counter() - start, 2), "sampled_accuracy": acc,
            "target_accuracy": target_accuracy, "last_loss": float(loss.detach())}
