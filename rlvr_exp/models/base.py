"""The model interface: a spec that loads the policy and its tokenizer once the config is checked."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr_exp.tasks.base import Task


@runtime_checkable
class ModelSpec(Protocol):
    """What ``build.py`` instantiates from the ``model`` group. The constructor only checks and
    stores values (no download, no weights); ``load`` does the work. ``chat_template``: whether
    prompts go through the tokenizer's chat template (:class:`rlvr_exp.tasks.prompts.PromptEncoder`)."""

    chat_template: bool

    def load(self, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The policy on its device and its tokenizer, whose ``pad_token_id`` and ``eos_token_id``
        are set. ``task`` may shape the model (the tiny model warm-starts on its problems)."""
        ...

    def max_positions(self) -> int | None:
        """The context (``max_position_embeddings``) read without loading weights, or None when it
        cannot be read yet (then ``build.py`` checks the loaded model's)."""
        ...

    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer alone, for start-up checks before ``load`` (rlvr_exp/preflight.py)."""
        ...
