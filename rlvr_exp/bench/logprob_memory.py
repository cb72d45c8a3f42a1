"""Memory and time of the log-prob pass: ``python -m rlvr_exp.bench.logprob_memory``.

A Qwen2 with the 152,064-token vocabulary of Qwen2.5, a one-layer body (hidden 256, untied head)
and one or four rows of a 16-token prompt and T response tokens (all real, no padding). After one
small warm-up pass of each kind, each point measures the peak resident set of the process
(VmHWM, reset through /proc/self/clear_refs after a malloc_trim, so points do not see each other's
peaks) minus the resident set just before the pass. Passes:
- ``score``: ``forward_response`` under no_grad with entropy (the trainer's scoring pass);
- ``train``: ``forward_response`` without entropy, then backward of a weighted sum of the
  log-probs (the update's forward + backward; parameter gradients are allocated in it).
Variants: ``body`` (the decoder alone: its forward, or forward + backward of a sum of the hidden
states), ``chunked`` (``trainer.logprob_chunk_tokens``, default from TrainerConfig) and
``unchunked`` (0). The LM-head part is a variant's added memory minus the body's. Unchunked points
whose estimate (3 x / 5 x the float32 logits for score / train, as measured at small T) exceeds
``--limit-gb`` are skipped and shown as "skip". Times are single passes, in CPU seconds of one thread (the
machine this was written on is shared, so wall time would measure the neighbours).
"""
from __future__ import annotations

import argparse
import ctypes
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rlvr_exp.algos.logprobs import LogProbSpec, forward_response
from rlvr_exp.batch import RolloutBatch
from rlvr_exp.config import TrainerConfig

VOCAB = 152_064
PROMPT = 16
LOGIT_FACTOR = {"score": 3.0, "train": 5.0}  # unchunked added memory / float32 logits (measured)


def build(rows: int, t: int, hidden: int) -> tuple[Qwen2ForCausalLM, RolloutBatch]:
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=PROMPT + t,
                         tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config)
    g = torch.Generator().manual_seed(0)
    batch = RolloutBatch(
        prompt_ids=torch.randint(0, VOCAB, (rows, PROMPT), generator=g),
        prompt_mask=torch.ones(rows, PROMPT, dtype=torch.bool),
        response_ids=torch.randint(0, VOCAB, (rows, t), generator=g),
        response_mask=torch.ones(rows, t, dtype=torch.bool),
        group_ids=torch.zeros(rows, dtype=torch.long), truncated=torch.zeros(rows, dtype=torch.bool),
        problems=[], texts=[])
    return model, batch


def run_pass(model: Qwen2ForCausalLM, batch: RolloutBatch, mode: str, variant: str, chunk: int) -> None:
    rows = slice(0, batch.size)
    if variant == "body":
        model.train(mode == "train")
        with torch.set_grad_enabled(mode == "train"):
            out = model.get_decoder()(input_ids=torch.cat([batch.prompt_ids, batch.response_ids], 1), use_cache=False)
            if mode == "train":
                out.last_hidden_state.sum().backward()
        return
    spec = LogProbSpec(1.0, chunk if variant == "chunked" else 0)
    if mode == "score":
        model.eval()
        with torch.no_grad():
            forward_response(model, batch, rows, True, spec)
        return
    model.train()
    logp, _ = forward_response(model, batch, rows, False, spec)
    weights = torch.linspace(-1.0, 1.0, logp.numel()).view_as(logp)
    (logp * weights).sum().backward()


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def point(mode: str, rows: int, t: int, variant: str, chunk: int, hidden: int) -> dict[str, float]:
    """One measurement: added peak GB and CPU seconds of one pass."""
    model, batch = build(rows, t, hidden)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = rss_kb("VmRSS:")
    start = time.process_time()
    run_pass(model, batch, mode, variant, chunk)
    seconds = time.process_time() - start
    return {"added_gb": (rss_kb("VmHWM:") - before) / 2**20, "seconds": seconds}


def row(mode: str, rows: int, t: int, chunk: int, hidden: int, limit_gb: float) -> str:
    body = point(mode, rows, t, "body", chunk, hidden)
    chunked = point(mode, rows, t, "chunked", chunk, hidden)
    estimate = LOGIT_FACTOR[mode] * rows * t * VOCAB * 4 / 2**30
    un = point(mode, rows, t, "unchunked", chunk, hidden) if estimate <= limit_gb else None
    head = lambda r: f"{r['added_gb'] - body['added_gb']:6.2f}"  # noqa: E731
    un_gb = head(un) if un else f"skip (~{estimate:.0f})"
    un_s = f"{un['seconds']:7.2f}" if un else "-"
    ratio = f"{chunked['seconds'] / un['seconds']:.2f}" if un else "-"
    return (f"| {mode} | {rows} | {t:5d} | {body['added_gb']:5.2f} | {head(chunked)} | {un_gb} | "
            f"{chunked['seconds']:7.2f} | {un_s} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--modes", nargs="+", default=["score", "train"], choices=["score", "train"])
    parser.add_argument("--chunk", type=int, default=TrainerConfig().logprob_chunk_tokens)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--limit-gb", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for mode in args.modes:  # warm-up: first-call costs stay out of the points
        for variant in ("body", "chunked", "unchunked"):
            run_pass(*build(1, 64, args.hidden), mode, variant, 16)
    print(f"V = {VOCAB}, one-layer Qwen2 body (hidden {args.hidden}), prompt {PROMPT} tokens, float32, "
          f"one thread; chunk = {args.chunk} tokens. GB = peak RSS added by the pass "
          "(LM head = pass minus body); CPU s = one pass.")
    print("| pass | rows | T | body GB | LM head GB, chunked | LM head GB, unchunked | chunked CPU s | unchunked CPU s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in args.rows:
        for mode in args.modes:
            for t in args.lengths:
                print(row(mode, rows, t, args.chunk, args.hidden, args.limit_gb), flush=True)


if __name__ == "__main__":
    main()
