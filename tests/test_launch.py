"""The design-card command end to end on a tiny model: accelerate launch + DeepSpeed ZeRO-2 offload, equivalence
with a plain single-process run, kill and resume."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# One optimizer step updates weights by ~lr (1e-3); ZeRO-2 offload vs plain must agree far below that.
WEIGHT_TOL = 1e-5


def write_recipe(path: Path, model_dir: Path, **overrides) -> Path:
    recipe = {
        "model_name_or_path": str(model_dir), "max_train_samples": 16, "num_generations": 2,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_completion_length": 8,
        "max_steps": 2, "bf16": False, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
        "logging_steps": 1, "report_to": "none", "save_steps": 1, "seed": 7, "activation_checkpointing": False,
        "reward_funcs": ["correctness", "launch_rewards.char_count_reward"],
    }
    recipe.update(overrides)
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


def run(cmd, **kwargs):
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launch")
    model_dir = build_tiny_model_dir(tmp / "model", seed=3)
    recipe = write_recipe(tmp / "recipe.yaml", model_dir)
    ds = run([
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", "accelerate_configs/zero2_offload.yaml",
        "-m", "trl_gsm8k.train", "--config", str(recipe), "--output_dir", str(tmp / "zero2"),
    ])
    assert ds.returncode == 0, ds.stderr[-4000:]
    plain = run([sys.executable, "-m", "trl_gsm8k.train", "--config", str(recipe), "--use_cpu", "true",
                 "--output_dir", str(tmp / "plain")])
    assert plain.returncode == 0, plain.stderr[-4000:]
    return {"tmp": tmp, "recipe": recipe, "zero2": tmp / "zero2", "plain": tmp / "plain", "ds_log": ds.stdout}


def log_history(run_dir: Path) -> list[dict]:
    return [h for h in json.loads((run_dir / "trainer_state.json").read_text())["log_history"] if "loss" in h]


def test_design_card_command_runs_zero2_with_cpu_offload(runs):
    info = json.loads((runs["zero2"] / "run_info.json").read_text())
    assert info["wrapped_model"] == "DeepSpeedEngine"
    assert info["zero_stage"] == 2 and info["zero_cpu_offload"] is True
    assert info["optimizer"] == "DeepSpeedCPUAdam"
    assert [h["step"] for h in log_history(runs["zero2"])] == [1, 2]
    assert (runs["zero2"] / "model.safetensors").is_file()
    assert "Done. Outputs in" in runs["ds_log"]


@pytest.mark.parametrize("checkpoint", ["checkpoint-1", "."])
def test_zero2_offload_trains_like_a_plain_run(runs, checkpoint):
    """Same seed, gradient accumulation 2: same loss and the same weights after each optimizer step."""
    ds_logs, plain_logs = log_history(runs["zero2"]), log_history(runs["plain"])
    for a, b in zip(ds_logs, plain_logs):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["reward"] == pytest.approx(b["reward"])
    assert any(h["reward_std"] > 0 for h in plain_logs), "no reward variance: the test would compare nothing"
    initial = load_file(runs["tmp"] / "model" / "model.safetensors")
    ds = load_file(runs["zero2"] / checkpoint / "model.safetensors")
    plain = load_file(runs["plain"] / checkpoint / "model.safetensors")
    moved = max((plain[k] - initial[k]).abs().max().item() for k in plain)
    assert moved > 1e-4, "the weights did not move: the comparison would be empty"
    worst = max((ds[k] - plain[k]).abs().max().item() for k in plain)
    assert worst < WEIGHT_TOL, f"ZeRO-2 offload and plain runs differ by {worst:.2e} (update size {moved:.2e})"


def test_killed_run_resumes_from_its_checkpoint(runs):
    """Kill a run once checkpoint-1 exists, resume it: it continues at step 2 and ends where the plain run ends."""
    out = runs["tmp"] / "killed"
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trl_gsm8k.train", "--config", str(runs["recipe"]), "--use_cpu", "true",
         "--output_dir", str(out), "--max_steps", "3"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 600
    while not (out / "checkpoint-1" / "trainer_state.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (out / "model.safetensors").is_file(), "the run finished before it was killed"

    resumed = run([sys.executable, "-m", "trl_gsm8k.train", "--config", str(runs["recipe"]), "--use_cpu", "true",
                   "--output_dir", str(out), "--resume_from_checkpoint", str(out / "checkpoint-1")])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    steps = [h["step"] for h in log_history(out)]
    assert steps == [1, 2], steps  # step 1 restored from the checkpoint's state, step 2 trained after resuming
    final, reference = load_file(out / "model.safetensors"), load_file(runs["plain"] / "model.safetensors")
    worst = max((final[k] - reference[k]).abs().max().item() for k in final)
    assert worst < WEIGHT_TOL, f"resumed run differs from the uninterrupted one by {worst:.2e}"
    state = torch.load(out / "checkpoint-2" / "scheduler.pt", weights_only=False)
    assert state["last_epoch"] == 2


def test_ctrl_c_names_the_checkpoint_to_resume_from(runs):
    out = runs["tmp"] / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trl_gsm8k.train", "--config", str(runs["recipe"]), "--use_cpu", "true",
         "--output_dir", str(out), "--max_steps", "50"],
        cwd=ROOT, env={**ENV, "PYTHONPATH": f"{ROOT / 'tests'}"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 600
    while not (out / "checkpoint-1" / "trainer_state.json").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output[-3000:]
    assert "stopping after this step and saving a checkpoint" in output
    assert "Interrupted: resume with --resume_from_checkpoint" in output
    assert "Traceback" not in output
    last = Path(output.rsplit("--resume_from_checkpoint ", 1)[1].split()[0].rstrip("."))
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] >= 2, "the step in progress at Ctrl-C was not finished and saved"
    assert last.name == f"checkpoint-{state['global_step']}" and (last / "model.safetensors").is_file()
    assert state["global_step"] < 50 and not (out / "model.safetensors").is_file()
