"""The evaluator: metric functions on hand-written strings, then the CLI end to end on a tiny random Llama."""

import json
import subprocess
import sys

import pytest

from trl_gsm8k import evaluate as ev
from trl_gsm8k.evaluate import (
    lm_eval_correct, lm_eval_extract, main, majority_answer, pass_at_k, resolve_model, score_item, summarize,
)

FAST = ["--max-new-tokens", "4", "--batch-size", "2", "--threads", "1"]  # 1 thread: fast on a shared CPU


def fails(capsys, argv, message):
    """The library raises EvalError (never SystemExit); main() turns it into one `error:` line and exit code 1."""
    with pytest.raises(ev.EvalError, match=message):
        ev.run(ev.parse_args(argv))
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and __import__("re").search(message, err[0]), err


# --- pure metrics ------------------------------------------------------------------------------------------------


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - 6 / 10)  # 1 - C(4,2)/C(5,2)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_majority_answer_ignores_undeclared_and_breaks_ties_by_first_seen():
    assert majority_answer([None, None, "3"]) == "3"
    assert majority_answer(["5", "7", "7", "5"]) == "5"
    assert majority_answer([]) is None


@pytest.mark.parametrize("text, strict, flexible", [
    ("3 + 4 = 7\n#### 7", "7", "7"),
    ("#### 1,080.", "1,080.", "1,080."),
    ("She pays $18.", None, "$18."),
    ("First 12, then 5 + 13 = 18 apples", None, "18"),
    ("#### 5\n#### 6", "5", "6"),  # lm-eval strict takes the first match; flexible the last number
    ("The answer is -3", None, "-3"),
    ("no digits at all", None, None),
])
def test_lm_eval_extraction(text, strict, flexible):
    assert lm_eval_extract(text, "strict") == strict
    assert lm_eval_extract(text, "flexible") == flexible


def test_lm_eval_scoring_is_string_equality_after_its_normalisation():
    assert lm_eval_correct("$1,080.", "1080")
    assert lm_eval_correct("18", "18")
    assert not lm_eval_correct("18.00", "18")  # lm-eval does not compare numerically
    assert not lm_eval_correct(None, "18")


