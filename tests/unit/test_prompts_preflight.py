"""The paper's prompt inside a chat template, counting cut prompts, and the start-up refusals:
prompt + response beyond the model's context, and prompts that lose most of their text."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from rlvr_exp.config import ConfigError, TrainerConfig
from rlvr_exp.preflight import audit_prompts, check_context
from rlvr_exp.tasks.base import Problem
from rlvr_exp.tasks.prompts import PAPER_TEMPLATE, PromptEncoder, apply_template

CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture
def chat_tokenizer():
    from rlvr_exp.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    tok.chat_template = CHAT
    return tok


def test_paper_prompt_inside_the_chat_template(chat_tokenizer) -> None:
    question = apply_template("What is 2+3?", PAPER_TEMPLATE)
    assert question == "What is 2+3?\nPlease reason step by step, and put your final answer within \\boxed{}."
    ids = PromptEncoder(chat_tokenizer, True, 1000)(Problem(question=question, answer="5"))
    assert chat_tokenizer.decode(ids) == f"<user>{question}\n<assistant>"


def test_shipped_chat_rows_go_through_the_template_as_they_are(chat_tokenizer) -> None:
    messages = ({"role": "system", "content": "S"}, {"role": "user", "content": "U"})
    ids = PromptEncoder(chat_tokenizer, True, 1000)(Problem(question="U", answer="1", messages=messages))
    assert chat_tokenizer.decode(ids) == "<system>S\n<user>U\n<assistant>"


def test_cut_prompts_are_counted_and_warned_once(chat_tokenizer, caplog) -> None:
    enc = PromptEncoder(chat_tokenizer, False, 5)
    short, long1, long2 = (Problem(question=q, answer="1") for q in ("1+2=", "123456789", "abcdefgh"))
    with caplog.at_level(logging.WARNING):
        assert chat_tokenizer.decode(enc(long1)) == "56789"  # left-truncated
        enc(long2)
        enc(short)
    assert enc.was_cut(long1) and enc.was_cut(long2) and not enc.was_cut(short)
    assert enc.lost[long1.question] == (4, 9)
    assert caplog.text.count("trainer.max_prompt_tokens=5") == 1


def test_audit_refuses_when_most_prompts_lose_more_than_the_share(chat_tokenizer, caplog) -> None:
    enc = PromptEncoder(chat_tokenizer, False, 10)
    # 20 characters -> 10 lost = 0.5 of the prompt; 8 characters -> nothing lost.
    long, short = Problem(question="x" * 20, answer="1"), Problem(question="y" * 8, answer="1")
    with caplog.at_level(logging.WARNING):
        assert audit_prompts(enc, [long, short, short], max_cut_share=0.25) == pytest.approx(1 / 3)
    assert "1 of 3 training prompts checked are longer than trainer.max_prompt_tokens=10" in caplog.text
    with pytest.raises(ConfigError, match=r"2 of 3 training prompts .* more than trainer.max_prompt_cut_share=0.25"):
        audit_prompts(enc, [long, long, short], max_cut_share=0.25)
    assert audit_prompts(enc, [long, long, short], max_cut_share=0.5) == pytest.approx(2 / 3)  # 0.5 is not > 0.5


def test_context_check_names_both_lengths_and_the_limit() -> None:
    cfg = TrainerConfig(max_prompt_tokens=1024, max_response_tokens=8192)
    with pytest.raises(ConfigError, match=r"1024\) \+ trainer.max_response_tokens \(8192\) = 9216 exceeds .* \(4096 positions"):
        check_context(4096, cfg, "Qwen/Qwen2.5-Math-7B")
    check_context(9216, cfg, "m")
    check_context(None, cfg, "m")  # unknown: not checked here


def test_minibatch_error_says_to_set_both() -> None:
    with pytest.raises(ConfigError, match=r"set.*prompts_per_minibatch=6 .*divisors of 12: \[1, 2, 3, 4, 6, 12\]"):
        TrainerConfig(prompts_per_step=12, prompts_per_minibatch=8)


def test_build_refuses_long_prompts_for_the_tiny_model_before_it_loads(tmp_path: Path, monkeypatch) -> None:
    """The new user's case: real math questions for the 64-token default; refused at start-up,
    never reaching the (slow) warm-start."""
    from rlvr_exp.build import build
    from rlvr_exp.models.tiny import TinyQwen2
    from tests.conftest import compose

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(TinyQwen2, "load", never)
    rows = [{"question": f"Let $f(x) = {i}x^2 + 3x - 7$. Compute $f(f(1))$ and simplify fully.", "answer": str(i)}
            for i in range(6)]
    data = tmp_path / "math.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(["task=files", f"task.train.path={data}", f"task.val.val.path={data}", "logger.mode=disabled"])
    with pytest.raises(ConfigError, match="trainer.max_prompt_cut_share"):
        build(cfg, tmp_path / "run")
    cfg = compose(["trainer.max_prompt_tokens=250", "logger.mode=disabled"])
    too_long = r"250\) \+ trainer.max_response_tokens \(16\) = 266 exceeds the context of the model \(256"
    with pytest.raises(ConfigError, match=too_long):
        build(cfg, tmp_path / "run")
