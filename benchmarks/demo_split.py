"""The CPU demo (or any recipe) with each optimizer step's time split: generation, rewards, the rest of scoring, the
loss forward, backward, optimizer, other. Same arguments as `python -m trl_gsm8k.train`:

    accelerate launch --config_file accelerate_configs/zero2_offload.yaml benchmarks/demo_split.py \\
        --config recipes/smollm2-135m_cpu_demo.yaml --bf16 true --output_dir /tmp/demo_bf16

and, for benchmarks/demo.md, the two runs side by side (per-step format reward and loss, the steady-state split):

    python benchmarks/demo_split.py --table /tmp/demo_fp32 /tmp/demo_bf16

It trains exactly as `trl_gsm8k.train` does (nothing in the package changes) and writes `step_split.json` into the
output directory: per optimizer step, the seconds in each part, the completions and completion tokens generated;
then the steady state (steps after the first) in seconds per completion. It times TRL's own profiled blocks
(`transformers.generate`, `_calculate_rewards`, `_prepare_inputs`, `compute_loss`) and DeepSpeed's `backward` and
`step` (without DeepSpeed: `accelerator.backward` and the optimizer's `step`). "other" is the step's wall time less
those: the data loader, logging, callbacks and checkpoint saves.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections import defaultdict

from transformers import TrainerCallback
from trl.extras import profiling

import trl_gsm8k.train as train
from trl_gsm8k.precision import cpu_name, native_cpu_bf16

_current: dict[str, float] = defaultdict(float)  # seconds per part in the optimizer step under way
PROFILED = {"transformers.generate": "generate", "transformers.generate_batch": "generate",
            "_calculate_rewards": "rewards", "_prepare_inputs": "prepare", "compute_loss": "loss_forward"}

_log_metrics = profiling.ProfilingContext._log_metrics


def _record(self, duration: float) -> None:
    part = PROFILED.get(self.name.split(".", 1)[1] if "." in self.name else self.name)
    if part is not None:
        _current[part] += duration
    _log_metrics(self, duration)


profiling.ProfilingContext._log_metrics = _record


def _timed(part: str, fn):
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _current[part] += time.perf_counter() - start
    return timed


class StepSplit(TrainerCallback):
    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.steps: list[dict] = []
        self._start = None
        self._load = os.getloadavg()

    def on_train_begin(self, args, state, control, **kwargs):
        engine = getattr(self.trainer.accelerator, "deepspeed_engine_wrapped", None)
        if engine is not None:
            engine.engine.backward = _timed("backward", engine.engine.backward)
            engine.engine.step = _timed("optimizer", engine.engine.step)
        else:
            self.trainer.accelerator.backward = _timed("backward", self.trainer.accelerator.backward)
            optimizer = self.trainer.optimizer
            optimizer.step = _timed("optimizer", optimizer.step)
        _current.clear()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        parts = dict(_current)
        _current.clear()
        record = {"step": state.global_step, "wall_s": now - self._start,
                  **{k: parts.get(k, 0.0) for k in ("generate", "rewards", "prepare", "loss_forward", "backward",
                                                     "optimizer")}}
        record["scoring_other"] = record["prepare"] - record["generate"] - record["rewards"]
        record["other"] = record["wall_s"] - record["prepare"] - record["loss_forward"] - record["backward"] - record["optimizer"]
        self.steps.append(record)
        self._start = now

    def on_train_end(self, args, state, control, **kwargs):
        if not self.trainer.accelerator.is_main_process:
            return
        completions = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        lengths = {h["step"]: h.get("completions/mean_length") for h in state.log_history if "loss" in h}
        for record in self.steps:
            record["completions"] = completions
            mean_length = lengths.get(record["step"])
            record["completion_tokens"] = None if mean_length is None else mean_length * completions
            record["s_per_completion"] = record["wall_s"] / completions
        steady = self.steps[1:]
        summary = {}
        if steady:
            for key in ("wall_s", "generate", "rewards", "scoring_other", "loss_forward", "backward", "optimizer",
                        "other", "s_per_completion"):
                summary[key] = statistics.mean(r[key] for r in steady)
            tokens = [r["completion_tokens"] for r in steady if r["completion_tokens"] is not None]
            gen = sum(r["generate"] for r in steady if r["completion_tokens"] is not None)
            summary["generated_tokens_per_s"] = sum(tokens) / gen if tokens and gen else None
        info = {"cpu": cpu_name(), "cpu_native_bf16": native_cpu_bf16(), "cpu_count": os.cpu_count(),
                "bf16": bool(args.bf16), "load_avg_at_start": self._load, "load_avg_at_end": os.getloadavg(),
                "command": sys.argv, "steps": self.steps, "steady_state_mean": summary}
        with open(os.path.join(args.output_dir, "step_split.json"), "w") as f:
            json.dump(info, f, indent=2)
        if summary:
            line = ", ".join(f"{k} {v:.2f}" for k, v in summary.items() if v is not None)
            print(f"\nSteady state (steps 2-{self.steps[-1]['step']}, bf16={bool(args.bf16)}): {line}", file=sys.stderr)


_build_trainer = train.build_trainer


def _build_and_time(*args, **kwargs):
    trainer = _build_trainer(*args, **kwargs)
    trainer.add_callback(StepSplit(trainer))
    return trainer


train.build_trainer = _build_and_time

PARTS = ("generate", "rewards", "scoring_other", "loss_forward", "backward", "optimizer", "other")


def table(run_dirs: list[str]) -> str:
    """Markdown for benchmarks/demo.md: the runs' CPU and load, steady-state split, per-step format reward and loss."""
    runs = []
    for run_dir in run_dirs:
        split = json.load(open(os.path.join(run_dir, "step_split.json")))
        state = json.load(open(os.path.join(run_dir, "trainer_state.json")))
        logs = [h for h in state["log_history"] if "loss" in h]
        runs.append((run_dir, split, logs))
    lines = []
    for run_dir, split, _ in runs:
        lines.append(f"- `{run_dir}`: bf16={split['bf16']}, CPU {split['cpu']} (native bf16: {split['cpu_native_bf16']}), "
                     f"{split['cpu_count']} cores, load average {split['load_avg_at_start'][0]:.2f} at start, "
                     f"{split['load_avg_at_end'][0]:.2f} at end")
    lines += ["", "| steady state (steps after the first), s | " + " | ".join(d for d, _, _ in runs) + " |",
              "|---|" + "---:|" * len(runs)]
    for key in ("s_per_completion", "wall_s", *PARTS, "generated_tokens_per_s"):
        values = [split["steady_state_mean"].get(key) for _, split, _ in runs]
        lines.append(f"| {key} | " + " | ".join("" if v is None else f"{v:.2f}" for v in values) + " |")
    if len(runs) == 2:
        a, b = (split["steady_state_mean"].get("s_per_completion") for _, split, _ in runs)
        if a and b:
            lines.append(f"| ratio (first / second) | {a / b:.2f}× | |")
    steps = sorted({h["step"] for _, _, logs in runs for h in logs})
    for key in ("rewards/format_reward/mean", "loss", "completions/mean_length"):
        lines += ["", f"| {key} | " + " | ".join(str(s) for s in steps) + " |", "|---|" + "---|" * len(steps)]
        for run_dir, _, logs in runs:
            by_step = {h["step"]: h.get(key) for h in logs}
            lines.append(f"| {os.path.basename(run_dir.rstrip('/'))} | " + " | ".join(
                "" if by_step.get(s) is None else f"{by_step[s]:.3g}" for s in steps) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--table"]:
        print(table(sys.argv[2:]))
    else:
        train.cli(sys.argv[1:])
