"""The design-card command end to end on a tiny model: accelerate launch + DeepSpeed ZeRO-2 offload, equivalence
with a plain single-process run, kill and resume, Ctrl-C under the launchers."""

import json
import os
import shlex
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


def test_ctrl_c_without_a_launcher_names_the_checkpoint_to_resume_from(runs):
    """`python -m trl_gsm8k.train` gets the terminal's SIGINT itself: same outcome as under the launcher."""
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
    assert "Traceback" not in output
    step = int(output.split("Interrupted after step ", 1)[1].split()[0])
    command = shlex.split(output.split("Resume with:\n", 1)[1].splitlines()[0])
    assert command[:3] == ["python", "-m", "trl_gsm8k.train"] and command[-2] == "--resume_from_checkpoint", command
    last = Path(command[-1])
    assert last == out / f"checkpoint-{step}", (last, step)
    assert json.loads((last / "trainer_state.json").read_text())["global_step"] == step
    assert (last / "model.safetensors").is_file()
    assert step < 50 and not (out / "model.safetensors").is_file()


# --- Ctrl-C under the README's command ---------------------------------------------------------------------------
# `accelerate launch` runs the worker under torch's elastic agent, in its own session: a terminal's Ctrl-C reaches
# the launcher only, which forwards SIGINT to the worker and SIGKILLs it TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds later
# (30 unless set); a second Ctrl-C reaches the worker as SIGTERM. The slow reward makes a step last far longer.
SLOW_STEP_S = 120
GRACE_S = 30


def launch(recipe: Path, out: Path, log: Path, *args: str, **env) -> subprocess.Popen:
    """The README's command, as a shell starts a foreground job: in a process group of its own."""
    env = {k: v for k, v in {**ENV, **env}.items() if k != "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch",
             "--config_file", "accelerate_configs/zero2_offload.yaml",
             "-m", "trl_gsm8k.train", "--config", str(recipe), "--output_dir", str(out), *args],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )


def ctrl_c(launcher: subprocess.Popen) -> None:
    """What a terminal does on Ctrl-C: SIGINT to the foreground process group."""
    os.killpg(launcher.pid, signal.SIGINT)


def wait_for(condition, proc: subprocess.Popen, timeout: float, poll: float = 0.2) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the test could interrupt it"
        assert time.time() < deadline, "timed out"
        time.sleep(poll)


def worker_pid(launcher: subprocess.Popen) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == launcher.pid:
            return int(stat.parent.name)
    raise AssertionError("no worker process under the launcher")


def assert_complete_checkpoint(path: Path, step: int) -> None:
    """What resuming under ZeRO-2 reads: weights, the DeepSpeed engine and optimizer state, RNG, trainer state."""
    assert json.loads((path / "trainer_state.json").read_text())["global_step"] == step
    assert (path / "model.safetensors").is_file() and (path / "rng_state.pth").is_file()
    tag = (path / "latest").read_text().strip()
    assert (path / tag / "mp_rank_00_model_states.pt").is_file()
    assert list((path / tag).glob("*optim_states.pt"))


def slow_recipe(tmp: Path, model_dir: Path, **overrides) -> Path:
    return write_recipe(tmp / "slow_recipe.yaml", model_dir, reward_funcs=[
        "correctness", "launch_rewards.char_count_reward", "slow_rewards.slow_reward"], **overrides)


