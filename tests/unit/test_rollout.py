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
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvr_exp.rollout.vllm_engine import transformers_class

    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                         num_key_value_heads=1, intermediate_size=8))
    assert model.config.architectures is None  # why vLLM must be told
    assert transformers_class(model) == "Qwen2ForCausalLM"
    assert transformers_class(tiny_model) == "Qwen2ForCausalLM"
    wrapped = type("FSDPQwen2ForCausalLM", (type(model),), {"__module__": "torch.distributed.fsdp"})
    assert transformers_class(model.__class__.__new__(wrapped)) == "Qwen2ForCausalLM"
    with pytest.raises(ValueError, match="needs a transformers model, got Linear"):
        transformers_class(torch.nn.Linear(2, 2))


# ---- the lean decoding loop against transformers generate, and its own scores ----------------------------

MIXED = ["1+2=", "3+40=", "56+78=", "9="]  # left padding of 0..2 tokens


def mixed_prompts(tok) -> list[list[int]]:
    return [tok(q, add_special_tokens=False)["input_ids"] for q in MIXED]


def hf_generate(model, prompts: list[list[int]], n: int, eos: int | None, pad: int, **kw) -> list[list[int]]:
    """transformers generate on the same left-padded prompts (prompt-major), cut after EOS."""
    flat = [p for p in prompts for _ in range(n)]
    width = max(map(len, flat))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in flat])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in flat])
    out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=eos, **kw)[:, width:].tolist()
    return [s[: s.index(eos) + 1] if eos in s else s for s in out]


@pytest.mark.parametrize("share_prompts", [True, False])
def test_sampling_equals_generate_seed_for_seed(tiny_model, char_tokenizer, share_prompts):
    """With no row ending early (an EOS id the model never emits) both draw every row at every step from
    the same processed distribution (temperature 0.6, top_p 0.9), so a seed gives the same tokens,
    whether a prompt's 4 samples share one prefill or not."""
    never = len(char_tokenizer) + 7
    rollout = HFRollout(share_prompts=share_prompts)
    rollout.bind(tiny_model, char_tokenizer.pad_token_id, never)
    torch.manual_seed(3)
    ours = rollout.generate(mixed_prompts(char_tokenizer), SamplingParams(n=4, temperature=0.6, top_p=0.9, max_new_tokens=7))
    torch.manual_seed(3)
    theirs = hf_generate(tiny_model, mixed_prompts(char_tokenizer), 4, None, char_tokenizer.pad_token_id, do_sample=True,
                         temperature=0.6, top_p=0.9, top_k=0, max_new_tokens=7)
    assert ours == theirs and all(len(r) == 7 for r in ours)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_sampler_scores_equal_the_scoring_pass(tiny_model, char_tokenizer, temperature):
    """The log-probs and entropies the sampler hands back equal a scoring pass over the same batch
    (rlvr_exp/algos/logprobs.py) to float32 round-off: stated tolerance 1e-5 (measured ~1e-6 here),
    0 exactly past each response's end; T is the longest response. EOS is the model's likeliest
    token, so rows end at different steps and leave the batch (their cache rows dropped): the
    scores of the rows that run on prove the pruned cache right."""
    from rlvr_exp.algos.logprobs import LogProbSpec, score_batch
    from rlvr_exp.collect import build_batch
    from rlvr_exp.tasks.base import Problem
    from rlvr_exp.tasks.prompts import PromptEncoder

    pad = char_tokenizer.pad_token_id
    eos = hf_generate(tiny_model, mixed_prompts(char_tokenizer), 1, None, pad, do_sample=False, max_new_tokens=1)[0][0]
    rollout = HFRollout(max_batch_sequences=6)
    rollout.bind(tiny_model, pad, eos)
    problems = [Problem(q, "0") for q in MIXED]
    enc = PromptEncoder(char_tokenizer, chat_template=False, max_prompt_tokens=64)
    torch.manual_seed(0)
    sampling = SamplingParams(n=4, temperature=temperature, top_p=1.0, max_new_tokens=12)
    out = rollout.generate_scored([enc(p) for p in problems], sampling, with_entropy=True)
    lengths = [len(r) for r in out.responses]
    assert min(lengths) < 6 and max(lengths) > 8, lengths  # rows do leave the batch early, others run on
    batch = build_batch(problems, out.responses, 4, enc, char_tokenizer, 12)
    assert out.logp.shape == out.entropy.shape == batch.response_mask.shape
    mask = batch.response_mask
    logp, ent = score_batch(tiny_model, batch, 5, True, LogProbSpec(temperature, 0))
    assert (out.logp - logp).abs().max() < 1e-5 and (out.entropy - ent).abs().max() < 1e-5
    assert torch.all(out.logp[~mask] == 0) and torch.all(out.entropy[~mask] == 0)
    assert bool((out.logp[mask] < 0).all()) and bool((out.entropy[mask] > 0).all())
    alone = rollout.generate_scored([enc(p) for p in problems], sampling, with_entropy=False)
    assert alone.entropy is None and alone.logp.shape[0] == 16


def test_scored_sampling_needs_a_positive_temperature(tiny_model, char_tokenizer):
    rollout = HFRollout()
    rollout.bind(tiny_model, char_tokenizer.pad_token_id, char_tokenizer.eos_token_id)
    with pytest.raises(ValueError, match="temperature > 0"):
        rollout.generate_scored(mixed_prompts(char_tokenizer), SamplingParams(1, 0.0, 1.0, 4), with_entropy=True)
