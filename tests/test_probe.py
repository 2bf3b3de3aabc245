"""`python -m trl_gsm8k.probe` on a tiny model: the report's figures recomputed here from its own per-sample records,
its recommendations checked against those figures, its samples against the recipe's reward functions; and on a tiny
model trained to answer, real non-zero counts judged here against each row's gold, with the golds shifted by one row
as the control."""

import contextlib
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from trl_gsm8k import doctor as doc
from trl_gsm8k.data import build_prompt
from trl_gsm8k.probe import main as probe_main
from trl_gsm8k.rewards import correctness_reward_strict, format_reward

TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"

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


# --- real counts: a model that answers, some groups right, some wrong, some mixed ----------------------------------
#
# A tiny Llama trained for a few seconds (plain torch) on a 32-question dataset: for an "apples" question it always
# answers '#### 7'; for a "boxes" question it answers '#### 7' or 'The answer is 7' with even odds. The recipe scores
# with correctness_reward_strict, which credits only '#### 7'. So through the real trainer's sampling and rewards:
# apples with gold 7 -> all right, boxes with gold 7 -> mixed (all alike with P = 1/8 each: seeded), any question
# with another gold -> all wrong. The tokenizer is word-level (a 70-word vocabulary), which keeps a training step at
# milliseconds.

ANSWERING_SYSTEM_PROMPT = "Answer."
# (kind, gold) per dataset row, in file order: 2 apples and 4 boxes rows with gold 7, each after a boxes row with
# gold 9, so that shifting the golds by one row leaves no apples question with gold 7 (no group is then right for
# sure). pass@1 = (8 + X) / 128 with X ~ Binomial(16, 1/2) correct boxes answers: between ACCURACY_LOW and the
# 1 - 0.5 ** (1/4) under which a group of 4 is too small (P = 0.998).
ANSWERING_ROWS = ([("boxes", 9), ("apples", 7)] * 2 + [("boxes", 9), ("boxes", 7)] * 4
                  + [("apples", 5), ("boxes", 9)] * 10)
ANSWERING_G = 4
HASH_ANSWER = re.compile(r"#### (\d+)")


def answering_question(k: int, kind: str) -> str:
    return f"Question {k}: {kind}"


def build_answering_model(path: Path, steps: int = 400, seed: int = 0) -> Path:
    """Train the tiny answering model and save it with its word-level tokenizer (see the comment above)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    words = ["system", "user", "assistant", ANSWERING_SYSTEM_PROMPT, "Question", "apples", "boxes", "####", "The",
             "answer", "is", *(str(i) for i in range(10)), *(f"{i}:" for i in range(len(ANSWERING_ROWS)))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(special + words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<|im_start|>", eos_token="<|im_end|>")
    tokenizer.chat_template = (TOKENIZER_DIR / "chat_template.jinja").read_text()  # SmolLM2's ChatML template

    examples = []
    for k, (kind, _) in enumerate(ANSWERING_ROWS):
        messages = build_prompt(answering_question(k, kind), "chat", ANSWERING_SYSTEM_PROMPT)
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for target in (["#### 7"] if kind == "apples" else ["#### 7", "The answer is 7"]):
            examples.append((prompt_ids, tokenizer(target, add_special_tokens=False)["input_ids"] +
                             [tokenizer.eos_token_id]))
    length = max(len(p) + len(c) for p, c in examples)
    ids = torch.full((len(examples), length), tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    for i, (p, c) in enumerate(examples):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p):len(p) + len(c)] = torch.tensor(c)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains fastest on one thread (2 threads on a shared CPU: 10x slower)
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)  # 1e-2 can sit on the unconditional answer for long
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=(ids != tokenizer.pad_token_id).long(), labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_answering_data(path: Path, golds: list[int]) -> Path:
    path.mkdir(parents=True)
    with open(path / "train.jsonl", "w") as f:
        for k, ((kind, _), gold) in enumerate(zip(ANSWERING_ROWS, golds)):
            f.write(json.dumps({"question": answering_question(k, kind), "answer": f"#### {gold}"}) + "\n")
    return path


@pytest.fixture(scope="module")
def answering_reports(tmp_path_factory):
    """The probe's report on the answering model, with the golds as written and shifted by one row."""
    tmp = tmp_path_factory.mktemp("answering")
    model_dir = build_answering_model(tmp / "model")
    golds = [gold for _, gold in ANSWERING_ROWS]
    reports = {}
    for name, row_golds in (("aligned", golds), ("shifted", golds[1:] + golds[:1])):
        data = write_answering_data(tmp / name, row_golds)
        recipe = write_recipe(
            tmp / f"{name}.yaml", str(model_dir), dataset_source=str(data), system_prompt=ANSWERING_SYSTEM_PROMPT,
            num_generations=ANSWERING_G, per_device_train_batch_size=ANSWERING_G, temperature=1.0,
            max_train_samples=len(ANSWERING_ROWS), reward_funcs=["correctness_strict", "format"],
            reward_weights=[1.0, 0.5])
        out, stdout = tmp / f"{name}.json", io.StringIO()
        with contextlib.redirect_stdout(stdout):
            assert probe_main(["--config", str(recipe), "--num-prompts", str(len(ANSWERING_ROWS)), "--output", str(out),
                               "--no-progress"]) == 0
        reports[name] = {"json": json.loads(out.read_text()), "stdout": stdout.getvalue(), "golds": row_golds}
    return reports


def judged_here(report: dict, golds: list[int]) -> list[bool]:
    """Each sample's correctness judged by this test from its completion and the gold of its own dataset row: only
    '#### N' counts (the strict reward's rule)."""
    verdicts = []
    for s in report["samples"]:
        match = HASH_ANSWER.fullmatch(s["completion"].strip())
        verdicts.append(match is not None and int(match.group(1)) == golds[s["prompt"]])
    return verdicts


