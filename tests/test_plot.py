"""Training curves and the before/after chart, from synthetic trainer states and eval summaries."""

import json
import math

import pytest

from trl_gsm8k.plot import find_trainer_state, main, plot_training, training_series

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


@pytest.mark.parametrize("content, message", [
    (None, "no trainer_state.json"),
    ("", "not a readable trainer state"),
    ('{"log_history": []}', "none of the metrics"),
    ('{"log_history": [{"step": 1, "loss": 0.1}]}', "found: loss"),
])
def test_missing_or_empty_state_is_a_clear_error(tmp_path, content, message):
    if content is not None:
        (tmp_path / "trainer_state.json").write_text(content)
    with pytest.raises(SystemExit, match=message):
        main([str(tmp_path)])


def test_missing_run_dir(tmp_path):
    with pytest.raises(SystemExit, match="no such run directory"):
        main([str(tmp_path / "nope")])


def _eval(path, strict, flexible, n=50):
    path.write_text(json.dumps({"summary": {"strict_pass@1": strict, "flexible_pass@1": flexible, "num_items": n},
                                "settings": {}}))
    return str(path)


def test_compare_chart(tmp_path, capsys):
    before, after = _eval(tmp_path / "before.json", 0.02, 0.05), _eval(tmp_path / "after.json", 0.2, 0.25)
    assert main(["--compare", before, after, "-o", str(tmp_path / "cmp.png")]) == 0
    assert (tmp_path / "cmp.png").read_bytes()[:8] == PNG_MAGIC
    assert "wrote" in capsys.readouterr().out


def test_compare_bad_inputs(tmp_path):
    good = _eval(tmp_path / "a.json", 0.1, 0.2)
    (tmp_path / "bad.json").write_text('{"summary": {}}')
    with pytest.raises(SystemExit, match="not an eval.json"):
        main(["--compare", good, str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit, match="no such eval.json"):
        main(["--compare", good, str(tmp_path / "missing.json")])
    with pytest.raises(SystemExit):
        main([])  # neither a run nor --compare: argparse error
