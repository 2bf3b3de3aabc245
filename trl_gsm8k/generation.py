"""What the evaluator generates with: the model behind ``--model`` (a directory, a run, an adapter, the offline model)
and two generation backends, Transformers' batched ``generate`` and vLLM, that return the same samples."""

from __future__ import annotations

import argparse
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("trl_gsm8k.evaluate")  # one name for all the evaluator's messages


class EvalError(ValueError):
    """Input the evaluator cannot use; the message is the one line the command-line tool prints."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- models ------------------------------------------------------------------------------------------------------


@dataclass
class ResolvedModel:
    path: str  # the weights (the base model, for an adapter)
    adapter: str | None = None
    tokenizer: str = ""


def resolve_model(name: str) -> ResolvedModel:
    """Find the weights behind ``--model``; raise :class:`EvalError` (one line) when there are none."""
    from .errors import LaunchError

    try:
        return _resolve_model(name)
    except LaunchError as exc:  # a Hub id that cannot be loaded from here (trl_gsm8k.models.check_hub_model)
        raise EvalError(f"--model {name}: {exc}") from None


def _resolve_model(name: str) -> ResolvedModel:
    from .models import adapter_tokenizer, base_model_of, is_missing_local_path, latest_checkpoint, resolve_model_path

    path = Path(os.path.expanduser(name))
    if not path.exists():
        if is_missing_local_path(name) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
            raise EvalError(f"--model {name}: no such directory")
        resolved = resolve_model_path(name)  # the offline model's name, or a Hub id (checked when loaded)
        return ResolvedModel(resolved, None, resolved)
    if not path.is_dir():
        raise EvalError(f"--model {name}: not a directory")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise EvalError(f"--model {name}: holds no model (config.json), adapter or checkpoint-*/")
        logger.warning("%s holds no final model: evaluating its latest checkpoint %s", name, checkpoint.name)
        path = checkpoint
    if (path / "adapter_config.json").is_file():
        try:
            base = base_model_of(path)
        except ValueError:
            raise EvalError(f"--model {name}: adapter_config.json names no base_model_name_or_path") from None
        base_path = resolve_model_path(base)
        if is_missing_local_path(base_path):
            raise EvalError(f"--model {name}: the adapter's base model {base} is not found (re-point it: "
                            "base_model_name_or_path in adapter_config.json, or trl_gsm8k.export --base-model PATH)")
        return ResolvedModel(base_path, str(path), adapter_tokenizer(path, base_path))
    return ResolvedModel(str(path), None, str(path))


def load_tokenizer(model: ResolvedModel):
    from transformers import AutoTokenizer

    from .models import ensure_pad_token

    try:
        tokenizer = AutoTokenizer.from_pretrained(model.tokenizer, padding_side="left")
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot load a tokenizer from {model.tokenizer}: {_first_line(exc)}") from None
    return ensure_pad_token(tokenizer)


def context_length(model_path: str) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise EvalError(f"cannot load the model config from {model_path}: {_first_line(exc)}") from None
    config = getattr(config, "text_config", None) or config
    return getattr(config, "max_position_embeddings", None)


# --- generation backends -----------------------------------------------------------------------------------------


@dataclass
class Sample:
    text: str
    num_tokens: int
    truncated: bool  # cut by max_new_tokens: neither EOS nor a stop string


def generation_device(args: argparse.Namespace) -> str:
    """``--device``, else cuda where available, else cpu."""
    import torch

    return args.device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(requested: str, device: str) -> str:
    """The torch dtype name ``--dtype`` means on ``device``: ``auto`` is bfloat16 on a GPU and on a CPU that computes
    bf16 natively (AMX-BF16, AVX512-BF16: ``trl_gsm8k.precision``), float32 on other CPUs, where bf16 is emulated
    and slower than fp32."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bfloat16"
    from .precision import native_cpu_bf16

    return "bfloat16" if device == "cpu" and native_cpu_bf16() else "float32"


class TransformersGenerator:
    """Batched ``model.generate`` with left padding; one call per batch of prompts, K samples each."""

    def __init__(self, model: ResolvedModel, tokenizer, args: argparse.Namespace, stop: str | None) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch, self.tokenizer, self.args, self.stop = torch, tokenizer, args, stop
        self.device = generation_device(args)
        dtype = getattr(torch, resolve_dtype(args.dtype, self.device))
        try:
            net = AutoModelForCausalLM.from_pretrained(model.path, dtype=dtype)
        except (OSError, ValueError) as exc:
            what = f"the base model of adapter {model.adapter}" if model.adapter else "model"
            raise EvalError(f"cannot load {what} {model.path}: {_first_line(exc)}") from None
        if model.adapter:
            from .models import merge_adapter

            net = merge_adapter(net, model.adapter)
        self.model = net.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos_ids.discard(None)

    def __call__(self, prompts: list[str], seed: int, on_token=None) -> list[list[Sample]]:
        """``on_token()`` is called once per generated position of the batch (progress within a long batch)."""
        torch, args, k = self.torch, self.args, self.args.num_samples
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = args.temperature is not None and args.temperature > 0
        kwargs = dict(do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0) if sampling else dict(
            do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.stop:
            kwargs.update(stop_strings=[self.stop], tokenizer=self.tokenizer)
        if on_token is not None:
            kwargs["stopping_criteria"] = _calling_each_token(on_token)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=args.max_new_tokens, num_return_sequences=k,
                                      pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        generated = out[:, enc["input_ids"].shape[1]:].tolist()
        samples = []
        for ids in generated:
            end = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), None)
            kept = ids[:end] if end else [t for t in ids if t != self.tokenizer.pad_token_id]
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            stopped = bool(self.stop) and self.stop in text
            if stopped:
                text = text.split(self.stop, 1)[0]
            samples.append(Sample(text, len(kept), end is None and not stopped))
        return [samples[i * k:(i + 1) * k] for i in range(len(prompts))]


def _calling_each_token(on_token):
    """A stopping criterion that stops nothing and calls ``on_token()`` at each generated position: ``generate``
    checks its criteria once per step, so this is the one hook inside a batch that every decoding mode passes."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class EachToken(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            on_token()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([EachToken()])


class VLLMGenerator:
    """vLLM (``--backend vllm``): same prompts and sampling settings; a LoRA adapter is served with LoRARequest.

    Untested in CI (it needs a GPU and vLLM); the Transformers backend is the tested one.
    """

    def __init__(self, model: ResolvedModel, tokenizer, args: argparse.Namespace, stop: str | None) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise EvalError("--backend vllm needs vLLM: `pip install vllm` (GPU machines only)") from None
        self.llm = LLM(model=model.path, tokenizer=model.tokenizer, seed=args.seed, enable_lora=bool(model.adapter),
                       dtype="auto" if args.dtype == "auto" else args.dtype)
        self.lora = None
        if model.adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, model.adapter)
        self.params = SamplingParams(n=args.num_samples, temperature=args.temperature or 0.0,
                                     max_tokens=args.max_new_tokens, stop=[stop] if stop else None)

    def __call__(self, prompts: list[str], seed: int, on_token=None) -> list[list[Sample]]:
        params = self.params.clone()
        params.seed = seed
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [[Sample(c.text, len(c.token_ids), c.finish_reason == "length") for c in o.outputs] for o in outputs]
