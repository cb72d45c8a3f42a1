"""Building prompts: the paper's instruction around a raw question, and turning a problem into
prompt token ids (raw text or the model's chat template), counting the prompts that are cut."""
from __future__ import annotations

import logging

from transformers import PreTrainedTokenizerBase

from rlvr_exp.tasks.base import Problem

log = logging.getLogger(__name__)

# The paper's training prompt (docs/method.md section 2), sent inside the model's chat template.
PAPER_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."
TEMPLATES = {"paper": PAPER_TEMPLATE, "none": "{question}"}


def resolve_template(prompt: str, key: str) -> str:
    """A named template (``paper``, ``none``) or a literal one holding ``{question}``."""
    template = TEMPLATES.get(prompt, prompt)
    if "{question}" not in template:
        raise ValueError(f"{key} must be one of {sorted(TEMPLATES)} or a template with {{question}}, got {prompt!r}")
    return template


def apply_template(question: str, template: str | None) -> str:
    """``template`` with ``{question}`` replaced (plain replacement: other braces, such as
    ``\\boxed{}``, stay literal)."""
    return question if template is None else template.replace("{question}", question)


class PromptEncoder:
    """Encodes a problem once and caches it. With ``chat_template`` the problem's messages (or
    one user message holding its question) go through the tokenizer's chat template with the
    generation prompt; otherwise the question text is tokenised as is. Prompts longer than
    ``max_prompt_tokens`` are left-truncated (docs/method.md section 2); the first cut one is
    warned about, and :attr:`lost` keeps how many tokens each encoded prompt lost."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, chat_template: bool, max_prompt_tokens: int) -> None:
        if chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "model.chat_template is true but the tokenizer has no chat template; "
                "set model.chat_template=false or load a tokenizer that ships one"
            )
        self.tokenizer, self.chat_template, self.max_prompt_tokens = tokenizer, chat_template, max_prompt_tokens
        self._cache: dict[str, list[int]] = {}
        self.lost: dict[str, tuple[int, int]] = {}  # key -> (tokens cut, full length), cut prompts only
        self._warned = False

    @staticmethod
    def _key(problem: Problem) -> str:
        return problem.question if problem.messages is None else repr(problem.messages)

    def full_ids(self, problem: Problem) -> list[int]:
        """The prompt's token ids before truncation."""
        if self.chat_template:
            messages = list(problem.messages or ({"role": "user", "content": problem.question},))
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return list(ids)
        return self.tokenizer(problem.question, add_special_tokens=False)["input_ids"]

    def __call__(self, problem: Problem) -> list[int]:
        key = self._key(problem)
        ids = self._cache.get(key)
        if ids is None:
            full = self.full_ids(problem)
            ids = full[-self.max_prompt_tokens :]
            if len(full) > len(ids):
                self.lost[key] = (len(full) - len(ids), len(full))
                if not self._warned:
                    self._warned = True
                    log.warning("a prompt of %d tokens was cut to trainer.max_prompt_tokens=%d (its start is lost); "
                                "train/prompt_truncated_share logs the share of cut prompts per step",
                                len(full), self.max_prompt_tokens)
            self._cache[key] = ids
        return ids

    def was_cut(self, problem: Problem) -> bool:
        """Whether ``problem``'s prompt lost tokens (encode it first)."""
        return self._key(problem) in self.lost
