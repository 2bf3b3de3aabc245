"""Training curves and the before/after chart, from synthetic trainer states and eval summaries."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from trl_gsm8k.plot import (PlotError, compare_figure, find_trainer_state, main, plot_compare, plot_training,
                            setting_differences, training_figure, training_series)

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


SETTINGS = {"model": "smollm2-135m-instruct", "split": "test", "prompt": "train", "data_source": "bundled",
            "num_samples": 1, "temperature": None, "max_new_tokens": 256, "seed": 0, "backend": "transformers",
            "dtype": "auto", "limit": 50, "batch_size": 32, "items_file": "eval.jsonl"}  # as evaluate.run writes them


def _eval(path, strict, flexible, n=50, declare=0.5, truncated=0.4, **settings):
    path.write_text(json.dumps({"summary": {"num_items": n, "num_samples": 1, "strict_pass@1": strict,
                                            "flexible_pass@1": flexible, "declare_rate": declare,
                                            "truncated_rate": truncated, "mean_completion_tokens": 200.0},
                                "settings": {**SETTINGS, **settings}}))
    return str(path)


def test_compare_chart(tmp_path, capsys):
    before, after = _eval(tmp_path / "before.json", 0.02, 0.05), _eval(tmp_path / "after.json", 0.2, 0.25)
    assert main(["--compare", before, after, "-o", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out


def test_compare_bad_inputs(tmp_path, capsys):
    good = _eval(tmp_path / "a.json", 0.1, 0.2)
    (tmp_path / "bad.json").write_text('{"summary": {"strict_pass@1": 0.1, "flexible_pass@1": 0.2}}')
    with pytest.raises(PlotError, match="not an eval.json .*lacks declare_rate, truncated_rate"):
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


# --- what the figures show: read from the matplotlib figures (axes titles, texts, bars), not from pixels ----------

FORMAT = [0.125, 0.375, 0.125, 0.0, 0.125, 0.375, 0.25, 0.75, 0.5, 0.5, 0.375, 0.375]  # CPU demo, benchmarks/demo.md


def _demo_history(steps: int = 12, first: int = 1) -> list[dict]:
    """A log_history with the keys a real run of `trl_gsm8k.train` logs (copied from a CPU-demo trainer_state.json:
    TRL 1.16's metrics and this package's, correctness + format rewards); format reward, truncation, lengths and
    entropy move; accuracy and correctness stay 0; advantage/std and /mean sit at 1 and 0 up to float32 rounding."""
    history = []
    for n, s in enumerate(range(first, first + steps)):
        fmt = FORMAT[n % len(FORMAT)]
        clipped = 0.75 - 0.04 * n
        history.append({
            "accuracy": 0.0, "declare_rate": 0.5 + 0.03 * n, "advantage/mean": (-7.450580596923828e-09, 2.2351741790771484e-08)[n % 2],
            "advantage/std": (0.9999999403953552, 0.9999998807907104)[n % 2],
            "clip_ratio/high_max": 0.0, "clip_ratio/high_mean": 0.0, "clip_ratio/low_mean": 0.0,
            "clip_ratio/low_min": 0.0, "clip_ratio/region_mean": 0.0, "completions/clipped_ratio": clipped,
            "completions/max_length": 128.0, "completions/max_terminated_length": 103.0 - n,
            "completions/mean_length": 116.25 - 2 * n, "completions/mean_terminated_length": 81.0 - n,
            "completions/min_length": 59.0 - 3 * n, "completions/min_terminated_length": 59.0 - 3 * n,
            "entropy": 2.1 - 0.03 * n, "epoch": 0.0001 * (n + 1), "frac_reward_zero_std": 0.0,
            "frac_zero_std_groups": 0.0, "grad_norm": 2.0 + 0.1 * n, "learning_rate": 1e-05, "loss": 0.04 + 0.01 * n,
            "num_tokens": 2314.0 * (n + 1), "policy/entropy": 2.1 - 0.03 * n, "reward": fmt / 2, "reward/mean": fmt / 2,
            "reward/std": 0.18, "reward_std": 0.18, "rewards/correctness_reward/mean": 0.0,
            "rewards/correctness_reward/std": 0.0, "rewards/format_reward/mean": fmt,
            "rewards/format_reward/std": 0.35, "step": s, "step_time": 40.0,
        })
    history.append({"epoch": 0.0012, "step": first + steps - 1, "total_flos": 0.0, "train_loss": 0.1,
                    "train_runtime": 480.0, "train_samples_per_second": 0.2, "train_steps_per_second": 0.025})
    return history


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def _flat_line(fig) -> str:
    texts = [t.get_text() for t in fig.texts if t.get_text().startswith("flat")]
    assert len(texts) <= 1
    return texts[0].replace("\n", " ") if texts else ""


def _flat(fig) -> dict[str, str]:
    """The flat line's ``metric value`` items, as ``{metric: value}``."""
    items = _flat_line(fig).split(": ", 1)[1].split(", ")
    return dict(item.rsplit(" ", 1) for item in items)


