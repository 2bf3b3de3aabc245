"""The evaluator end to end on a tiny random Llama: the CLI, resuming, models and adapters, prompts, recipes.

The scoring of completions is tested in test_scoring.py."""

import json
import subprocess
import sys

import pytest

from trl_gsm8k import evaluate as ev
from trl_gsm8k.evaluate import main
from trl_gsm8k.generation import resolve_model

FAST = ["--max-new-tokens", "4", "--batch-size", "2", "--threads", "1"]  # 1 thread: fast on a shared CPU


def fails(capsys, argv, message):
    """The library raises EvalError (never SystemExit); main() turns it into one `error:` line and exit code 1."""
    with pytest.raises(ev.EvalError, match=message):
        ev.run(ev.parse_args(argv))
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and __import__("re").search(message, err[0]), err


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
    ("[1, 2]\n", "must contain a YAML mapping"),
    ("system_prompt: [a, b]\n", "system_prompt must be text"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_bad_recipe_is_a_clear_error(tiny_model_dir, tmp_path, capsys, text, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as exc:
        ev.parse_args(["--model", tiny_model_dir, "--recipe", str(recipe)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"error: --recipe {recipe}: " in err and message in err


def test_recipe_with_a_misspelled_key_is_refused(tiny_model_dir, tmp_path, capsys):
    """Read as training reads it: a key training would refuse is not silently ignored (the prompt would be lost)."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("system_promt: Answer tersely.\nlearning_rate: 1.0e-5\n")
    with pytest.raises(SystemExit) as exc:
        ev.parse_args(["--model", tiny_model_dir, "--recipe", str(recipe)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith(f"python -m trl_gsm8k.evaluate: error: --recipe {recipe}: ")
    assert "Unknown arguments" in err[-1] and "system_promt" in err[-1] and "spelling" in err[-1]


def test_missing_recipe_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    recipe = tmp_path / "missing.yaml"
    with pytest.raises(SystemExit) as exc:
        ev.parse_args(["--model", tiny_model_dir, "--recipe", str(recipe)])
    assert exc.value.code == 2 and f"error: --recipe {recipe}: recipe not found" in capsys.readouterr().err


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


def test_the_token_budget_is_the_recipes_or_the_readmes_baseline(tiny_model_dir):
    """Evaluate as the recipe trains (its max_completion_length), else with the README baseline's 256 tokens; an
    explicit --max-new-tokens wins."""
    demo = "recipes/smollm2-135m_cpu_demo.yaml"
    assert ev.parse_args(["--model", tiny_model_dir]).max_new_tokens == ev.DEFAULT_MAX_NEW_TOKENS == 256
    assert ev.parse_args(["--model", tiny_model_dir, "--recipe", demo]).max_new_tokens == 128
    assert ev.parse_args(["--model", tiny_model_dir, "--recipe", demo, "--max-new-tokens", "64"]).max_new_tokens == 64


# --- precision and progress ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("native, device, expected", [
    ("AMX-BF16", "cpu", "bfloat16"), (None, "cpu", "float32"), (None, "cuda", "bfloat16"), ("AMX-BF16", "cuda:1", "bfloat16"),
])
def test_dtype_auto_is_bf16_where_the_hardware_computes_it(monkeypatch, native, device, expected):
    from trl_gsm8k import generation, precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda capabilities=None: native)
    assert generation.resolve_dtype("auto", device) == expected
    assert generation.resolve_dtype("float32", device) == "float32"  # asked for: as asked


def test_the_settings_record_the_dtype_generated_with(tiny_model_dir, tmp_path):
    from trl_gsm8k.precision import native_cpu_bf16

    out = tmp_path / "eval.json"
    assert main(["--model", tiny_model_dir, "--limit", "1", "--output", str(out), *FAST]) == 0
    expected = "bfloat16" if native_cpu_bf16() else "float32"
    assert json.loads(out.read_text())["settings"]["dtype"] == expected  # "auto" would hide what ran


def test_progress_moves_with_each_generated_token(tiny_model_dir, tmp_path, capsys):
    """A batch is one generate call of up to --max-new-tokens steps: the generator calls back at each step, and the
    bar says which token of which batch it is at, with a time estimate."""
    from trl_gsm8k.generation import TransformersGenerator, load_tokenizer

    args = ev.parse_args(["--model", tiny_model_dir, "--max-new-tokens", "6", "--dtype", "float32"])
    model = resolve_model(tiny_model_dir)
    generate = TransformersGenerator(model, load_tokenizer(model), args, None)
    calls = []
    samples = generate(["What is 1 + 1?", "What is 2 + 2? Think."], seed=0, on_token=lambda: calls.append(1))
    assert len(calls) == max(s.num_tokens for group in samples for s in group) >= 1

    assert main(["--model", tiny_model_dir, "--limit", "3", "--output", str(tmp_path / "e.json"),
                 "--max-new-tokens", "6", "--batch-size", "2", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "questions [" in err and "<" in err  # elapsed<remaining
    assert "3/3 questions" in err and "batch 2/2, token 6/6" in err  # (earlier states are drawn at most every 0.1 s)
