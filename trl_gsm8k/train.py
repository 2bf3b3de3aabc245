"""Train a model on GSM8K with GRPO.

    accelerate launch --config_file accelerate_configs/zero2_offload.yaml -m trl_gsm8k.train \\
        --config recipes/<recipe>.yaml [--any_field value ...]

A recipe (YAML) sets any field of `GSM8KScriptArguments`, `GSM8KGRPOConfig` (TRL's `GRPOConfig` plus ours; both
in `config.py`) and TRL's `ModelConfig`; command-line flags override it. Everything that can be checked without weights
(launch set-up, precision, reward names, model config, memory) is checked first.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import sys
import threading

from transformers import TrainerCallback

from .checks import (
    available_memory_bytes,
    check_cpu_settings,
    check_distributed_environment,
    check_fits_in_memory,
    check_model_config,
    check_precision,
)
from .config import GSM8KScriptArguments, parse
from .data import SYSTEM_PROMPT, load_gsm8k
from .doctor import Doctor
from .errors import LaunchError, error_line, recorded
from .models import ensure_pad_token, realias_tied_weights, resolve_model_path
from .rewards import get_reward_funcs
from .trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

logger = logging.getLogger(__name__)


def _bytes_per_param(model_args) -> float:
    from .memory import DTYPE_BYTES

    if getattr(model_args, "load_in_4bit", False):
        return 0.5
    if getattr(model_args, "load_in_8bit", False):
        return 1.0
    return DTYPE_BYTES.get(str(model_args.dtype).replace("torch.", ""), 4)


def build_trainer(script_args: GSM8KScriptArguments, training_args: GSM8KGRPOConfig, model_args) -> GSM8KGRPOTrainer:
    """The recipe's trainer (model, dataset, rewards, tokenizer), after every check that needs no weights. Training
    and `trl_gsm8k.probe` both start here."""
    import torch
    from transformers import AutoTokenizer, set_seed
    from trl import get_peft_config, get_quantization_config

    # --- checks that need no weights ---
    check_distributed_environment(training_args.gradient_accumulation_steps)
    check_precision(training_args.bf16, training_args.fp16, training_args.use_cpu,
                    allow_emulated=training_args.allow_emulated_bf16)
    check_cpu_settings(training_args, model_args)
    note = getattr(training_args, "precision_note", None)  # set by GSM8KGRPOConfig when it chose or emulates bf16
    if note and training_args.process_index == 0:
        print(note, file=sys.stderr, flush=True)
    try:
        reward_funcs = get_reward_funcs(script_args.reward_funcs)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
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
    ensure_pad_token(tokenizer)
    training_args.model_init_kwargs = {
        "dtype": model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype),
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }
    trainer = _CLITrainer(
        model=model_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    if model_args.use_peft:
        # The adapter names its base as the user did, not as the path it was loaded from (for our offline model, this
        # machine's cache): our offline name and a Hub id resolve on any machine; a local path stays as given.
        for peft_config in trainer.model.peft_config.values():
            peft_config.base_model_name_or_path = model_args.model_name_or_path
    return trainer


def resolve_resume(value: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint ``--resume_from_checkpoint`` names: a directory, or ``latest`` (``true``, ``last``) for the
    newest ``checkpoint-N`` in ``output_dir``. Raises :class:`LaunchError` when there is none to resume from: a run
    asked to resume never starts from scratch without saying so.

    >>> resolve_resume(None, "outputs/run") is None
    True
    """
    if value in (None, False, "") or isinstance(value, str) and value.lower() in ("false", "none"):
        return None
    from transformers.trainer_utils import get_last_checkpoint

    if value is True or value.lower() in ("true", "latest", "last"):
        found = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if found is None:
            raise LaunchError(f"--resume_from_checkpoint {value}: {output_dir} holds no checkpoint-N directory to "
                              "resume from; drop the flag to start from scratch, or name a checkpoint directory.")
        return found
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise LaunchError(f"--resume_from_checkpoint {value}: not a checkpoint directory (no trainer_state.json in it).")
    return value


