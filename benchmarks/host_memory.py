"""Host memory of the README's ZeRO-2 offload command, measured against the planner (benchmarks/memory.md).

    python benchmarks/host_memory.py [--steps 2] [--completion 16]     # ~7 minutes on 2 cores, not in the tests
    python benchmarks/host_memory.py --deepspeed-only                   # ~1 minute: DeepSpeed's offload buffers alone
    python benchmarks/host_memory.py --demo 4                           # `make demo`'s command, 4 steps: summed RSS

Runs `accelerate launch --config_file accelerate_configs/zero2_offload.yaml -m trl_gsm8k.train --config
recipes/smollm2-135m_cpu_demo.yaml` (the real SmolLM2-135M, fp32, DeepSpeed ZeRO-2 with the optimizer offloaded to
CPU) twice: as shipped (gradient_accumulation_steps 1) and with accumulation 2, short completions, a checkpoint at
every step. It polls the peak RSS (VmHWM) of every process the launcher starts and prints the largest next to
`trl_gsm8k.memory.estimate(..., device="cpu")`'s host memory of one process (the CPU plan: device peak + host terms).

`--deepspeed-only` isolates what DeepSpeed's optimizer offload adds: a SmolLM2-shaped model (random weights, fp32)
through `deepspeed.initialize` with zero2_offload.json's settings, RSS before, after initialize and after one
optimizer step of 1 or 2 micro-batches, against the planner's offload terms for the same model.

`--demo STEPS` runs `make demo`'s command as shipped, with `--max_steps STEPS --save_steps STEPS/2` (two checkpoints,
as the demo's 12 steps with save_steps 6 write) and `--output_dir /tmp/demo_rss`, samples the RSS (and PSS) of every
process of the tree every 0.5 s, and prints the peak of their sum, each process's own peak, and the planner's CPU plan
(`python -m trl_gsm8k.memory --config recipes/smollm2-135m_cpu_demo.yaml`, no --gpu-gb) beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECIPE = "recipes/smollm2-135m_cpu_demo.yaml"
LAUNCHER = "accelerate_configs/zero2_offload.yaml"
GIB = 2**30


def peak_rss(cmd: list[str], env: dict) -> tuple[float, int, str]:
    """Largest VmHWM (GB) of the launched processes, the exit code and the output's tail."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    peaks: dict[int, int] = {}
    launcher = psutil.Process(proc.pid)
    while proc.poll() is None:
        for p in [launcher, *launcher.children(recursive=True)]:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
                peaks[p.pid] = max(peaks.get(p.pid, 0), hwm * 1024)
            except (OSError, StopIteration, psutil.Error):
                pass
        time.sleep(0.1)
    log.seek(0)
    return max(peaks.values()) / GIB, proc.returncode, log.read()[-3000:]


def _kb(path: str, key: str) -> int:
    with open(path) as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024


def tree_peak(cmd: list[str], env: dict, log_path: str, interval: float = 0.5) -> dict:
    """Runs `cmd`; every `interval` s sums the RSS and PSS of it and all its descendants. Returns the peak sums (GB),
    each process's peak RSS by command line, the exit code and the wall time."""
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak_rss = peak_pss = 0
        at = 0.0
        per_process: dict[int, tuple[int, str]] = {}
        while proc.poll() is None:
            rss = pss = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    r = _kb(f"/proc/{p.pid}/status", "VmRSS")
                    s = _kb(f"/proc/{p.pid}/smaps_rollup", "Pss:")
                    name = " ".join(p.cmdline())[:160]
                except (OSError, StopIteration, psutil.Error):
                    continue
                rss, pss = rss + r, pss + s
                per_process[p.pid] = (max(per_process.get(p.pid, (0, ""))[0], r), name)
            if rss > peak_rss:
                peak_rss, at = rss, time.time() - start
            peak_pss = max(peak_pss, pss)
            time.sleep(interval)
    return {"peak_rss_sum_gb": peak_rss / GIB, "peak_pss_sum_gb": peak_pss / GIB, "peak_at_s": round(at, 1),
            "wall_s": round(time.time() - start, 1), "returncode": proc.returncode,
            "per_process_peak_rss_gb": {f"{pid} {name}": round(r / GIB, 3) for pid, (r, name) in per_process.items()
                                        if r > 50 * 2**20}}


