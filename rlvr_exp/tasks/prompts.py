"""Turning a problem into prompt token ids (raw text or the model's chat template)."""
from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from rlvr_exp.tasks.base import Problem


class PromptEncoder:
    """Encodes a problem once and caches it. With ``chat_template`` the problem's messages (or
    one user message holding its question) go through the tokenizer's chat template with the
    generation prompt; otherwise the question text is tokenised as is. Prompts longer than
    ``max_prompt_tokens`` are left-truncated (docs/method.md section 2)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_template: bool, max_prompt_tokens: int) -> None:
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "model.chat_template is true but the tokenizer has no chat template; "
                "set model.chat_template=false or load a tokenizer that ships one"
            )
        self.tokenizer, self.chat_template, self.max_prompt_tokens = tokenizer, chat_template, max_prompt_tokens
        self._cache: dict[str, list[int]] = {}

    def __call__(self, problem: Problem) -> list[int]:
        key = problem.question if problem.messages is None else repr(problem.messages)
        ids = self._cache.get(key)
        if ids is None:
            if self.chat_template:
                messages = list(problem.messages or ({"role": "user", "content": problem.question},))
                ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                ids = list(ids)
            else:
                ids = self.tokenizer(problem.question, add_special_tokens=False)["input_ids"]
            ids = ids[-self.max_prompt_tokens :]
            self._cache[key] = ids
        return ids