def test_panels_for_reward_terms_and_truncation_flat_metrics_named_not_drawn():
    fig = training_figure(_demo_history(), "demo")
    assert _titles(fig) == [
        "Reward (mean ± std)", "Reward term format_reward (mean ± std)", "Declared an answer (right or wrong)",
        "Truncated (cut at max_completion_length)", "Completion length", "Entropy",
    ]
    assert _flat_line(fig).startswith("flat over 12 logged steps (no panel): ")
    assert _flat(fig) == {"rewards/correctness_reward/mean": "0.000", "accuracy": "0.000", "advantage/std": "1.000",
                          "advantage/mean": "0.000", "frac_zero_std_groups": "0.000"}
    # a flat line beside moving ones keeps its place in their panel: max_length is the cap the others are read against
    length = fig.axes[_titles(fig).index("Completion length")]
    assert [line.get_label() for line in length.get_lines()] == [
        "completions/mean_length", "completions/max_length", "completions/min_length"]
    truncated = fig.axes[_titles(fig).index("Truncated (cut at max_completion_length)")]
    assert truncated.get_lines()[0].get_label() == "completions/clipped_ratio" and truncated.get_ylim()[1] >= 1.0
    plt.close(fig)


def test_every_reward_term_gets_a_panel_and_a_moving_metric_is_never_flat():
    history = _demo_history()
    for n, entry in enumerate(h for h in history if "accuracy" in h):
        entry["rewards/tag_format_reward/mean"], entry["rewards/tag_format_reward/std"] = 0.1 * n, 0.2
        entry["accuracy"] = entry["rewards/correctness_reward/mean"] = 0.125 * (n == 5)  # one correct at one step
        entry["advantage/std"] = 0.0 if n == 3 else entry["advantage/std"]  # all groups zero-std at step 4
    titles = _titles(fig := training_figure(history, "demo"))
    assert [t for t in titles if t.startswith("Reward term")] == [
        "Reward term correctness_reward (mean ± std)", "Reward term format_reward (mean ± std)",
        "Reward term tag_format_reward (mean ± std)"]
    assert "Accuracy (correct completions)" in titles and "Advantage" in titles
    assert _flat_line(fig) == "flat over 12 logged steps (no panel): frac_zero_std_groups 0.000"
    plt.close(fig)


def test_one_logged_step_shows_its_step_as_the_only_tick():
    fig = training_figure(_demo_history(steps=1, first=2), "one step")
    fig.canvas.draw()
    assert len(fig.axes) >= 8 and _flat_line(fig) == ""  # one value shows no movement, and no flatness either
    for ax in fig.axes:
        low, high = ax.get_xlim()
        shown = [label.get_text() for label in ax.get_xticklabels() if low <= label.get_position()[0] <= high]
        assert shown == ["2"], (ax.get_title(), shown)
    plt.close(fig)


def test_two_logged_steps_have_integer_ticks():
    fig = training_figure(_demo_history(steps=2, first=7), "two steps")
    fig.canvas.draw()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert [t.get_text() for t in ax.get_xticklabels() if low <= t.get_position()[0] <= high] == ["7", "8"]
    plt.close(fig)


def test_a_run_where_nothing_moved_still_draws_the_flat_line(tmp_path):
    history = [{"step": s, "accuracy": 0.0, "advantage/std": 1.0} for s in (1, 2, 3)]
    fig = training_figure(history, "nothing moved")
    assert _titles(fig) == [] and _flat_line(fig) == (
        "flat over 3 logged steps (no panel): accuracy 0.000, advantage/std 1.000")
    plt.close(fig)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3, "log_history": history}))
    assert plot_training(tmp_path).read_bytes()[:8] == PNG_MAGIC


