"""HFRollout: prompt-major samples, EOS kept and nothing after it, greedy is deterministic."""
from __future__ import annotations

import pytest
import torch

from rlvr_exp.rollout.base import Rollout, SamplingParams
from rlvr_exp.rollout.hf import HFRollout


def prompts(tok):
    return [tok("1+2=")["input_ids"], tok("3+40=")["input_ids"]]


def test_prompt_major_lengths_and_eos(tiny_model, char_tokenizer):
    eos = char_tokenizer.eos_token_id
    rollout = HFRollout(max_batch_sequences=3)  # 2 prompts x 4 samples in chunks of 3
    rollout.bind(tiny_model, char_tokenizer.pad_token_id, eos)
    assert isinstance(rollout, Rollout)
    torch.manual_seed(0)
    out = rollout.generate(prompts(char_tokenizer), SamplingParams(n=4, temperature=1.0, top_p=1.0, max_new_tokens=6))
    assert len(out) == 8
    for ids in out:
        assert 1 <= len(ids) <= 6
        assert eos not in ids[:-1]  # nothing is kept after EOS
        assert len(ids) == 6 or ids[-1] == eos  # a short response stopped on EOS and keeps it


def test_greedy_samples_of_a_prompt_are_identical(tiny_model, char_tokenizer):
    rollout = HFRollout()
    rollout.bind(tiny_model, char_tokenizer.pad_token_id, char_tokenizer.eos_token_id)
    out = rollout.generate(prompts(char_tokenizer), SamplingParams(n=3, temperature=0.0, top_p=1.0, max_new_tokens=5))
    assert out[0] == out[1] == out[2] and out[3] == out[4] == out[5]
    # prompt-major: the second prompt's samples are its own greedy continuation, run alone
    alone = rollout.generate(prompts(char_tokenizer)[1:], SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=5))
    assert out[3] == alone[0]


def test_generate_after_close_says_bind_first(tiny_model, char_tokenizer):
    rollout = HFRollout()
    rollout.bind(tiny_model, char_tokenizer.pad_token_id, char_tokenizer.eos_token_id)
    rollout.close()
    with pytest.raises(RuntimeError, match="before bind"):
        rollout.generate(prompts(char_tokenizer), SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=2))



def _sample(model, tok, seed: int) -> list[list[int]]:
    rollout = HFRollout()
    rollout.bind(model, tok.pad_token_id, tok.eos_token_id)
    torch.manual_seed(seed)
    return rollout.generate(prompts(tok), SamplingParams(n=16, temperature=1.0, top_p=1.0, max_new_tokens=8))


def test_model_generation_config_never_changes_sampling(tiny_model, char_tokenizer):
    """A checkpoint's generation_config with repetition_penalty=1.5 and top_k=5 must not leak
    into sampling: the same seed gives the same samples as with a clean config."""
    import copy

    from transformers import GenerationConfig

    clean = copy.deepcopy(tiny_model)
    clean.generation_config = GenerationConfig()
    shipped = copy.deepcopy(tiny_model)
    shipped.generation_config = GenerationConfig(repetition_penalty=1.5, top_k=5, do_sample=False, min_new_tokens=4)
    assert _sample(shipped, char_tokenizer, 7) == _sample(clean, char_tokenizer, 7)
    assert shipped.generation_config.top_k == 5  # restored after the call
    # The leak is real: generate left to the model's config samples differently (guards the test).
    torch.manual_seed(7)
    ids = torch.tensor([prompts(char_tokenizer)[0]] * 16)
    leaked = shipped.generate(input_ids=ids, do_sample=True, temperature=1.0, max_new_tokens=8,
                              pad_token_id=char_tokenizer.pad_token_id, eos_token_id=char_tokenizer.eos_token_id)
    torch.manual_seed(7)
    plain = clean.generate(input_ids=ids, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=8,
                           pad_token_id=char_tokenizer.pad_token_id, eos_token_id=char_tokenizer.eos_token_id)
    assert leaked.tolist() != plain.tolist()


def test_the_vllm_engine_is_told_the_policys_transformers_class(tiny_model):
    """VLLMRollout passes the policy's class to vLLM (hf_overrides): a config-built model has no
    ``architectures``, and FSDP2 wraps the class in a subclass of its own (module torch's)."""
    from rlvr_exp.rollout.vllm_engine import transformers_class

    assert tiny_model.config.architectures is None  # why vLLM must be told
    assert transformers_class(tiny_model) == "Qwen2ForCausalLM"
    wrapped = type("FSDPQwen2ForCausalLM", (type(tiny_model),), {"__module__": "torch.distributed.fsdp"})
    assert transformers_class(tiny_model.__class__.__new__(wrapped)) == "Qwen2ForCausalLM"
    with pytest.raises(ValueError, match="needs a transformers model, got Linear"):
        transformers_class(torch.nn.Linear(2, 2))
