"""Benchmark GSM8KGRPOTrainer: step-time overhead vs plain GRPOTrainer, and peak RSS with beta 0 vs beta 0.04.

    python benchmarks/trainer.py            # writes benchmarks/trainer.md

1. Overhead: the same tiny random Llama (SmolLM2 tokenizer), seed and data, plain `GRPOTrainer` and
   `GSM8KGRPOTrainer` run alternately (interleaved, several repeats); per-optimizer-step wall time from a callback,
   the first step of each run dropped as warm-up; medians and their ratio.
2. Memory: a full fine-tune of the real SmolLM2-135M-Instruct (fp32, AdamW) for a few short steps, once with
   `beta: 0` (no reference model) and once with `beta: 0.04` (TRL loads a frozen copy), each in its own child
   process; peak RSS is the child's `ru_maxrss` from `os.wait4`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

G = 4


def questions(n: int) -> list[str]:
    with gzip.open(ROOT / "trl_gsm8k" / "resources" / "gsm8k" / "train.jsonl.gz", "rt") as f:
        return [json.loads(next(f))["question"] for _ in range(n)]


def dataset(n: int):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [[{"role": "user", "content": q}] for q in questions(n)]})


def length_reward(completions, **kwargs):
    return [len(c[0]["content"]) % 5 / 4 for c in completions]


def correctness_reward(completions, **kwargs):  # named like trl_gsm8k.rewards' so the accuracy metric is exercised
    return [1.0 if "5" in c[0]["content"] else 0.0 for c in completions]


def tiny_model(path: Path) -> str:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tests" / "assets" / "tokenizer")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def step_times(kind: str, model_dir: str, steps: int, out: str) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds per optimizer step, first step dropped as warm-up."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], (0.0, 0.0)

        def on_step_begin(self, *args, **kwargs):
            self.t0 = (time.perf_counter(), time.process_time())

        def on_step_end(self, *args, **kwargs):
            self.times.append((time.perf_counter() - self.t0[0], time.process_time() - self.t0[1]))

    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if kind == "plain" else (GSM8KGRPOConfig, GSM8KGRPOTrainer)
    args = config_cls(
        output_dir=out, bf16=False, use_cpu=True, report_to="none", max_completion_length=16, num_generations=G,
        per_device_train_batch_size=2 * G, max_steps=steps, logging_steps=1, save_strategy="no", seed=0,
        disable_tqdm=True, learning_rate=1e-4,
    )
    timer = Timer()
    trainer = trainer_cls(model=model_dir, reward_funcs=[length_reward, correctness_reward], args=args,
                          train_dataset=dataset(32), callbacks=[timer])
    trainer.train()
    return timer.times[1:]


def own_code_cpu(model_dir: str, steps: int, out: str) -> float:
    """CPU seconds per step spent in GSM8KGRPOTrainer's own code: each override's time minus that of the TRL
    method it wraps (``_generate_and_score_completions``, ``_compute_loss``)."""
    from trl import GRPOTrainer

    from trl_gsm8k.trainer import GSM8KGRPOTrainer

    spent = {"outer": 0.0, "inner": 0.0}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] += time.process_time() - t0
        return wrapper

    names = ("_generate_and_score_completions", "_compute_loss")
    saved = [(cls, n, cls.__dict__[n]) for cls in (GRPOTrainer, GSM8KGRPOTrainer) for n in names]
    try:
        for cls, name, fn in saved:
            setattr(cls, name, timed(fn, "inner" if cls is GRPOTrainer else "outer"))
        step_times("ours", model_dir, steps, out)
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
    return (spent["outer"] - spent["inner"]) / steps


def overhead(repeats: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)  # one thread: CPU time is then meaningful (no OpenMP spinning) and less load-sensitive
    wall, cpu, paired = {"plain": [], "ours": []}, {"plain": [], "ours": []}, []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = tiny_model(Path(tmp) / "tiny")
        for r in range(repeats):
            run_median = {}
            for kind in ("plain", "ours") if r % 2 == 0 else ("ours", "plain"):
                times = step_times(kind, model_dir, steps, str(Path(tmp) / kind))
                wall[kind] += [w for w, _ in times]
                cpu[kind] += [c for _, c in times]
                run_median[kind] = statistics.median(w for w, _ in times)
            paired.append(run_median["ours"] / run_median["plain"])
        own = own_code_cpu(model_dir, steps, str(Path(tmp) / "own"))
    wall_med = {k: statistics.median(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    return {
        "wall": wall_med, "cpu": cpu_med, "n_steps": {k: len(v) for k, v in wall.items()},
        "ratio": wall_med["ours"] / wall_med["plain"], "cpu_ratio": cpu_med["ours"] / cpu_med["plain"],
        "paired_ratio": statistics.median(paired), "paired": paired, "own_cpu": own,
    }


def rss_child(beta: float) -> None:
    from trl_gsm8k.models import resolve_model_path
    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        args = GSM8KGRPOConfig(
            output_dir=tmp, bf16=False, use_cpu=True, report_to="none", max_completion_length=16, num_generations=2,
            per_device_train_batch_size=2, max_steps=2, save_strategy="no", seed=0, beta=beta, disable_tqdm=True,
        )
        trainer = GSM8KGRPOTrainer(model=resolve_model_path("smollm2-135m-instruct"), reward_funcs=[length_reward],
                                   args=args, train_dataset=dataset(4))
        ref_bytes = sum(p.numel() * p.element_size() for p in trainer.ref_model.parameters()) if trainer.ref_model else 0
        trainer.train()
        print("RESULT " + json.dumps({"ref_bytes": ref_bytes}), flush=True)


def peak_rss(beta: float) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--rss-child", str(beta)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"beta={beta} child failed ({proc.returncode}): {stdout[-2000:]}")
    result = json.loads(next(l for l in stdout.splitlines() if l.startswith("RESULT "))[7:])
    return {**result, "peak_gib": usage.ru_maxrss / 1024**2}  # Linux: KiB -> GiB


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) / 1024**2 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0.0)
    import torch
    import transformers
    import trl

    return (f"{cpu}, {os.cpu_count()} CPU cores, {mem:.1f} GiB RAM, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rss-child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "trainer.md"))
    a = parser.parse_args()
    if a.rss_child is not None:
        return rss_child(a.rss_child)

    from trl_gsm8k.models import resolve_model_path

    resolve_model_path("smollm2-135m-instruct")  # convert once, outside the measured children
    t0, load_before = time.time(), os.getloadavg()
    ov = overhead(a.repeats, a.steps)
    load_after_overhead = os.getloadavg()
    rss = {beta: peak_rss(beta) for beta in (0.0, 0.04)}
    saved = rss[0.04]["peak_gib"] - rss[0.0]["peak_gib"]
    command = "python benchmarks/trainer.py" + ("" if (a.repeats, a.steps) == (8, 5) else f" --repeats {a.repeats} --steps {a.steps}")
    md = f"""# GSM8KGRPOTrainer benchmark

