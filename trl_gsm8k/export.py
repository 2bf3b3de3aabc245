"""Merge a trained LoRA adapter into its base model and save a plain Transformers model.

    python -m trl_gsm8k.export --checkpoint outputs/run --output outputs/run-merged

The result loads with `AutoModelForCausalLM.from_pretrained` alone (no PEFT), for evaluation, vLLM or the Hub.
"""

from __future__ import annotations

import argparse
import sys

from .models import adapter_tokenizer, base_model_of, is_missing_local_path, merge_adapter, resolve_model_path


def export_merged(checkpoint: str, output: str, base_model: str | None = None, dtype: str = "auto") -> str:
    """Load ``base + adapter``, merge the adapter into the weights, save model and tokenizer to ``output``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = resolve_model_path(base_model or base_model_of(checkpoint))
    if is_missing_local_path(base):
        raise FileNotFoundError(f"Base model {base!r} of adapter {checkpoint} not found; pass --base-model PATH.")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    merge_adapter(model, checkpoint).save_pretrained(output)
    AutoTokenizer.from_pretrained(adapter_tokenizer(checkpoint, base)).save_pretrained(output)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trl_gsm8k.export", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="A training output or checkpoint-N directory with a LoRA adapter.")
    parser.add_argument("--output", required=True, help="Where to write the merged model.")
    parser.add_argument("--base-model", default=None, help="Override the base model named in adapter_config.json.")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    try:
        out = export_merged(args.checkpoint, args.output, args.base_model, args.dtype)
    except (FileNotFoundError, ValueError, OSError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"Merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