def test_ctrl_c_under_the_launcher_saves_the_last_step_and_resumes_there(runs):
    """Ctrl-C in a step longer than the launcher's grace period: the last completed step is saved within it, the
    printed command resumes from it under ZeRO-2 at the next step, and ends with the uninterrupted run's weights."""
    tmp = runs["tmp"] / "ctrl_c"
    tmp.mkdir()
    out, marker = tmp / "out", tmp / "slow_step"
    recipe = slow_recipe(tmp, runs["tmp"] / "model", save_steps=100)  # no periodic checkpoint: Ctrl-C must save
    launcher = launch(recipe, out, tmp / "log", SLOW_REWARD_MARKER=str(marker), SLOW_REWARD_FROM_STEP="1",
                      SLOW_REWARD_SECONDS=str(SLOW_STEP_S))
    try:
        wait_for(marker.is_file, launcher, timeout=600)  # step 1 done, step 2 is scoring for SLOW_STEP_S
        pressed = time.time()
        ctrl_c(launcher)
        launcher.wait(timeout=GRACE_S + 60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    took = time.time() - pressed
    log = (tmp / "log").read_text()
    assert "Unable to shutdown process" not in log, "the launcher had to SIGKILL the worker:\n" + log[-3000:]
    assert took < GRACE_S, f"{took:.0f} s from Ctrl-C to exit"
    assert f"Interrupted after step 1 of 2: saved {out / 'checkpoint-1'}." in log, log[-3000:]
    assert_complete_checkpoint(out / "checkpoint-1", 1)
    assert not (out / "checkpoint-2").exists() and not (out / "model.safetensors").exists()

    command = shlex.split(log.split("Resume with:\n", 1)[1].splitlines()[0])
    assert command[:3] == ["python", "-m", "accelerate.commands.launch"], command
    assert command[-2:] == ["--resume_from_checkpoint", str(out / "checkpoint-1")], command
    resumed = run([sys.executable, *command[1:]])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert [h["step"] for h in log_history(out)] == [1, 2]  # step 1 from the checkpoint, step 2 trained after
    final, reference = load_file(out / "model.safetensors"), load_file(runs["zero2"] / "model.safetensors")
    worst = max((final[k] - reference[k]).abs().max().item() for k in final)
    assert worst < WEIGHT_TOL, f"interrupted and resumed run differs from the uninterrupted one by {worst:.2e}"


def test_second_ctrl_c_during_the_save_leaves_the_last_complete_checkpoint(runs):
    """The second Ctrl-C lands while the first one's checkpoint is being written (the worker is frozen at that
    moment to make it certain): the latest checkpoint directory is still a complete one."""
    from transformers.trainer_utils import get_last_checkpoint

    tmp = runs["tmp"] / "ctrl_c_twice"
    tmp.mkdir()
    out, marker = tmp / "out", tmp / "slow_step"
    recipe = slow_recipe(tmp, runs["tmp"] / "model", save_steps=2, max_steps=10)
    launcher = launch(recipe, out, tmp / "log", SLOW_REWARD_MARKER=str(marker), SLOW_REWARD_FROM_STEP="3",
                      SLOW_REWARD_SECONDS=str(SLOW_STEP_S))
    try:
        wait_for(marker.is_file, launcher, timeout=600)  # checkpoint-2 saved, step 3 done, step 4 under way
        worker = worker_pid(launcher)
        ctrl_c(launcher)  # saves step 3 ...
        wait_for(lambda: (out / ".checkpoint-staging" / "checkpoint-3").exists() or (out / "checkpoint-3").exists(),
                 launcher, timeout=GRACE_S, poll=0.001)
        os.kill(worker, signal.SIGSTOP)
        assert not (out / "checkpoint-3" / "trainer_state.json").exists(), "froze too late: the save was done"
        time.sleep(1)
        ctrl_c(launcher)  # ... and the second Ctrl-C arrives in the middle of it
        time.sleep(1)
        os.kill(worker, signal.SIGCONT)
        launcher.wait(timeout=GRACE_S + 60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    log = (tmp / "log").read_text()
    assert "closing signal SIGTERM" in log, "the second Ctrl-C did not reach the worker as the launcher sends it"
    last = get_last_checkpoint(str(out))
    assert last == str(out / "checkpoint-2"), f"{last} ({sorted(p.name for p in out.iterdir())})"
    assert_complete_checkpoint(out / "checkpoint-2", 2)
    assert f"the last complete checkpoint is {out / 'checkpoint-2'}." in log, log[-3000:]
    assert not (out / ".checkpoint-staging").exists()


def test_ctrl_c_with_two_processes_stops_both_after_the_same_step(runs):
    """With several processes no rank abandons its step (a peer could wait for it in a collective): all finish the
    step in progress, agree to stop, and save it together (DDP on CPU, torchrun, as the README's CPU DDP command)."""
    tmp = runs["tmp"] / "ctrl_c_ddp"
    tmp.mkdir()
    out, marker = tmp / "out", tmp / "slow_step"
    recipe = slow_recipe(tmp, runs["tmp"] / "model", save_steps=100, max_steps=10)
    env = {k: v for k, v in ENV.items() if k != "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"}
    env.update(PYTHONPATH=str(ROOT / "tests"), ACCELERATE_USE_CPU="true", SLOW_REWARD_MARKER=str(marker),
               SLOW_REWARD_FROM_STEP="1", SLOW_REWARD_SECONDS="5")
    with open(tmp / "log", "w") as f:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "trl_gsm8k.train",
             "--config", str(recipe), "--output_dir", str(out)],
            cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(marker.is_file, launcher, timeout=600)  # step 2 under way on at least one rank
        ctrl_c(launcher)
        launcher.wait(timeout=GRACE_S + 60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    log = (tmp / "log").read_text()
    assert "Unable to shutdown process" not in log, log[-3000:]
    assert f"Interrupted after step 2 of 10: saved {out / 'checkpoint-2'}." in log, log[-3000:]
    assert log.count("Interrupted after") == 1  # the main process speaks for all
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "checkpoint-2" / "model.safetensors").is_file()
    assert not (out / "checkpoint-3").exists()


def test_the_grace_period_is_torch_elastic_shutdown_timeout(tmp_path):
    """The knob the README gives for checkpoints that take longer to write than 30 s: a process that ignores
    Ctrl-C is killed TORCH_ELASTIC_SHUTDOWN_TIMEOUT seconds after it."""
    script, ready = tmp_path / "stubborn.py", tmp_path / "ready"
    script.write_text(
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(300)\n"
    )
    with open(tmp_path / "log", "w") as f:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch",
             "--config_file", "accelerate_configs/zero2_offload.yaml",
             str(script)],
            cwd=ROOT, env={**ENV, "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "4"}, stdout=f, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(ready.is_file, launcher, timeout=300)
        pressed = time.time()
        ctrl_c(launcher)
        launcher.wait(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    took = time.time() - pressed
    assert "Unable to shutdown process" in (tmp_path / "log").read_text()
    assert 4 <= took < 15, f"killed {took:.1f} s after Ctrl-C"