def _checkpoint_step(checkpoint: str) -> int | None:
    try:
        with open(os.path.join(checkpoint, "trainer_state.json"), encoding="utf-8") as f:
            return int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(script_args: GSM8KScriptArguments, training_args: GSM8KGRPOConfig, model_args,
         recipe: str | None = None) -> str:
    """Train; returns the output directory. ``recipe``: the YAML it was read from, for the closing hint."""
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)  # before any weights load
    trainer = build_trainer(script_args, training_args, model_args)
    doctor = Doctor(trainer) if script_args.doctor else None
    if doctor is not None:
        trainer.add_callback(doctor)
    if resume and training_args.process_index == 0:
        of = f" of {training_args.max_steps}" if training_args.max_steps > 0 else ""
        print(f"Resuming from {resume} (step {_checkpoint_step(resume)}{of}).", file=sys.stderr, flush=True)
    stop = StopOnInterrupt(trainer, resumed_from=resume)
    trainer.add_callback(stop)
    with stop.installed(), _expected_accumulation_warning_dropped(training_args.gradient_accumulation_steps):
        try:
            result = trainer.train(resume_from_checkpoint=resume)
        except TrainingInterrupted:  # Ctrl-C aborted a step: the state is the last completed step's
            pass
        except KeyboardInterrupt:  # a second Ctrl-C (or the launcher's SIGTERM for it): stop without saving
            _exit_interrupted(trainer, stop, saved=False)
        if stop.requested:
            try:
                saved = stop.save()
            except KeyboardInterrupt:  # during the save: the half-written copy was never visible, and is gone
                saved = False
            _exit_interrupted(trainer, stop, saved=saved)

    # --- outputs ---
    trainer.save_model(training_args.output_dir)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        _write_run_info(trainer, training_args.output_dir, doctor)
        _write_curves(training_args.output_dir)
        trainer.accelerator.print(_summary(training_args.output_dir, model_args.use_peft, doctor, recipe))
    return training_args.output_dir


