"""A pretrained causal LM from the hub or a local folder (Qwen2.5-7B presets and any other)."""
from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlvr_exp.tasks.base import Task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def finish_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad with EOS when the tokenizer has no pad token (Llama-style tokenizers)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class PretrainedLM:
    """``name_or_path``: a hub id (``Qwen/Qwen2.5-7B``) or a folder with config and weights."""

    def __init__(
        self, name_or_path: str, dtype: str = "bfloat16", device: str = "auto", chat_template: bool = True,
        gradient_checkpointing: bool = False, attn_implementation: str | None = None, revision: str | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.name_or_path, self.dtype, self.device = name_or_path, dtype, device
        self.chat_template, self.gradient_checkpointing = chat_template, gradient_checkpointing
        self.attn_implementation, self.revision = attn_implementation, revision

    def max_positions(self) -> int | None:
        """``max_position_embeddings`` from the model's config file alone (no weights), or None
        when the config cannot be read here (the hub is unreachable: checked after loading)."""
        try:
            config = AutoConfig.from_pretrained(self.name_or_path, revision=self.revision)
        except OSError:
            return None
        return config.max_position_embeddings

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer alone, for start-up checks before the weights load."""
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, revision=self.revision)
        except OSError as err:
            raise OSError(f"model.name_or_path={self.name_or_path!r}: no tokenizer could be loaded ({err}). Give a "
                          "local folder with config.json and weights, or a hub id on a machine that reaches the hub") from err
        return finish_tokenizer(tokenizer)

    def load(self, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, revision=self.revision)
            model = AutoModelForCausalLM.from_pretrained(
                self.name_or_path, dtype=DTYPES[self.dtype], revision=self.revision,
                attn_implementation=self.attn_implementation)
        except OSError as err:
            raise OSError(
                f"model.name_or_path={self.name_or_path!r} could not be loaded ({err}). Give a local "
                "folder with config.json and weights, or a hub id on a machine that reaches the hub") from err
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model.to(resolve_device(self.device)), finish_tokenizer(tokenizer)
