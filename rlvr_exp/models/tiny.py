"""The embedded default policy: a tiny Qwen2 with a character tokenizer, built in code.

A randomly initialised model cannot learn arithmetic from RL alone (every sample collapses on
the most common answer), so the default starts like a real base model does: competent but
uncertain. :func:`rlvr_exp.models.warmstart.sft_warmstart` trains it briefly on generated
demonstrations until its sampled training accuracy first reaches ``target_accuracy``; the
result is cached on disk, keyed by every value that shapes it, so it runs once per machine.

``warmstart.init_from`` chains warm-starts: a parent model option and task (``{model, task}``, composed
from their config groups) are warm-started first (cached under the parent's own key), and this
warm-start continues from the parent's weights. The testbed uses it: the chain-arithmetic policy
starts from the two-operand policy, which already adds (docs/method.md, "The CPU testbed").
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
        self.parent = self._parent(self.warmstart.pop("init_from", None))
        self.device, self.chat_template = device, chat_template

    def _parent(self, init_from: dict | None) -> tuple[TinyQwen2, Task] | None:
        """``warmstart.init_from`` checked: ``{model: TinyQwen2, task: Task}`` with this architecture.
        The parent caches in this model's ``cache_dir``."""
        if init_from is None:
            return None
        model, task = (init_from.get(k) if isinstance(init_from, dict) else None for k in ("model", "task"))
        if not isinstance(model, TinyQwen2) or not isinstance(task, Task):
            raise ValueError("model.warmstart.init_from must hold a tiny model option and a task option, "
                             "{model: <model/tiny.yaml>, task: <task/...>}: in an experiment file, "
                             "`- /model@model.warmstart.init_from.model: tiny` and "
                             "`- /task@model.warmstart.init_from.task: arithmetic` in its defaults list")
        if model.arch != self.arch or model.init_seed != self.init_seed:
            raise ValueError(f"model.warmstart.init_from.model must have this model's architecture and init_seed, "
                             f"to continue from its weights: {model.arch}, seed {model.init_seed} != "
                             f"{self.arch}, seed {self.init_seed}")
        model.cache_dir = self.cache_dir
        return model, task

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
        training problem (question, answer and worked solution, in order: the SFT data), and the
        key of the parent warm-start it continues from (``warmstart.init_from``), if any."""
        problems = hashlib.sha256()
        for p in task.train_problems():
            problems.update(json.dumps([p.question, p.answer, p.solution]).encode())
        blob = json.dumps(
            {"arch": self.arch, "seed": self.init_seed, "warmstart": self.warmstart,
             "tokenizer": sorted(build_char_tokenizer().get_vocab().items()),
             "answer_format": _format_key(task.answer_format), "task": problems.hexdigest(),
             **({"init_from": self.parent[0].cache_key(self.parent[1])} if self.parent else {})},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def max_positions(self) -> int:
        """The context length (prompt + response tokens), known without building the model."""
        return self.arch["max_position"]

    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer alone, for start-up checks before the (warm-started) model exists."""
        return build_char_tokenizer()

    def cache_folder(self, task: Task) -> Path:
        """Where the warm-started policy for ``task`` is cached."""
        return Path(os.path.expanduser(self.cache_dir)) / "tiny_warmstart" / self.cache_key(task)

    def load(self, task: Task) -> tuple[Qwen2ForCausalLM, PreTrainedTokenizerFast]:
        tokenizer = build_char_tokenizer()
        if not self.warmstart.get("enabled", True):
            return self._fresh(tokenizer).to(self.device), tokenizer
        folder = self.cache_folder(task)
        if (folder / "meta.json").exists():
            log.info("warm-start: loading cached policy from %s", folder)
            return Qwen2ForCausalLM.from_pretrained(folder, dtype=torch.float32).to(self.device), tokenizer
        if task.answer_format is None:
            raise ValueError(f"model.warmstart needs a task whose answers have a format to demonstrate; "
                             f"{type(task).__name__} has none: set model.warmstart.enabled=false")
        model, parent_cached = self._fresh(tokenizer), True
        if self.parent is not None:
            parent, parent_task = self.parent
            log.info("warm-start: continuing from the %s warm-start (model.warmstart.init_from)", type(parent_task).__name__)
            model = parent.load(parent_task)[0].to("cpu")
            parent_cached = (parent.cache_folder(parent_task) / "meta.json").exists()
        ws = {k: v for k, v in self.warmstart.items() if k != "enabled"}
        meta = sft_warmstart(model, tokenizer, task.train_problems(), task.answer_format, seed=self.init_seed, **ws)
        log.info("warm-start: %s", meta)
        if meta["sampled_accuracy"] < meta["target_accuracy"] or not parent_cached:
            # A give-up (max_steps, or max_seconds on a slow or busy machine) is not cached, nor is a policy
            # continued from a parent that gave up: the cache key promises the policy its settings produce,
            # and a wall-clock cut is not one of them.
            log.warning("warm-start: not cached (it, or its parent, stopped below its target); the next run "
                        "warm-starts again")
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
