"""The embedded default policy: a tiny Qwen2 with a character tokenizer, built in code.

A randomly initialised model cannot learn arithmetic from RL alone (every sample collapses on
the most common answer), so the default starts like a real base model does: competent but
uncertain. :func:`rlvr_exp.models.warmstart.sft_warmstart` trains it briefly on generated
demonstrations until its sampled training accuracy first reaches ``target_accuracy``; the
result is cached on disk, keyed by every value that shapes it, so it runs once per machine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import string
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from rlvr_exp.answers import AnswerFormat
from rlvr_exp.models.warmstart import sft_warmstart
from rlvr_exp.tasks.base import Task

log = logging.getLogger(__name__)
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character (and newline), plus pad/bos/eos/unk."""
    chars = list(string.printable[:95]) + ["\n"]
    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def _format_key(answer_format: AnswerFormat | None) -> list[str] | None:
    """What identifies an answer format in the cache key: its class, name and a rendered answer
    (a default object repr would hold a memory address and change every process)."""
    if answer_format is None:
        return None
    kind = type(answer_format)
    return [f"{kind.__module__}.{kind.__qualname__}", answer_format.name, answer_format.render("12")]


class TinyQwen2:
    """A Qwen2 causal LM of about 1 M parameters (hidden 128, 4 layers by default)."""

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        num_kv_heads: int = 2,
        intermediate_size: int = 512,
        max_position: int = 256,
        cache_dir: str = "~/.cache/rlvr_exp",
        init_seed: int = 0,
        warmstart: dict | None = None,
        device: str = "cpu",
        chat_template: bool = False,
    ) -> None:
        if hidden_size % num_heads or num_heads % num_kv_heads:
            raise ValueError(
                f"model.hidden_size ({hidden_size}) must divide by model.num_heads ({num_heads}), "
                f"which must divide by model.num_kv_heads ({num_kv_heads})"
            )
        self.arch = dict(
            hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
            num_kv_heads=num_kv_heads, intermediate_size=intermediate_size, max_position=max_position,
        )
        self.cache_dir = cache_dir
        self.init_seed = init_seed
        self.warmstart = dict(warmstart or {})
        self.device, self.chat_template = device, chat_template

    def _fresh(self, tokenizer: PreTrainedTokenizerFast) -> Qwen2ForCausalLM:
        a = self.arch
        config = Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=a["hidden_size"], intermediate_size=a["intermediate_size"],
            num_hidden_layers=a["num_layers"], num_attention_heads=a["num_heads"],
            num_key_value_heads=a["num_kv_heads"], max_position_embeddings=a["max_position"],
            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
        )
        torch.manual_seed(self.init_seed)
        return Qwen2ForCausalLM(config)

    def cache_key(self, task: Task) -> str:
        """Hash of everything that shapes the warm-started weights: the architecture, the init seed,
        the warm-start settings, the tokenizer's vocabulary, the task's answer format and every
        training problem (question, answer and worked solution, in order: the SFT data)."""
        problems = hashlib.sha256()
        for p in task.train_problems():
            problems.update(json.dumps([p.question, p.answer, p.solution]).encode())
        blob = json.dumps(
            {"arch": self.arch, "seed": self.init_seed, "warmstart": self.warmstart,
             "tokenizer": sorted(build_char_tokenizer().get_vocab().items()),
             "answer_format": _format_key(task.answer_format), "task": problems.hexdigest()},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def max_positions(self) -> int:
        """The context length (prompt + response tokens), known without building the model."""
        return self.arch["max_position"]

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer alone, for start-up checks before the (warm-started) model exists."""
        return build_char_tokenizer()

    def load(self, task: Task) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
        tokenizer = build_char_tokenizer()
        if not self.warmstart.get("enabled", True):
            return self._fresh(tokenizer).to(self.device), tokenizer
        folder = Path(os.path.expanduser(self.cache_dir)) / "tiny_warmstart" / self.cache_key(task)
        if (folder / "meta.json").exists():
            log.info("warm-start: loading cached policy from %s", folder)
            return Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32).to(self.device), tokenizer
        if task.answer_format is None:
            raise ValueError(f"model.warmstart needs a task whose answers have a format to demonstrate; "
                             f"{type(task).__name__} has none: set model.warmstart.enabled=false")
        model = self._fresh(tokenizer)
        ws = {k: v for k, v in self.warmstart.items() if k != "enabled"}
        meta = sft_warmstart(model, tokenizer, task.train_problems(), task.answer_format, seed=self.init_seed, **ws)
        log.info("warm-start: %s", meta)
        if meta["sampled_accuracy"] < meta["target_accuracy"]:
            # A give-up (max_steps, or max_seconds on a slow or busy machine) is not cached: the cache key
            # promises the policy its settings produce, and a wall-clock cut is not one of them.
            log.warning("warm-start: not cached (below its target); the next run warm-starts again")
            return model.to(self.device), tokenizer
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(folder)
        except OSError:  # another job of a sweep cached it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
        return model.to(self.device), tokenizer
