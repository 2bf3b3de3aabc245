"""`python -m trl_gsm8k.probe` on a tiny model: the report's figures recomputed here from its own per-sample records,
its recommendations checked against those figures, its samples against the recipe's reward functions."""

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from trl_gsm8k import doctor as doc
from trl_gsm8k.probe import main as probe_main
from trl_gsm8k.rewards import format_reward

G = 4
NUM_PROMPTS = 4


def write_recipe(path: Path, model_dir: str, **overrides) -> Path:
    recipe = {
        "model_name_or_path": model_dir, "max_train_samples": 16, "num_generations": G,
        "per_device_train_batch_size": G, "max_completion_length": 8, "bf16": False, "use_cpu": True,
        "report_to": "none", "seed": 7, "reward_funcs": ["correctness", "format"], "reward_weights": [1.0, 0.5],
        "output_dir": str(path.parent / "never_written"),
    }
    recipe.update(overrides)
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("probe")
    recipe = write_recipe(tmp / "recipe.yaml", tiny_model_dir)
    out = tmp / "probe.json"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):  # the CLI's main, in this process
        code = probe_main(["--config", str(recipe), "--num-prompts", str(NUM_PROMPTS), "--output", str(out),
                           "--batch-size", "8"])  # 2 prompts per generation call: batches are stitched
    assert code == 0, stderr.getvalue()[-4000:]
    assert not (tmp / "never_written").exists(), "the probe wrote into the recipe's output_dir"
    return {"json": json.loads(out.read_text()), "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_report_has_every_figure_and_a_record_per_completion(report):
    r = report["json"]
    assert set(r["figures"]) >= {
        "pass_at_1", "groups_all_wrong", "groups_all_right", "groups_mixed", "groups_zero_reward_std",
        "groups_identical", "truncated_rate", "declare_rate", "unclosed_think_rate", "tokens_p50", "tokens_p95",
        "reward_none_rate", "p_group_has_correct"}
    assert len(r["samples"]) == NUM_PROMPTS * G
    assert len(set(r["prompt_indices"])) == NUM_PROMPTS
    assert r["settings"]["max_completion_length"] == 8 and r["settings"]["num_generations"] == G
    assert "pass@1" in report["stdout"] and "Recommendations" in report["stdout"]
    assert "probe: 100%" in report["stderr"]  # the progress bar


def test_figures_recomputed_from_the_samples(report):
    r, f = report["json"], report["json"]["figures"]
    samples = r["samples"]
    groups = [samples[i:i + G] for i in range(0, len(samples), G)]
    assert all(len({s["prompt"] for s in g}) == 1 for g in groups)
    correct = [s["correct"] for s in samples]
    assert f["pass_at_1"] == pytest.approx(np.mean(correct))
    assert f["groups_all_wrong"] == pytest.approx(np.mean([not any(s["correct"] for s in g) for g in groups]))
    assert f["groups_all_right"] == pytest.approx(np.mean([all(s["correct"] for s in g) for g in groups]))
    assert f["groups_all_wrong"] + f["groups_all_right"] + f["groups_mixed"] == pytest.approx(1.0)
    assert f["truncated_rate"] == pytest.approx(np.mean([s["truncated"] for s in samples]))
    assert f["declare_rate"] == pytest.approx(np.mean([s["declared"] for s in samples]))
    tokens = [s["tokens"] for s in samples]
    assert f["tokens_p50"] == pytest.approx(np.percentile(tokens, 50))
    assert f["tokens_p95"] == pytest.approx(np.percentile(tokens, 95))
    assert max(tokens) <= 8
    # a completion without EOS ran to the limit
    assert all(s["tokens"] == 8 for s in samples if s["truncated"])
    assert f["p_group_has_correct"] == pytest.approx(1 - (1 - f["pass_at_1"]) ** G)


def test_samples_carry_the_recipes_rewards(report):
    samples = report["json"]["samples"]
    assert [s["rewards"]["format_reward"] for s in samples] == format_reward([s["completion"] for s in samples])
    for s in samples:
        assert s["reward"] == pytest.approx(1.0 * s["rewards"]["correctness_reward"] + 0.5 * s["rewards"]["format_reward"])
        assert s["rewards"]["correctness_reward"] == s["correct"]


def test_recommendations_follow_from_the_figures(report):
    r, f = report["json"], report["json"]["figures"]
    recs = {x["setting"]: x["value"] for x in r["recommendations"] if x["setting"]}
    truncated = np.mean([s["truncated"] for s in r["samples"]])
    assert truncated > 0.5  # a random tiny model does not stop within 8 tokens: the condition this test is built on
    assert recs["max_completion_length"] == 16  # p95 is censored at 8: double it
    if f["pass_at_1"] == 0:
        assert "num_generations" not in recs
    else:
        g = math.ceil(math.log(0.5) / math.log(1 - f["pass_at_1"]))
        assert recs.get("num_generations", G) == max(g, G)
    if f["groups_all_wrong"] > 0.5:
        assert recs["max_solution_steps"] == 2
        # dynamic sampling only skips groups: advised once correct samples are no longer rare
        assert recs.get("dynamic_sampling") is (True if f["pass_at_1"] >= doc.ACCURACY_LOW else None)
    assert ("temperature" in recs) == (f["groups_identical"] > 0.25)


def test_cold_sampling_recommends_a_higher_temperature(tmp_path, tiny_model_dir, capsys):
    """Near-greedy sampling makes each group's completions identical: the probe says to raise the temperature."""
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir, temperature=1e-4, max_completion_length=4)
    out = tmp_path / "probe.json"
    assert probe_main(["--config", str(recipe), "--num-prompts", "2", "--output", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    groups = [r["samples"][i:i + G] for i in range(0, len(r["samples"]), G)]
    identical = np.mean([len({s["completion"] for s in g}) == 1 for g in groups])
    assert r["figures"]["groups_identical"] == pytest.approx(identical) and identical > 0.25
    recs = {x["setting"]: x["value"] for x in r["recommendations"] if x["setting"]}
    assert recs["temperature"] == 1.0


@pytest.mark.parametrize("args, message", [
    (["--config", "no/such/recipe.yaml"], "recipe not found"),
    (["--num-prompts", "0"], "--num-prompts must be >= 1"),
    (["--batch-size", "2"], "holds no whole group"),
    (["--no_such_field", "1"], "no_such_field"),
])
def test_cli_errors_are_one_line(args, message, tmp_path, tiny_model_dir, capsys):
    recipe = write_recipe(tmp_path / "recipe.yaml", tiny_model_dir)
    argv = args if args[0] == "--config" else ["--config", str(recipe), *args]
    assert probe_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