class _ExpectedAccumulationWarning(logging.Filter):
    """Drops accelerate's "Gradient accumulation steps mismatch: GradientAccumulationPlugin has 1, DeepSpeed config has
    N" when N is the recipe's gradient_accumulation_steps. transformers' Trainer gives Accelerate's plugin 1 step on
    purpose (it accumulates itself) and fills the DeepSpeed config's "auto" with the recipe's N; at `prepare` accelerate
    sees 1 ≠ N, warns, and uses N: the run accumulates exactly as the recipe says (tests/test_launch.py checks ZeRO-2
    against a plain run). A mismatch with the recipe is refused before this (checks.check_distributed_environment);
    any other value still warns."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.expected = f"GradientAccumulationPlugin has 1, DeepSpeed config has {steps}. Using DeepSpeed's value."

    def filter(self, record: logging.LogRecord) -> bool:
        return self.expected not in record.getMessage()


@contextlib.contextmanager
def _expected_accumulation_warning_dropped(steps: int):
    source = logging.getLogger("accelerate.accelerator")  # accelerate.Accelerator._prepare_deepspeed logs it
    dropped = _ExpectedAccumulationWarning(steps)
    source.addFilter(dropped)
    try:
        yield
    finally:
        source.removeFilter(dropped)


class TrainingInterrupted(BaseException):
    """Raised by the Ctrl-C handler to abandon the step in progress (a BaseException: no `except Exception` in TRL,
    transformers or a reward function swallows it)."""


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C saves the last completed step and stops; a second Ctrl-C stops without saving.

    `accelerate launch` with DeepSpeed runs the worker under torch's elastic agent, which forwards Ctrl-C to it as
    SIGINT and SIGKILLs it TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds later (default 30); a second Ctrl-C reaches the
    worker as SIGTERM. A GRPO step (mostly generation) can outlast that grace period, so in a single process the step
    in progress is abandoned at once: its work is lost, but parameters, optimizer and scheduler change only in the
    update at its end, so the state is exactly the last completed step's, RNG included (restored from the step's
    end). A Ctrl-C that lands in the update (engine or optimizer step, up to the next step's start) lets it finish
    first. With several processes no rank abandons a step (its peers could be waiting in a collective): the ranks
    agree at each step's end and all stop after the same step.
    """

    def __init__(self, trainer, resumed_from: str | None = None) -> None:
        self.trainer = trainer
        self.requested = False
        self.last_checkpoint = resumed_from  # the latest complete checkpoint: the resumed one, then this run's
        self._checkpoint_step: int | None = None
        # (global_step, RNG states, TrainerState.stateful_callbacks) at the last step's end: an abandoned step may
        # have drawn RNG and advanced dynamic sampling's refill position
        self._completed: tuple[int, dict, dict] | None = None
        self._in_update = False
        self._single = trainer.accelerator.num_processes == 1

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_sigint(self, signum, frame) -> None:
        self.requested = True
        # the next one (SIGINT, or the SIGTERM the elastic agent sends on a second Ctrl-C) stops without saving
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        done = self.completed_step
        abort = self._single and not self._in_update
        if abort:
            what = ("no step is complete yet: nothing to save" if done is None
                    else f"step {done} is saved already" if done == self._checkpoint_step else f"saving step {done}")
            message = f"Ctrl-C: abandoning the step in progress, {what}"
        else:
            message = "Ctrl-C: saving at the end of this step"
        # os.write: a print here could land inside another print on this thread (reentrant write)
        os.write(sys.stderr.fileno(), f"\n{message} (Ctrl-C again: stop without saving).\n".encode())
        if abort:
            raise TrainingInterrupted

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step:  # resumed: the checkpoint train() loaded holds this step
            self._checkpoint_step = state.global_step
        engine = getattr(self.trainer.accelerator, "deepspeed_engine_wrapped", None)
        if engine is not None:  # DeepSpeed's update runs inside accelerator.backward, before any callback event
            engine.engine.step = self._guarded(engine.engine.step)

    def _guarded(self, step):
        def guarded_step(*a, **kw):
            self._in_update = True
            return step(*a, **kw)
        return guarded_step

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self._in_update = True

    def on_step_begin(self, args, state, control, **kwargs):
        self._in_update = False
        if self.requested and self._single:  # Ctrl-C came after the last step's end, during its logging or save
            raise TrainingInterrupted

    def on_step_end(self, args, state, control, **kwargs):
        self._completed = (state.global_step, _rng_states(), copy.deepcopy(state.stateful_callbacks))
        if not self._single:
            import torch

            flag = torch.tensor(float(self.requested), device=self.trainer.accelerator.device)
            self.requested = self.trainer.accelerator.reduce(flag, reduction="sum").item() > 0
        if self.requested:
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self._checkpoint_step = state.global_step
        self.last_checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")

    @property
    def completed_step(self) -> int | None:
        """The last step completed in this run, or the resumed one."""
        return self._completed[0] if self._completed else self._checkpoint_step

    def save(self) -> bool:
        """Save the last completed step unless it already is the latest checkpoint; whether one was written."""
        if self._completed is None or self._completed[0] != self.trainer.state.global_step:
            return False  # no step completed in this run: nothing new to save (the resumed checkpoint stays)
        step, rng, stateful = self._completed
        if self._checkpoint_step == step:
            return False
        # as at the step's end: a resumed run then continues exactly like an uninterrupted one
        _set_rng_states(rng)
        self.trainer.state.stateful_callbacks = copy.deepcopy(stateful)
        self.trainer._save_checkpoint(self.trainer.model_wrapped, trial=None)
        self.on_save(self.trainer.args, self.trainer.state, self.trainer.control)
        return True


def _rng_states() -> dict:
    import random

    import numpy as np
    import torch

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.random.set_rng_state_all(states["cuda"])


_STAGING_DIR = ".checkpoint-staging"  # not `checkpoint-*`: get_last_checkpoint and rotation never see it