def test_score_item_and_summarize():
    completions = ["So 9 * 2 = 18.\n#### 18", "The answer is 18.", "I get 17, no wait, 18"]
    a = score_item(0, "q", "18", completions, [10, 20, 30], [False, False, True], 2.0, "id")
    assert a["extracted"] == {"strict": ["18", None, None], "flexible": ["18", "18", None]}
    assert a["correct"]["strict"] == [True, False, False]
    assert a["lm_eval"]["correct"] == {"strict": [True, False, False], "flexible": [True, True, True]}
    b = score_item(1, "q", "5", ["#### 4", "#### 4", "#### 5"], [5, 5, 5], [False] * 3, 1.0, "id")
    s = summarize([a, b])
    assert s["num_items"] == 2 and s["num_samples"] == 3
    assert s["strict_pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert s["flexible_pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s["strict_pass@3"] == 1.0
    assert s["flexible_maj@3"] == 0.5  # item a votes 18 (right), item b votes 4 (wrong)
    assert s["lm_eval_flexible_pass@1"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["declare_rate"] == pytest.approx(5 / 6)
    assert s["truncated_rate"] == pytest.approx(1 / 6)
    assert s["mean_completion_tokens"] == pytest.approx(75 / 6)
    assert s["tokens_per_second"] == pytest.approx(75 / 3)


# --- the CLI -----------------------------------------------------------------------------------------------------


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_end_to_end_with_samples(tiny_model_dir, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["--model", tiny_model_dir, "--limit", "3", "--num-samples", "2", "--output", str(out), *FAST]) == 0
    result = json.loads(out.read_text())
    summary, settings = result["summary"], result["settings"]
    for key in ("strict_pass@1", "flexible_pass@1", "strict_maj@2", "flexible_pass@2", "lm_eval_strict_pass@1",
                "lm_eval_flexible_pass@1", "declare_rate", "truncated_rate", "mean_completion_tokens",
                "tokens_per_second", "wall_seconds"):
        assert key in summary
    assert summary["num_items"] == 3 and settings["temperature"] == 1.0 and settings["num_samples"] == 2
    items = _jsonl(tmp_path / "eval.jsonl")
    assert [it["index"] for it in items] == [0, 1, 2]
    assert items[0]["gold"] == "18" and len(items[0]["completions"]) == 2
    assert set(items[0]["extracted"]) == {"strict", "flexible"} and set(items[0]["correct"]) == {"strict", "flexible"}
    assert all(1 <= n <= 4 for it in items for n in it["num_tokens"])


def test_resume_keeps_finished_items(tiny_model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval.json"
    jsonl = tmp_path / "eval.jsonl"
    assert main(["--model", tiny_model_dir, "--limit", "2", "--output", str(out), *FAST]) == 0
    items = _jsonl(jsonl)
    items[0]["completions"] = ["SENTINEL #### 18"]  # a regenerated item would lose it
    # Simulate an interruption: item 1 torn mid-write.
    jsonl.write_text(json.dumps(items[0]) + "\n" + json.dumps(items[1])[:40])
    assert main(["--model", tiny_model_dir, "--limit", "3", "--output", str(out), *FAST]) == 0
    items = _jsonl(jsonl)
    assert [it["index"] for it in items] == [0, 1, 2]
    assert items[0]["completions"] == ["SENTINEL #### 18"]

    # Everything done: the summary is rebuilt without loading a model.
    monkeypatch.setattr(ev, "TransformersGenerator", None)
    assert main(["--model", tiny_model_dir, "--limit", "3", "--output", str(out), "--resume", *FAST]) == 0
    assert json.loads(out.read_text())["summary"]["num_items"] == 3

    fails(capsys, ["--model", tiny_model_dir, "--limit", "3", "--output", str(out), "--seed", "1", *FAST],
          "other settings")


def test_greedy_is_deterministic_across_batch_sizes(tiny_model_dir, tmp_path):
    for bs in ("1", "3"):
        assert main(["--model", tiny_model_dir, "--limit", "3", "--max-new-tokens", "4", "--batch-size", bs,
                     "--threads", "1", "--output", str(tmp_path / bs / "eval.json")]) == 0
    one, three = (_jsonl(tmp_path / bs / "eval.jsonl") for bs in ("1", "3"))
    assert [it["completions"] for it in one] == [it["completions"] for it in three]


def test_lora_adapter_dir_is_applied_to_its_base(tiny_model_dir, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "run"
    model.save_pretrained(adapter)
    resolved = resolve_model(str(adapter))
    assert resolved.adapter == str(adapter) and resolved.path == tiny_model_dir
    out = tmp_path / "eval.json"
    assert main(["--model", str(adapter), "--limit", "2", "--output", str(out), *FAST]) == 0
    base_out = tmp_path / "base.json"
    assert main(["--model", tiny_model_dir, "--limit", "2", "--output", str(base_out), *FAST]) == 0
    # The adapter changes the weights, so (almost surely) the greedy completions.
    assert _jsonl(out.with_suffix(".jsonl"))[0]["completions"] != _jsonl(base_out.with_suffix(".jsonl"))[0]["completions"]

    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    fails(capsys, ["--model", str(adapter), "--limit", "1", "--output", str(out), "--overwrite", *FAST],
          "base model .* not found")


def test_run_dir_without_final_model_uses_latest_checkpoint(tmp_path):
    for step in (2, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).path == str(tmp_path / "checkpoint-10")


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model"], "no such directory"),
    (["--model", "./missing-dir"], "no such directory"),
])
def test_missing_model_is_one_line(argv, message, tmp_path, capsys):
    fails(capsys, [*argv, "--output", str(tmp_path / "e.json")], message)


def test_argument_errors(tiny_model_dir, tmp_path, capsys):
    for argv in (["--limit", "0"], ["--num-samples", "2", "--temperature", "0"], ["--max-new-tokens", "0"]):
        with pytest.raises(SystemExit) as exc:
            main(["--model", tiny_model_dir, *argv])
        assert exc.value.code == 2
    assert "--limit must be at least 1" in capsys.readouterr().err


def test_prompt_longer_than_context(tiny_model_dir, tmp_path, capsys):
    # The 8-shot prompt is ~1,000 tokens; the tiny model's context is 512.
    fails(capsys, ["--model", tiny_model_dir, "--limit", "1", "--prompt", "lm-eval-fewshot",
                   "--output", str(tmp_path / "e.json"), *FAST], "exceeds the model's context of 512")


def test_fewshot_prompt_runs_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["--model", tiny_model_dir, "--limit", "2", "--prompt", "lm-eval-fewshot", "--num-fewshot", "1",
                 "--output", str(out), *FAST]) == 0
    settings = json.loads(out.read_text())["settings"]
    assert settings["prompt"] == "lm-eval-fewshot" and settings["num_fewshot"] == 1
    assert all("Question:" not in c for it in _jsonl(tmp_path / "eval.jsonl") for c in it["completions"])


def test_fewshot_prompt_format():
    prefix = ev.fewshot_prefix()
    blocks = prefix.strip().split("\n\n")
    assert len(blocks) == 8 and all(b.startswith("Question: ") and "\nAnswer: " in b for b in blocks)
    assert "<<" not in prefix and blocks[0].endswith("#### 72")


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vLLM installed")
def test_vllm_backend_missing_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    fails(capsys, ["--model", tiny_model_dir, "--limit", "1", "--backend", "vllm", "--output", str(tmp_path / "e.json"),
                   *FAST], "needs vLLM")


def test_cli_subprocess_bad_model_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "trl_gsm8k.evaluate", "--model", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --model")


def test_recipe_system_prompt_reaches_the_prompt_and_the_settings(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    recipe = tmp_path / "r.yaml"
    recipe.write_text("system_prompt: |-\n  Answer tersely.\n  #### 10\nlearning_rate: 1.0e-5\n")
    args = ev.parse_args(["--model", tiny_model_dir, "--recipe", str(recipe)])
    assert args.system_prompt == "Answer tersely.\n#### 10"
    prompt = ev.build_prompts([{"question": "What is 2 + 3?"}], "train", AutoTokenizer.from_pretrained(tiny_model_dir),
                              system_prompt=args.system_prompt)[0]
    assert "Answer tersely.\n#### 10" in prompt and "What is 2 + 3?" in prompt
    # A JSONL written with another system prompt is not resumed; the default prompt keeps the old settings ids.
    assert ev.settings_id(ev.settings_of(args)) != ev.settings_id(ev.settings_of(ev.parse_args(["--model", tiny_model_dir])))
    assert "system_prompt" not in ev.settings_of(ev.parse_args(["--model", tiny_model_dir]))
    out = tmp_path / "eval.json"
    assert main(["--model", tiny_model_dir, "--limit", "1", "--recipe", str(recipe), "--output", str(out), *FAST]) == 0
    assert json.loads(out.read_text())["settings"]["system_prompt"] == "Answer tersely.\n#### 10"


@pytest.mark.parametrize("text, message", [
    ("[1, 2]\n", "not a recipe"),
    ("system_prompt: [a, b]\n", "system_prompt must be text"),
    ("key: [unclosed\n", "--recipe"),
])
def test_bad_recipe_is_a_clear_error(tiny_model_dir, tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as exc:
        ev.parse_args(["--model", tiny_model_dir, "--recipe", str(recipe)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_recipe_and_system_prompt_together_is_refused(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ev.parse_args(["--model", tiny_model_dir, "--recipe", str(tmp_path / "missing.yaml"), "--system-prompt", "x"])
    assert "not both" in capsys.readouterr().err


def test_max_solution_steps_evaluates_the_easy_subset(tiny_model_dir, tmp_path):
    from trl_gsm8k.answers import gold_steps
    from trl_gsm8k.data import read_rows

    easy = [row for row in read_rows("test") if len(gold_steps(row["answer"].rsplit("####", 1)[0])) <= 1]
    assert len(easy) == 71  # the count in ../shared/NOTES.md and the evaluator's help
    out = tmp_path / "eval.json"
    assert main(["--model", tiny_model_dir, "--max-solution-steps", "1", "--limit", "3", "--output", str(out), *FAST]) == 0
    items = _jsonl(tmp_path / "eval.jsonl")
    assert [it["gold"] for it in items] == [row["answer"].rsplit("#### ", 1)[1].replace(",", "") for row in easy[:3]]
    assert json.loads(out.read_text())["settings"]["max_solution_steps"] == 1