def _bars(ax) -> list[list[float]]:
    """Bar heights (%) per evaluation (before, after), in the order of the panel's x labels."""
    return [[round(bar.get_height(), 6) for bar in container] for container in ax.containers]


def test_compare_draws_pass_at_1_declare_and_truncation(tmp_path, caplog):
    before = _eval(tmp_path / "before.json", 0.0, 0.0, declare=0.52, truncated=0.41)
    after = _eval(tmp_path / "after.json", 0.0, 0.02, declare=0.71, truncated=0.22,
                  model="outputs/smollm2-135m_cpu_demo")
    evals = [json.loads(Path(p).read_text()) for p in (before, after)]
    fig = compare_figure(*evals)
    accuracy, completions = fig.axes
    assert accuracy.get_title() == "Accuracy (pass@1)" and completions.get_title() == "Completions"
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["strict\n(#### N only)",
                                                                   "flexible\n(any declared answer)"]
    assert [t.get_text() for t in completions.get_xticklabels()] == ["declared\nan answer",
                                                                      "truncated\n(hit max_new_tokens)"]
    assert _bars(accuracy) == [[0.0, 0.0], [0.0, 2.0]] and _bars(completions) == [[52.0, 41.0], [71.0, 22.0]]
    assert accuracy.get_ylim()[1] >= 10 and completions.get_ylim()[1] >= 100  # 0 % bars on a readable axis
    assert [t.get_text() for t in accuracy.get_legend().get_texts()] == [
        "before: smollm2-135m-instruct (n=50)", "after: smollm2-135m_cpu_demo (n=50)"]
    assert not [t for t in fig.texts if "WARNING" in t.get_text()]
    plt.close(fig)
    with caplog.at_level("WARNING", logger="trl_gsm8k.plot"):
        plot_compare(Path(before), Path(after), tmp_path / "cmp.png")
    assert caplog.records == []  # same prompt, budget and items: like for like


@pytest.mark.parametrize("changes, expected", [
    ({"max_new_tokens": 512}, ["max_new_tokens: 256 ≠ 512"]),
    ({"system_prompt": "Think, then answer #### N."}, ["system_prompt: default ≠ 'Think, then answer #### N.'"]),
    ({"prompt": "lm-eval-fewshot", "num_fewshot": 5},
     ["prompt: 'train' ≠ 'lm-eval-fewshot'", "num_fewshot: default ≠ 5"]),
    ({"n": 200, "limit": 200}, ["num_items: 50 ≠ 200"]),  # --limit itself is not compared: num_items says it
    ({"batch_size": 8, "items_file": "x.jsonl", "dtype": "float32"}, []),  # do not change what is asked
])
def test_compare_warns_when_the_evaluations_differ(tmp_path, caplog, changes, expected):
    before = _eval(tmp_path / "before.json", 0.01, 0.02)
    after = _eval(tmp_path / "after.json", 0.03, 0.05, model="outputs/run", **changes)
    evals = [json.loads(Path(p).read_text()) for p in (before, after)]
    assert setting_differences(*evals) == expected
    fig = compare_figure(*evals)
    marked = " ".join(t.get_text().replace("\n", " ") for t in fig.texts if "WARNING" in t.get_text())
    assert all(d in marked for d in expected) and bool(marked) == bool(expected)
    plt.close(fig)
    with caplog.at_level("WARNING", logger="trl_gsm8k.plot"):
        assert main(["--compare", before, after, "-o", str(tmp_path / "cmp.png")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == bool(expected) and all(d in "".join(warnings) for d in expected)


def test_step_time_panel_shows_the_generation_share_from_zero():
    history = _demo_history(4)
    for n, entry in enumerate(h for h in history if "loss" in h):
        entry.update({"timing/step_seconds": 38.0 + n, "timing/generation_seconds": 14.0 + n % 2})
    fig = training_figure(history, "demo")
    ax = fig.axes[_titles(fig).index("Time per step (of it, generating)")]
    assert [line.get_label() for line in ax.get_lines()] == ["timing/step_seconds", "timing/generation_seconds"]
    assert ax.get_ylim()[0] == 0  # 14 s of 38 reads as the share it is
    plt.close(fig)
