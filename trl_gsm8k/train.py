"""Train a model on GSM8K with GRPO.

    accelerate launch --config_file accelerate_configs/zero2_offload.yaml -m trl_gsm8k.train \\
        --config recipes/<recipe>.yaml [--any_field value ...]

A recipe (YAML) sets any field of `GSM8KScriptArguments` (below), `GSM8KGRPOConfig` (TRL's `GRPOConfig` plus
ours) and TRL's `ModelConfig`; command-line flags override it. Everything that can be checked without weights
(launch set-up, precision, reward names, model config, memory) is checked first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field

from transformers import TrainerCallback

from .checks import (
    LaunchError,
    available_memory_bytes,
    check_distributed_environment,
    check_fits_in_memory,
    check_model_config,
    check_precision,
    resolve_reward_funcs,
)
from .data import BUNDLED, SYSTEM_PROMPT, load_gsm8k
from .doctor import Doctor
from .models import resolve_model_path
from .trainer import GSM8KGRPOConfig

logger = logging.getLogger(__name__)


@dataclass
class GSM8KScriptArguments:
    """What to train on and which rewards score it."""

    dataset_source: str = field(
        default=BUNDLED,
        metadata={"help": "'bundled' (the GSM8K copy in this package), a local directory of the release's "
                  "train.jsonl/test.jsonl, or 'openai/gsm8k' (the Hub)."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "GSM8K split to train on."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N problems."})
    max_solution_steps: int | None = field(
        default=None,
        metadata={"help": "Train only on problems whose gold solution has at most N calculation steps (GSM8K's train "
                  "solutions have 0-9; 2 keeps 2,734 of 7,473 train problems): easy first, for a model that solves too few to learn."},
    )
    prompt_format: str = field(default="chat", metadata={"help": "'chat' (system + user messages) or 'plain'."})
    system_prompt: str | None = field(
        default=None, metadata={"help": "Replaces the default instruction (trl_gsm8k.data.SYSTEM_PROMPT)."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["correctness", "format"],
        metadata={"help": "Short names (correctness, correctness_strict, format, length, shaped, steps) or dotted "
                  "import paths; weighted by reward_weights."},
    )
    doctor: bool = field(
        default=True,
        metadata={"help": "Watch the logged metrics and warn once per problem found (truncation, zero-variance "
                  "groups, format reward stuck at 0, ...), with the fix (trl_gsm8k.doctor)."},
    )


def _bytes_per_param(model_args) -> float:
    if getattr(model_args, "load_in_4bit", False):
        return 0.5
    if getattr(model_args, "load_in_8bit", False):
        return 1.0
    return 2.0 if model_args.dtype in ("bfloat16", "float16") else 4.0


def build_trainer(script_args: GSM8KScriptArguments, training_args: GSM8KGRPOConfig, model_args) -> GSM8KGRPOTrainer:
    """The recipe's trainer (model, dataset, rewards, tokenizer), after every check that needs no weights. Training
    and `trl_gsm8k.probe` both start here."""
    import torch
    from transformers import AutoTokenizer, set_seed
    from trl import get_peft_config, get_quantization_config

    from .trainer import GSM8KGRPOTrainer

    # --- checks that need no weights ---
    check_distributed_environment(training_args.gradient_accumulation_steps)
    check_precision(training_args.bf16, training_args.fp16, training_args.use_cpu)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs)
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(reward_funcs):
        raise LaunchError(
            f"reward_weights has {len(training_args.reward_weights)} values for {len(reward_funcs)} reward_funcs "
            f"({script_args.reward_funcs}): give one weight per function."
        )
    if not model_args.model_name_or_path:
        raise LaunchError("model_name_or_path is not set: give a Hub id, a local directory or smollm2-135m-instruct.")
    model_path = resolve_model_path(model_args.model_name_or_path)
    config = check_model_config(model_path, training_args.trust_remote_code)
    check_fits_in_memory(config, _bytes_per_param(model_args), *available_memory_bytes())
    try:
        dataset = load_gsm8k(
            script_args.dataset_train_split, script_args.dataset_source, script_args.prompt_format,
            script_args.system_prompt or SYSTEM_PROMPT, limit=script_args.max_train_samples,
            max_solution_steps=script_args.max_solution_steps,
        )
    except ValueError as exc:  # a bad row, split or filter: one clear line, before any weights load
        raise LaunchError(str(exc)) from None

    # --- model, trainer ---
    set_seed(training_args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=training_args.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    training_args.model_init_kwargs = {
        "dtype": model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype),
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }
    trainer = GSM8KGRPOTrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    return trainer


def main(script_args: GSM8KScriptArguments, training_args: GSM8KGRPOConfig, model_args) -> str:
    """Train; returns the output directory."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer = build_trainer(script_args, training_args, model_args)
    doctor = Doctor(trainer) if script_args.doctor else None
    if doctor is not None:
        trainer.add_callback(doctor)
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "latest", "last"):
        resume = get_last_checkpoint(training_args.output_dir) or None
    stop = StopOnInterrupt()
    trainer.add_callback(stop)
    try:
        with stop.installed():
            result = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:  # the second Ctrl-C: stop now, the last complete checkpoint stays usable
        _exit_interrupted(trainer, training_args.output_dir)
    if stop.requested:
        _exit_interrupted(trainer, training_args.output_dir)

    # --- outputs ---
    trainer.save_model(training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        _write_run_info(trainer, training_args.output_dir, doctor)
        _write_curves(training_args.output_dir)
        trainer.accelerator.print(_summary(training_args.output_dir, model_args.use_peft, doctor))
    return training_args.output_dir


class StopOnInterrupt(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop. Second Ctrl-C: stop at once.

    Stopping between steps never leaves a half-written checkpoint behind.
    """

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop now).", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def _exit_interrupted(trainer, output_dir: str) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    hint = (f"resume with --resume_from_checkpoint {last}" if last
            else "no checkpoint was written yet (save_steps decides how often)")
    trainer.accelerator.print(f"\nInterrupted: {hint}.", flush=True)
    raise SystemExit(130)


def _write_run_info(trainer, output_dir: str, doctor: Doctor | None = None) -> None:
    """How the run was actually launched (not how it was meant to be): distributed type, ZeRO stage, offload."""
    import json

    import trl

    engine = trainer.model_wrapped
    info = {
        "distributed_type": str(trainer.accelerator.distributed_type),
        "num_processes": trainer.accelerator.num_processes,
        "wrapped_model": type(engine).__name__,
        "trl_version": trl.__version__,
    }
    if hasattr(engine, "zero_optimization_stage"):
        info["zero_stage"] = engine.zero_optimization_stage()
        info["zero_cpu_offload"] = bool(engine.zero_cpu_offload())
        info["optimizer"] = type(engine.optimizer.optimizer if hasattr(engine.optimizer, "optimizer")
                                 else engine.optimizer).__name__
    if doctor is not None:
        info["diagnoses"] = doctor.diagnoses
    with open(os.path.join(output_dir, "run_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def _write_curves(output_dir: str) -> None:
    from pathlib import Path

    from .plot import plot_training

    try:
        plot_training(Path(output_dir))
    except Exception as exc:  # a picture must never cost the trained model
        logger.warning("Could not draw the training curves: %s", exc)


def _summary(output_dir: str, use_peft: bool, doctor: Doctor | None = None) -> str:
    weights = "adapter_model.safetensors (the LoRA adapter; merge it with python -m trl_gsm8k.export)" if use_peft \
        else "model.safetensors (the trained model)"
    lines = [
        f"\nDone. Outputs in {os.path.abspath(output_dir)}:",
        f"  {weights}, with its config and tokenizer",
        "  trainer_state.json   metrics of every logging step (reward, accuracy, advantage, entropy, ...)",
        "  train_results.json   run totals (runtime, steps/s)",
    ]
    if os.path.isfile(os.path.join(output_dir, "training_curves.png")):
        lines.append("  training_curves.png  reward, accuracy and other curves over steps")
    lines.append(f"Evaluate it: python -m trl_gsm8k.evaluate --model {output_dir} --limit 200")
    if doctor is not None:
        lines += doctor.summary_lines()
    return "\n".join(lines)


def make_parser():
    from trl import ModelConfig, TrlParser

    return TrlParser((GSM8KScriptArguments, GSM8KGRPOConfig, ModelConfig))


def parse(argv: list[str] | None = None):
    """Parse a recipe and overrides; a bad recipe exits with one clear line instead of a traceback."""
    import yaml

    try:
        return make_parser().parse_args_and_config(args=argv)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: recipe not found: {exc.filename or exc}") from None
    except yaml.YAMLError as exc:
        raise SystemExit(f"error: the recipe is not valid YAML: {exc}") from None
    except ValueError as exc:
        message = str(exc)
        if "bf16/gpu" in message:
            message = "bf16: true needs a GPU, and none is available. Set `bf16: false` in the recipe (or pass --bf16 false)."
        elif "Unknown arguments from config file" in message:
            message += " (check the key's spelling: recipe keys are fields of GSM8KScriptArguments, " \
                       "GSM8KGRPOConfig or trl.ModelConfig)"
        raise SystemExit(f"error: {message}") from None


def cli(argv: list[str] | None = None) -> None:
    script_args, training_args, model_args = parse(argv)
    try:
        main(script_args, training_args, model_args)
    except (LaunchError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    cli(sys.argv[1:])