def group_kinds(verdicts: list[bool], group_size: int) -> list[str]:
    groups = [verdicts[i:i + group_size] for i in range(0, len(verdicts), group_size)]
    return ["all_right" if all(g) else "all_wrong" if not any(g) else "mixed" for g in groups]


def test_real_counts_pass_at_1_group_kinds_and_reward_means(answering_reports):
    """Right, wrong and mixed groups from real sampling: the probe's figures are the test's own judgement of each
    completion against the gold of its row, and none of them is 0."""
    r = answering_reports["aligned"]["json"]
    golds = answering_reports["aligned"]["golds"]
    samples, f = r["samples"], r["figures"]
    assert r["correctness"] == {"judge": repr(correctness_reward_strict), "metric": correctness_reward_strict.metric,
                                "reward_func": "correctness_reward_strict"}
    texts = {s["completion"] for s in samples}
    assert "#### 7" in texts and "The answer is 7" in texts  # the model answers both ways

    verdicts = judged_here(r, golds)
    assert [s["correct"] for s in samples] == verdicts
    assert [s["correct"] for s in samples] == [bool(s["rewards"]["correctness_reward_strict"]) for s in samples]
    assert f["pass_at_1"] == pytest.approx(np.mean(verdicts)) and 0 < f["pass_at_1"] < 1
    kinds = group_kinds(verdicts, ANSWERING_G)
    n = len(kinds)
    assert n == len(ANSWERING_ROWS)
    assert (f["groups_all_right"], f["groups_mixed"], f["groups_all_wrong"]) == pytest.approx(
        (kinds.count("all_right") / n, kinds.count("mixed") / n, kinds.count("all_wrong") / n))
    # the design: apples with gold 7 all right, other apples all wrong (their answer is certain), boxes with gold 9
    # all wrong; boxes with gold 7 mixed unless their 4 coins all fell alike (seeded)
    by_row = dict(zip((samples[i]["prompt"] for i in range(0, len(samples), ANSWERING_G)), kinds))
    for k, row in enumerate(ANSWERING_ROWS):
        if row != ("boxes", 7):
            assert by_row[k] == ("all_right" if row == ("apples", 7) else "all_wrong"), (k, row)
    assert f["groups_all_right"] >= 2 / n and f["groups_mixed"] >= 1 / n and f["groups_all_wrong"] >= 26 / n
    hashes = np.mean([s["completion"].startswith("####") for s in samples])
    assert f["declare_rate"] == pytest.approx(hashes)  # strict: 'The answer is 7' declares nothing
    assert f["reward_mean"]["correctness_reward_strict"] == pytest.approx(f["pass_at_1"])
    assert f["reward_mean"]["format_reward"] == pytest.approx(hashes) and 0 < hashes < 1
    assert f["truncated_rate"] == 0
    assert f["reward_none_rate"] == {"correctness_reward_strict": 0.0, "format_reward": 0.0}
    out = answering_reports["aligned"]["stdout"]
    assert f"pass@1 ({correctness_reward_strict.metric})" in out and "the recipe's correctness_reward_strict" in out


def test_real_counts_recommendations(answering_reports):
    """At a pass@1 between ACCURACY_LOW and what a group of 4 needs, with most groups all wrong: a bigger group,
    easier problems and dynamic sampling on the recipe's own (strict) correctness reward."""
    r = answering_reports["aligned"]["json"]
    p = r["figures"]["pass_at_1"]
    assert doc.ACCURACY_LOW <= p < 1 - 0.5 ** (1 / ANSWERING_G)  # the branch this test is built on (seeded)
    recs = {x["setting"]: x for x in r["recommendations"] if x["setting"]}
    assert recs["num_generations"]["value"] == doc.group_size_for(p) > ANSWERING_G
    assert recs["max_solution_steps"]["value"] == 2
    assert recs["dynamic_sampling"]["value"] is True
    assert "dynamic_sampling_reward: correctness_reward_strict" in recs["dynamic_sampling"]["reason"]
    # apples groups are 4 identical completions: 12 of 32 groups, above IDENTICAL_HIGH
    assert ("temperature" in recs) == (r["figures"]["groups_identical"] > doc.IDENTICAL_HIGH)
    assert set(recs) <= {"num_generations", "max_solution_steps", "dynamic_sampling", "temperature"}


def test_real_counts_change_when_golds_are_shifted_by_one_row(answering_reports):
    """The same completions (same seed, same prompts) scored against golds shifted by one row: the figures change,
    and the per-row check above fails on them; a probe that misaligned golds with prompts could not pass it."""
    aligned, shifted = answering_reports["aligned"], answering_reports["shifted"]
    completions = [s["completion"] for s in aligned["json"]["samples"]]
    assert [s["completion"] for s in shifted["json"]["samples"]] == completions
    fa, fs = aligned["json"]["figures"], shifted["json"]["figures"]
    assert (fs["pass_at_1"], fs["groups_all_right"], fs["groups_mixed"]) != \
        (fa["pass_at_1"], fa["groups_all_right"], fa["groups_mixed"])
    apples_7 = [k for k, row in enumerate(ANSWERING_ROWS) if row == ("apples", 7)]
    for report, right in ((aligned, True), (shifted, False)):  # their answer is certain: only the gold decides
        assert {s["correct"] for s in report["json"]["samples"] if s["prompt"] in apples_7} == {right}
    assert [s["correct"] for s in shifted["json"]["samples"]] == judged_here(shifted["json"], shifted["golds"])
    assert judged_here(shifted["json"], aligned["golds"]) != [s["correct"] for s in shifted["json"]["samples"]]