class _CLITrainer(GSM8KGRPOTrainer):
    """Writes each checkpoint under a hidden name and renames it into place once complete: a save cut short (a
    second Ctrl-C, the launcher's SIGKILL, a crash) never leaves `get_last_checkpoint` on a half-written directory."""

    _staging: str | None = None

    def _get_output_dir(self, trial):
        return self._staging or super()._get_output_dir(trial)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if state_dict is not None:  # DeepSpeed's gathered copy: its tied lm_head would be written twice
            state_dict = realias_tied_weights(self.accelerator.unwrap_model(self.model), state_dict)
        super()._save(output_dir, state_dict)

    def _save_checkpoint(self, model, trial) -> None:
        import shutil

        from transformers.trainer import TRAINER_STATE_NAME
        from transformers.trainer_utils import rotate_checkpoints

        run_dir = super()._get_output_dir(trial)
        staging = os.path.join(run_dir, _STAGING_DIR)
        name = f"checkpoint-{self.state.global_step}"
        local_main = self.accelerator.is_local_main_process
        if local_main:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        self.accelerator.wait_for_everyone()
        self._staging = staging
        try:
            super()._save_checkpoint(model, trial)
        except BaseException:
            if local_main:
                shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            self._staging = None
        if self.state.best_global_step:  # transformers looked for the best checkpoint in the staging directory
            best = os.path.join(run_dir, f"checkpoint-{self.state.best_global_step}")
            if self.state.best_global_step == self.state.global_step or os.path.isdir(best):
                self.state.best_model_checkpoint = best
                if self.args.should_save:
                    self.state.save_to_json(os.path.join(staging, name, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every rank's shards are written
        final = os.path.join(run_dir, name)
        if local_main and os.path.isdir(os.path.join(staging, name)):
            if os.path.isdir(final):  # an older run's checkpoint of the same step: replaced, never merged
                os.rename(final, os.path.join(staging, "replaced"))
            os.rename(os.path.join(staging, name), final)
            shutil.rmtree(staging, ignore_errors=True)
        if self.args.should_save:
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint)
        self.accelerator.wait_for_everyone()


def _exit_interrupted(trainer, stop: StopOnInterrupt, saved: bool) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = trainer.args.output_dir
    last = stop.last_checkpoint or (get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None)
    step = stop.completed_step
    head = f"Interrupted after step {step} of {trainer.state.max_steps}" if step else "Interrupted before any step"
    if saved:
        head += f": saved {last}."
    elif last:
        head += f": the last complete checkpoint is {last}."
    else:
        head += ": no checkpoint was written (save_steps decides how often)."
    lines = [head]
    if last:
        lines += ["Resume with:", "  " + _resume_command(last)]
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:
        lines.append("(the launcher's SignalException traceback below is expected)")
    trainer.accelerator.print("\n" + "\n".join(lines), flush=True)
    raise SystemExit(130)


def _resume_command(checkpoint: str) -> str:
    """The command line that started this run, with `--resume_from_checkpoint CHECKPOINT`."""
    import shlex

    argv = None
    if os.environ.get("TORCHELASTIC_RUN_ID") is not None:  # under a launcher, our parent holds the user's command
        try:
            with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                argv = [a.decode() for a in f.read().split(b"\0") if a]
        except OSError:
            argv = None
        if argv and "trl_gsm8k.train" not in argv:
            argv = None
        if argv and len(argv) > 1 and os.path.basename(argv[1]) in ("accelerate", "torchrun"):
            argv = [os.path.basename(argv[1]), *argv[2:]]  # the console script, not `python .../bin/accelerate`
    if argv is None:
        argv = ["python", "-m", "trl_gsm8k.train", *sys.argv[1:]]
    elif os.path.basename(argv[0]).startswith("python"):
        argv = ["python", *argv[1:]]
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume_from_checkpoint":
            skip = True
        elif not arg.startswith("--resume_from_checkpoint="):
            kept.append(arg)
    return shlex.join([*kept, "--resume_from_checkpoint", checkpoint])


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
    info["precision"] = _precision_info(trainer)
    if doctor is not None:
        info["diagnoses"] = doctor.diagnoses
    with open(os.path.join(output_dir, "run_info.json"), "w") as f:
        json.dump(info, f, indent=2)


def _precision_info(trainer) -> dict:
    """The precision the run really computed in: the recipe's bf16, how it was applied (DeepSpeed's bf16 engine or
    Accelerate's autocast), the dtype of the module's trainable weights and of the weights the optimizer updates."""
    from .precision import cpu_name, native_cpu_bf16

    engine, args = trainer.model_wrapped, trainer.args
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    info = {"bf16": bool(args.bf16), "fp16": bool(args.fp16),
            "module_dtype": str(trainable[0].dtype).replace("torch.", "") if trainable else None}
    if hasattr(engine, "bfloat16_enabled"):  # DeepSpeed: its optimizer keeps fp32 partitions of the weights
        info["applied_by"] = "deepspeed" if engine.bfloat16_enabled() or engine.fp16_enabled() else None
        groups = getattr(engine.optimizer, "single_partition_of_fp32_groups", None)
        master = groups[0].dtype if groups else None
    else:
        info["applied_by"] = "autocast" if trainer.accelerator.native_amp else None
        master = trainable[0].dtype if trainable else None  # torch's optimizer updates the module's weights
    info["master_weights_dtype"] = str(master).replace("torch.", "") if master is not None else None
    if trainer.args.device.type == "cpu":
        info["cpu"] = cpu_name()
        info["cpu_native_bf16"] = native_cpu_bf16()
    return info


def _write_curves(output_dir: str) -> None:
    from pathlib import Path

    from .plot import plot_training

    try:
        plot_training(Path(output_dir))
    except Exception as exc:  # a picture must never cost the trained model
        logger.warning("Could not draw the training curves: %s", exc)


def _summary(output_dir: str, use_peft: bool, doctor: Doctor | None = None, recipe: str | None = None) -> str:
    weights = "adapter_model.safetensors (the LoRA adapter; merge it with python -m trl_gsm8k.export)" if use_peft \
        else "model.safetensors (the trained model)"
    lines = [
        f"\nDone. Outputs in {os.path.abspath(output_dir)}:",
        f"  {weights}, with its config and tokenizer",
        "  trainer_state.json   metrics of every logging step (reward, accuracy, advantage, entropy, ...)",
        "  train_results.json   run totals (runtime, steps/s)",
    ]
    if os.path.isfile(os.path.join(output_dir, "run_info.json")):
        lines.append("  run_info.json        how the run was launched (processes, DeepSpeed stage, offload, precision)"
                     " and the doctor's diagnoses")
    if os.path.isfile(os.path.join(output_dir, "training_curves.png")):
        lines.append("  training_curves.png  the reward and each of its terms, declared answers, truncation, step time "
                     "and every other metric that moved (flat ones named with their value)")
    # With the recipe, the evaluator prompts as training did (its system_prompt) within its max_completion_length.
    same_prompt = f" --recipe {recipe}" if recipe else ""
    lines.append(f"Evaluate it: python -m trl_gsm8k.evaluate --model {output_dir}{same_prompt} --limit 200")
    if doctor is not None:
        lines += doctor.summary_lines()
    return "\n".join(lines)


def recipe_of(argv: list[str] | None) -> str | None:
    """The ``--config`` file of a command line (TrlParser's flag), or None.

    >>> recipe_of(["--config", "recipes/a.yaml", "--max_steps", "2"]), recipe_of(["--config=b.yaml"]), recipe_of([])
    ('recipes/a.yaml', 'b.yaml', None)
    """
    argv = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


_CLI_ERRORS = (LaunchError, FileNotFoundError)  # printed as one `error:` line; anything else is a bug: a traceback


def _run(argv: list[str] | None) -> str:
    return main(*parse(argv), recipe=recipe_of(argv))


def cli(argv: list[str] | None = None) -> None:
    try:
        recorded(_run, _CLI_ERRORS)(argv)  # under `accelerate launch`, the launcher's root cause is this line too
    except _CLI_ERRORS as exc:
        raise SystemExit(error_line(exc)) from None


if __name__ == "__main__":
    cli(sys.argv[1:])
