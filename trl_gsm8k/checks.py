"""Checks run before any weight is loaded: each failure names its fix.

A mistake found after a 3 GB download or ten minutes of DeepSpeed set-up wastes a user's evening; these read only
the environment, the recipe and the model's config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import LaunchError, NeedsGPU  # raised here; still importable from here
from .models import is_missing_local_path
from .config import cpu_smoke_test_flags, cpu_smoke_test_hint  # the recipe reader names them in its refusals too
from .precision import check_precision  # the precision rule lives below the recipe reader; still importable from here


def check_distributed_environment(gradient_accumulation_steps: int, cuda_available: bool | None = None) -> None:
    """DeepSpeed on CPU with several processes, and accumulation steps that disagree with the accelerate file."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    use_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if use_deepspeed and world_size > 1 and not cuda_available:
        raise LaunchError(
            f"DeepSpeed was launched with {world_size} processes on a machine without CUDA: Accelerate does not "
            "support DeepSpeed on CPU with several processes (DeepSpeed's batch-size check fails). Use one process "
            "(`--num_processes 1`, the default of accelerate_configs/zero2_offload.yaml), or for a multi-process "
            "CPU run use DDP on gloo: `ACCELERATE_USE_CPU=true torchrun --nproc_per_node N -m trl_gsm8k.train "
            "--config RECIPE`."
        )
    if not use_deepspeed:
        return
    fixed = {}
    env_value = os.environ.get("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")
    if env_value and env_value != "auto":
        fixed["the accelerate config's deepspeed_config"] = env_value
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if config_file and Path(config_file).is_file():
        try:
            value = json.loads(Path(config_file).read_text()).get("gradient_accumulation_steps", "auto")
        except json.JSONDecodeError as exc:
            raise LaunchError(f"DeepSpeed config {config_file} is not valid JSON: {exc}") from None
        if value != "auto":
            fixed[config_file] = value
    for where, value in fixed.items():
        if int(value) != gradient_accumulation_steps:
            raise LaunchError(
                f"gradient_accumulation_steps is {value} in {where} but {gradient_accumulation_steps} in the recipe: "
                "DeepSpeed would stop with a batch-size assertion. Remove it from the accelerate/DeepSpeed file "
                "(or set it to \"auto\") so the recipe decides."
            )


def check_cpu_settings(training_args: Any, model_args: Any, cuda_available: bool | None = None) -> None:
    """GPU-only settings in a run on the CPU: bitsandbytes quantization (QLoRA) and vLLM generation, refused before
    any weight loads with the overrides that make the recipe a CPU smoke test."""
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if cuda_available and not training_args.use_cpu:
        return
    gpu_only = [f"{name}: true" for name in ("load_in_4bit", "load_in_8bit") if getattr(model_args, name, False)]
    if getattr(training_args, "use_vllm", False):
        gpu_only.append("use_vllm: true")
    if gpu_only:
        flags = cpu_smoke_test_flags(training_args, model_args)
        raise NeedsGPU(
            f"{' and '.join(gpu_only)} needs a CUDA GPU (bitsandbytes quantization, vLLM generation) and this run is "
            f"on the CPU. {cpu_smoke_test_hint(flags, model_args.model_name_or_path)}", flags
        )


def check_model_config(model_path: str, trust_remote_code: bool = False):
    """Load the model's config only (no weights): a missing path or an unknown Hub id fails here, clearly."""
    from transformers import AutoConfig

    if is_missing_local_path(model_path):
        raise LaunchError(f"Model path {model_path!r} does not exist. Give a local model directory, a Hub id, or "
                          "smollm2-135m-instruct (the offline model).")
    try:
        return AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise LaunchError(
            f"Cannot read the config of model {model_path!r} ({str(exc).splitlines()[0]}). Give an existing local "
            "directory, a Hub id reachable from this machine, or smollm2-135m-instruct (the offline model)."
        ) from None


def estimate_weight_bytes(config: Any, bytes_per_param: float) -> int | None:
    """The weights' bytes: the memory planner's parameter count (:class:`trl_gsm8k.memory.ModelShape`, tied
    embeddings as the config says) times bytes per parameter; None for a config the planner does not model."""
    from .memory import ModelShape, PlannerError

    try:
        return int(ModelShape.from_config(config).params * bytes_per_param)
    except PlannerError:  # mixture-of-experts or an unfamiliar config: no estimate, no check
        return None


def check_fits_in_memory(config: Any, bytes_per_param: float, available_bytes: int, where: str) -> None:
    needed = estimate_weight_bytes(config, bytes_per_param)
    if needed is not None and needed > available_bytes:
        raise LaunchError(
            f"The model's weights alone need about {needed / 2**30:.1f} GiB but {where} has "
            f"{available_bytes / 2**30:.1f} GiB available. Use a smaller model, LoRA with load_in_4bit (QLoRA), "
            "or a machine with more memory."
        )


def available_memory_bytes() -> tuple[int, str]:
    """Free memory of the device the weights load on: the GPU's when CUDA is present, else the machine's RAM."""
    import torch

    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return free, "the GPU"
    import psutil  # installed with accelerate

    return psutil.virtual_memory().available, "this machine's RAM"