def demo(steps: int) -> None:
    import json

    out = "/tmp/demo_rss"
    overrides = ["--max_steps", str(steps), "--save_steps", str(max(1, steps // 2)), "--output_dir", out]
    cmd = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", LAUNCHER, "-m",
           "trl_gsm8k.train", "--config", RECIPE, *overrides]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = tree_peak(cmd, env, "/tmp/demo_rss.log")
    result["command"] = " ".join(["accelerate", *cmd[1:]])
    print("RESULT", json.dumps(result, indent=1))
    plan = subprocess.run([sys.executable, "-m", "trl_gsm8k.memory", "--config", RECIPE, *overrides], cwd=ROOT,
                          capture_output=True, text=True)
    print(plan.stdout, plan.stderr)


def planned(overrides: list[str]):
    from trl_gsm8k import memory
    from trl_gsm8k.config import read_recipe

    _, training_args, model_args, mixed = read_recipe(RECIPE, overrides)
    config, _ = memory.load_model_config(model_args.model_name_or_path)
    shape = memory.ModelShape.from_config(config)
    run = memory.settings_from_args(training_args, model_args, config, mixed, device="cpu")
    zero, processes = memory.read_accelerate_config(LAUNCHER)
    return memory.estimate(shape, run, zero, 64.0, processes, device="cpu")


def _rss() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) * 1024 / GIB


def deepspeed_offload_child(accumulation: int) -> None:
    """Runs in a fresh process: prints JSON with the RSS growth at deepspeed.initialize and after one step."""
    import json

    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    import deepspeed
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = json.loads((ROOT / "trl_gsm8k/resources/model_configs/smollm2-135m-instruct.json").read_text())
    skip = ("architectures", "transformers_version")
    config = AutoConfig.for_model(**{k: v for k, v in cfg.items() if k not in skip})
    model = AutoModelForCausalLM.from_config(config)
    ds = json.loads((ROOT / "accelerate_configs/deepspeed/zero2_offload.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=accumulation, gradient_clipping=1.0,
              train_batch_size=accumulation, optimizer={"type": "AdamW", "params": {"lr": 1e-5}})
    del ds["bf16"], ds["fp16"]  # fp32 on a CPU
    before = _rss()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    init = _rss() - before
    ids = torch.randint(0, 1000, (1, 32))
    for _ in range(accumulation):
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    print("RESULT", json.dumps({"init": init, "step": _rss() - before}))


def deepspeed_only() -> None:
    import json

    from trl_gsm8k import memory

    config, _ = memory.load_model_config("smollm2-135m-instruct")
    shape = memory.ModelShape.from_config(config)
    zero, _ = memory.read_accelerate_config(LAUNCHER)
    print("| accumulation | RSS growth at initialize | after one step | planner: offload terms + DeepSpeed buffers "
          "+ gradients | error (after the step) |")
    print("|---|---|---|---|---|")
    for accumulation in (1, 2):
        out = subprocess.run([sys.executable, __file__, "--child", str(accumulation)], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
        got = json.loads(out.split("RESULT ", 1)[1])
        run = memory.RunSettings(dtype_bytes=4, mixed_precision=False, use_peft=False, micro_batch=1,
                                 gradient_accumulation=accumulation, activation_checkpointing=False)
        est = memory.estimate(shape, run, zero, 64.0, 1, device="cpu")
        planned = sum(est.cpu.values()) - est.cpu["overhead"] + est.zero_buffers + est.gradients
        terms = ", ".join(f"{k} {v:.2f}" for k, v in est.cpu.items() if k != "overhead")
        print(f"| {accumulation} | {got['init']:.2f} GB | {got['step']:.2f} GB | {planned:.2f} GB ({terms}; "
              f"buffers {est.zero_buffers:.2f}, gradients {est.gradients:.2f}) | "
              f"{100 * (planned - got['step']) / got['step']:+.0f} % |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--completion", type=int, default=16)
    parser.add_argument("--deepspeed-only", action="store_true")
    parser.add_argument("--demo", type=int, metavar="STEPS", help="make demo's command, STEPS steps: summed RSS")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.demo:
        return demo(a.demo)
    if a.child:
        return deepspeed_offload_child(a.child)
    if a.deepspeed_only:
        return deepspeed_only()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    rows = []
    for accumulation, micro in ((1, 8), (2, 4)):
        out = tempfile.mkdtemp(prefix="host_memory_")
        overrides = ["--max_steps", str(a.steps), "--max_completion_length", str(a.completion),
                     "--gradient_accumulation_steps", str(accumulation), "--per_device_train_batch_size", str(micro),
                     "--save_steps", "1", "--output_dir", out]
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", LAUNCHER, "-m", "trl_gsm8k.train",
               "--config", RECIPE, *overrides]
        measured, code, tail = peak_rss(cmd, env)
        if code != 0:
            sys.exit(f"the run failed ({code}):\n{tail}")
        est = planned(overrides)
        predicted = est.host_per_process  # one process: its device peak + its host terms
        rows.append((accumulation, micro, measured, predicted, est))
    print("| accumulation | micro-batch | measured peak RSS | planner (device peak + host) | error | host terms |")
    print("|---|---|---|---|---|---|")
    for accumulation, micro, measured, predicted, est in rows:
        terms = ", ".join(f"{k} {v:.2f}" for k, v in est.cpu.items())
        print(f"| {accumulation} | {micro} | {measured:.2f} GB | {est.peak:.2f} + {predicted - est.peak:.2f} = "
              f"{predicted:.2f} GB | {100 * (predicted - measured) / measured:+.0f} % | {terms} |")


if __name__ == "__main__":
    main()