Command: `{command}` (total {time.time() - t0:.0f} s)

Machine: {machine()}

## Step-time overhead vs plain `GRPOTrainer`

Same tiny random Llama (2 layers, hidden 64, SmolLM2 tokenizer, vocab 49,152), seed 0, same 32 GSM8K prompts,
{G} generations × 2 prompts per step, 16-token completions, two reward functions. The two trainers run alternately,
{a.repeats} repeats × {a.steps} steps each; the first step of every run is dropped (warm-up). Per-step time = wall time
from `on_step_begin` to `on_step_end` (generation, rewards, advantages, loss, backward, optimizer).

| trainer | steps timed | median wall s/step | median CPU s/step |
|---|---:|---:|---:|
| `GRPOTrainer` (TRL {__import__('trl').__version__}) | {ov['n_steps']['plain']} | {ov['wall']['plain']:.4f} | {ov['cpu']['plain']:.4f} |
| `GSM8KGRPOTrainer` | {ov['n_steps']['ours']} | {ov['wall']['ours']:.4f} | {ov['cpu']['ours']:.4f} |

Ratio of median wall times (ours / plain): **{ov['ratio']:.3f}** (goal ≤ 1.03); median of the {a.repeats} per-repeat
paired ratios: {ov['paired_ratio']:.3f} ({', '.join(f'{x:.3f}' for x in ov['paired'])}); ratio of median CPU times:
{ov['cpu_ratio']:.3f}. torch runs with 1 thread here. The machine is shared: 1-minute load average
{load_before[0]:.2f} before and {load_after_overhead[0]:.2f} after this part (2 cores); wall times under load are noisy,
the CPU-time ratio much less so.

Direct measurement, insensitive to load: CPU time spent in `GSM8KGRPOTrainer`'s own code (each override minus the
TRL method it wraps) is **{ov['own_cpu'] * 1e3:.2f} ms per step**, {ov['own_cpu'] / ov['cpu']['ours'] * 100:.3f} % of a
step's CPU time.

## Peak RSS: reference-free (`beta: 0`) vs `beta: 0.04`

Full fine-tune (fp32, AdamW, no PEFT) of SmolLM2-135M-Instruct (134.5 M parameters, ≈ 0.54 GB of fp32 weights),
`GSM8KGRPOTrainer`, 2 steps of 2 prompts × 2 generations × 16 tokens; each run in its own child process,
peak RSS = the child's `ru_maxrss` (`os.wait4`).

| beta | reference model | peak RSS (GiB) |
|---:|---|---:|
| 0 | none (`ref_model is None`) | {rss[0.0]['peak_gib']:.3f} |
| 0.04 | frozen copy, {rss[0.04]['ref_bytes'] / 1e9:.3f} GB of parameters | {rss[0.04]['peak_gib']:.3f} |

Peak RSS saved by `beta: 0`: **{saved:.3f} GiB = {saved * 1024**3 / 1e9:.3f} GB** (the reference copy's weights:
{rss[0.04]['ref_bytes'] / 1e9:.3f} GB).
"""
    Path(a.out).write_text(md)
    print(md)


if __name__ == "__main__":
    main()
