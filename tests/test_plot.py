"""Training curves and the before/after chart, from synthetic trainer states and eval summaries."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trl_gsm8k.plot import PlotError, find_trainer_state, main, plot_compare, plot_training, training_series

ROOT = Path(__file__).resolve().parent.parent

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _state(steps: int, family: str = "ours") -> dict:
    history = []
    for s in range(1, steps + 1):
        if family == "ours":
            entry = {"reward/mean": 0.2 + 0.05 * s, "reward/std": 0.3, "accuracy": 0.1 + 0.04 * s,
                     "advantage/mean": 0.0, "advantage/std": 0.9, "policy/entropy": 1.5 - 0.05 * s,
                     "frac_zero_std_groups": 0.5 - 0.02 * s, "kl_old": 0.001 * s}
        else:
            entry = {"reward": 0.2 + 0.05 * s, "reward_std": 0.3, "entropy": 1.5 - 0.05 * s,
                     "frac_reward_zero_std": 0.4, "kl": 0.01 * math.sqrt(s)}
        entry.update({"step": s, "loss": 0.01, "completions/mean_length": 100 + s, "learning_rate": 1e-6})
        history.append(entry)
    history.append({"step": steps, "eval_loss": 1.0})
    history.append({"step": steps, "train_runtime": 12.0, "train_loss": 0.01})
    return {"global_step": steps, "log_history": history}


@pytest.mark.parametrize("family", ["ours", "trl"])
def test_training_curves_png(tmp_path, family):
    (tmp_path / "trainer_state.json").write_text(json.dumps(_state(12, family)))
    assert main([str(tmp_path)]) == 0
    png = tmp_path / "training_curves.png"
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000


def test_latest_checkpoint_state_is_used(tmp_path):
    for step in (5, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(_state(step)))
    assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-20" / "trainer_state.json"
    out = plot_training(tmp_path, tmp_path / "out" / "curves.png")
    assert out.stat().st_size > 0


def test_training_series_skips_eval_and_summary_entries():
    series = training_series(_state(3)["log_history"])
    assert series["reward/mean"][0] == [1, 2, 3]
    assert "eval_loss" not in series and "train_runtime" in series  # summary: a key no panel reads


@pytest.mark.parametrize("content, error, message", [
    (None, FileNotFoundError, "no trainer_state.json"),
    ("", PlotError, "not a readable trainer state"),
    ('{"log_history": []}', PlotError, "none of the metrics"),
    ('{"log_history": [{"step": 1, "loss": 0.1}]}', PlotError, "found: loss"),
])
def test_missing_or_empty_state_raises_and_the_cli_prints_one_line(tmp_path, capsys, content, error, message):
    if content is not None:
        (tmp_path / "trainer_state.json").write_text(content)
    with pytest.raises(error, match=message):  # an exception a caller can catch, never SystemExit
        plot_training(tmp_path)
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_missing_run_dir(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        find_trainer_state(tmp_path / "nope")
    assert main([str(tmp_path / "nope")]) == 1
    assert "no such run directory" in capsys.readouterr().err


def test_cli_error_is_one_line_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trl_gsm8k.plot", str(tmp_path / "nope")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: {tmp_path / 'nope'}: no such run directory"


def test_finished_run_with_nothing_to_plot_exits_0_with_its_model(tmp_path, tiny_model_dir):
    """A run that trains no step (num_train_epochs 0) logs only the run summary: nothing a panel reads, so no
    picture; it still ends with exit code 0 and its model saved. (Any run that trains a step has something to plot:
    TRL merges its step metrics into the final summary entry even when logging_steps is never reached.)"""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model_name_or_path": tiny_model_dir, "max_train_samples": 4, "num_generations": 2,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_completion_length": 4,
        "num_train_epochs": 0, "bf16": False, "use_cpu": True, "report_to": "none",
        "save_strategy": "no", "activation_checkpointing": False, "reward_funcs": ["correctness"],
    }))
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trl_gsm8k.train", "--config", str(recipe), "--output_dir", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "model.safetensors").is_file() and "Done. Outputs in" in proc.stdout
    with pytest.raises(PlotError, match="none of the metrics"):
        plot_training(out)  # the premise: nothing plottable
    assert not (out / "training_curves.png").exists()
    assert "Could not draw the training curves" in proc.stderr and "none of the metrics" in proc.stderr


def _eval(path, strict, flexible, n=50):
    path.write_text(json.dumps({"summary": {"strict_pass@1": strict, "flexible_pass@1": flexible, "num_items": n},
                                "settings": {}}))
    return str(path)


def test_compare_chart(tmp_path, capsys):
    before, after = _eval(tmp_path / "before.json", 0.02, 0.05), _eval(tmp_path / "after.json", 0.2, 0.25)
    assert main(["--compare", before, after, "-o", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out


def test_compare_bad_inputs(tmp_path, capsys):
    good = _eval(tmp_path / "a.json", 0.1, 0.2)
    (tmp_path / "bad.json").write_text('{"summary": {}}')
    with pytest.raises(PlotError, match="not an eval.json"):
        plot_compare(Path(good), tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="no such eval.json"):
        plot_compare(Path(good), tmp_path / "missing.json")
    assert main(["--compare", good, str(tmp_path / "bad.json")]) == 1
    assert main(["--compare", good, str(tmp_path / "missing.json")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert [e.split(": ")[0] for e in errors] == ["error", "error"]
    assert "not an eval.json" in errors[0] and "no such eval.json" in errors[1]
    with pytest.raises(SystemExit):
        main([])  # neither a run nor --compare: argparse's usage error (exit code 2)
