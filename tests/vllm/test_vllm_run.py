"""A real run with ``rollout=vllm`` (``pytest -m vllm``). Its own module: vLLM allows one in-process
engine per process, and test_vllm_rollout.py's engine is closed at the end of that module."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")


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
