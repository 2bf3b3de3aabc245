"""The run doctor's live diagnoses: each triggered by metrics that show it, none on a healthy run, once per condition;
one real training run through `python -m trl_gsm8k.train` that puts a diagnosis into run_info.json."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer, TrainerControl, TrainerState

from trl_gsm8k import doctor as doc
from trl_gsm8k.doctor import MIN_STEPS, Doctor, group_size_for, recommend
from trl_gsm8k.rewards import CorrectnessReward, ShapedReward, correctness_reward_strict, format_reward

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"

HEALTHY = {  # a run that learns: some truncation, a third of groups silent, format and reward moving
    "loss": 0.031, "grad_norm": 0.4, "completions/clipped_ratio": 0.05, "frac_zero_std_groups": 0.3,
    "frac_reward_zero_std": 0.3, "rewards/format_reward/mean": 0.4, "rewards/correctness_reward/mean": 0.3,
    "reward/mean": 0.5, "reward": 0.5, "policy/entropy": 0.9, "entropy": 0.9, "accuracy": 0.3,
    "timing/step_seconds": 10.0, "timing/generation_seconds": 4.0, "generation/tokens_per_second": 60.0,
}
ARGS = SimpleNamespace(max_completion_length=128, beta=0.0, temperature=1.0, num_generations=8,
                       dynamic_sampling=False)


def feed(steps, doctor=None, args=ARGS):
    """Log each step's metrics to the callback as the Trainer does; returns the doctor."""
    doctor = doctor or Doctor()
    state, control = TrainerState(), TrainerControl()
    for step, logs in enumerate(steps, start=1):
        state.global_step = step
        doctor.on_log(args, state, control, logs=dict(logs))
    return doctor


def conditions(doctor):
    return [d["condition"] for d in doctor.diagnoses]


def test_healthy_run_has_no_diagnosis():
    doctor = feed([HEALTHY] * 20)
    assert doctor.diagnoses == []
    assert doctor.summary_lines()[0].startswith("Doctor: no problem found in the logged metrics (20 logged steps")


@pytest.mark.parametrize("logged", [0, 1, 2])
def test_the_doctor_says_when_it_cannot_judge(logged):
    """Too few logged steps for its window (the Qwen recipe logs every 10 steps): say so, not "no problem found",
    even with every completion cut."""
    args = SimpleNamespace(**vars(ARGS), logging_steps=10)
    doctor = feed([{**HEALTHY, "completions/clipped_ratio": 0.94, "frac_zero_std_groups": 1.0}] * logged, args=args)
    [line] = doctor.summary_lines()
    assert "cannot judge" in line and f"needs {MIN_STEPS} logged steps and got {logged}" in line
    assert "logging_steps: 1" in line
    if logged:  # it has seen the trainer's arguments
        assert f"logging_steps: 10 logs every 10 optimizer steps, so it needs {10 * MIN_STEPS} steps" in line


@pytest.mark.parametrize("changes, condition", [
    ({"completions/clipped_ratio": 0.75}, "truncation"),
    ({"frac_zero_std_groups": 1.0, "frac_reward_zero_std": 1.0}, "zero_variance_groups"),
    ({"rewards/format_reward/mean": 0.0}, "format_reward_zero"),
    ({"rewards/tag_format_reward/mean": 0.0}, "tag_format_reward_zero"),
    ({"loss": 0.0}, "loss_near_zero"),
])
def test_each_condition_is_found_once_with_its_value(changes, condition, caplog):
    with caplog.at_level(logging.WARNING, logger="trl_gsm8k.doctor"):
        doctor = feed([{**HEALTHY, **changes}] * 10)
    assert conditions(doctor) == [condition]
    found = doctor.diagnoses[0]
    assert found["step"] == doc.MIN_STEPS  # judged as soon as MIN_STEPS steps are logged
    metric = next(iter(changes))
    assert found["value"] == pytest.approx(changes[metric])
    assert found["advice"]
    warnings = [r for r in caplog.records if condition in r.getMessage()]
    assert len(warnings) == 1, "warned more than once"


def test_each_format_reward_is_judged_on_its_own_template():
    tags = feed([{**HEALTHY, "rewards/tag_format_reward/mean": 0.0}] * 5).diagnoses[0]["advice"]
    assert "<answer>N</answer>" in tags and "smollm2-135m_cpu_demo_tags.yaml" in tags and "drop tag_format " in tags
    hashes = feed([{**HEALTHY, "rewards/format_reward/mean": 0.0}] * 5).diagnoses[0]["advice"]
    assert "'#### <number>'" in hashes and "smollm2-135m_cpu_demo.yaml" in hashes and "drop format " in hashes
    # only the run's own format rewards are watched
    trainer = SimpleNamespace(reward_func_names=["correctness_reward", "tag_format_reward"])
    stuck = {**HEALTHY, "rewards/format_reward/mean": 0.0, "rewards/tag_format_reward/mean": 0.5}
    assert feed([stuck] * 5, doctor=Doctor(trainer)).diagnoses == []


@pytest.mark.parametrize("use_cpu", [True, False])
def test_generation_dominating_a_step_is_named_with_the_setting_that_batches_it(use_cpu):
    """Judged on the window's mean seconds (a step that trains on the buffer generates 0 s)."""
    args = SimpleNamespace(**vars(ARGS), per_device_train_batch_size=8, steps_per_generation=1,
                           gradient_accumulation_steps=1, use_vllm=False, use_cpu=use_cpu)
    steps = [{**HEALTHY, "timing/generation_seconds": g} for g in (3.0, 9.0)] * 3
    doctor = feed(steps, args=args)
    assert conditions(doctor) == ["generation_dominates"]
    found = doctor.diagnoses[0]
    assert found["step"] == 4 and found["value"] == pytest.approx(0.6)  # steps 1-3: 5 s of 10, not more than half
    advice = found["advice"]
    assert "generation takes 60 % of each step (8 completions per generate call at 60 tokens/s)" in advice
    assert "steps_per_generation: 2" in advice and "per_device_train_batch_size: 16" in advice
    assert ("use_vllm: true" in advice) is not use_cpu
    assert feed([{**HEALTHY, "timing/generation_seconds": 5.0}] * 5, args=args).diagnoses == []  # half: not dominant


def test_truncation_advice_names_the_limit_and_a_longer_one():
    doctor = feed([{**HEALTHY, "completions/clipped_ratio": 0.75}] * 5)
    advice = doctor.diagnoses[0]["advice"]
    assert "max_completion_length 128" in advice and "256" in advice


def test_zero_variance_advice_follows_accuracy():
    all_wrong = feed([{**HEALTHY, "frac_zero_std_groups": 1.0, "accuracy": 0.02}] * 5).diagnoses[0]["advice"]
    assert "max_solution_steps" in all_wrong and "dynamic_sampling: true" not in all_wrong
    some_right = feed([{**HEALTHY, "frac_zero_std_groups": 0.9, "accuracy": 0.1}] * 5).diagnoses[0]["advice"]
    assert "dynamic_sampling: true" in some_right
    none_right = feed([{**HEALTHY, "frac_zero_std_groups": 1.0, "accuracy": 0.0}] * 5).diagnoses[0]["advice"]
    assert "max_solution_steps" in none_right and "dynamic_sampling: true" not in none_right
    all_right = feed([{**HEALTHY, "frac_zero_std_groups": 1.0, "accuracy": 1.0}] * 5).diagnoses[0]["advice"]
    assert "harder" in all_right
    mixed = feed([{**HEALTHY, "frac_zero_std_groups": 0.9, "accuracy": 0.5}] * 5).diagnoses[0]["advice"]
    assert "temperature" in mixed


@pytest.mark.parametrize("reward", [correctness_reward_strict, ShapedReward(mode="strict"),
                                    CorrectnessReward(declarations=("answer_tag",))], ids=repr)
def test_zero_variance_advice_reads_the_accuracy_the_correctness_reward_logs(reward):
    """The strict reward logs accuracy_strict, not accuracy: at 0 % the advice is easier problems, never dynamic
    sampling (ACCURACY_LOW), and it names the metric it read. The metric comes from the reward's own log_metric call."""
    logged = {}
    scores = reward(["#### 7"] * 4, answer=["8"] * 4, log_metric=lambda k, v: logged.setdefault(k, []).append(v))
    assert scores[:1] in ([0.0], [0.1])  # all wrong (ShapedReward: 0.1 for the format)
    (metric, values), = ((k, v) for k, v in logged.items() if k.startswith("accuracy"))  # and declare_rate
    run = {k: v for k, v in HEALTHY.items() if k != "accuracy"}  # the run logs only its own reward's metric
    step = {**run, "frac_zero_std_groups": 1.0, metric: sum(values) / len(values)}
    trainer = SimpleNamespace(reward_funcs=[reward, format_reward],
                              reward_func_names=[reward.__name__, "format_reward"])
    advice = feed([step] * 5, doctor=Doctor(trainer)).diagnoses[0]["advice"]
    assert f"{metric} is 0 %" in advice and "max_solution_steps" in advice
    assert "dynamic_sampling: true" not in advice
    some_right = feed([{**step, metric: 0.1}] * 5, doctor=Doctor(trainer)).diagnoses[0]["advice"]
    assert "dynamic_sampling: true" in some_right


def test_zero_variance_advice_without_a_correctness_reward_does_not_guess_the_accuracy():
    trainer = SimpleNamespace(reward_funcs=[format_reward], reward_func_names=["format_reward"])
    run = {k: v for k, v in HEALTHY.items() if k not in ("accuracy", "rewards/correctness_reward/mean")}
    advice = feed([{**run, "frac_zero_std_groups": 1.0}] * 5, doctor=Doctor(trainer)).diagnoses[0]["advice"]
    assert "no correctness reward" in advice and "dynamic_sampling" not in advice


def test_truncation_just_below_the_threshold_is_not_flagged():
    assert feed([{**HEALTHY, "completions/clipped_ratio": doc.TRUNCATION_HIGH - 0.01}] * 10).diagnoses == []


def test_reward_collapse_after_a_peak():
    doctor = feed([{**HEALTHY, "reward/mean": 0.6}] * 8 + [{**HEALTHY, "reward/mean": 0.05}] * 8)
    assert conditions(doctor) == ["reward_collapse"]
    assert doctor.diagnoses[0]["step"] > 8
    # a reward that never rose does not collapse
    assert feed([{**HEALTHY, "reward/mean": 0.05, "reward": 0.05}] * 16).diagnoses == []


def test_entropy_collapse():
    doctor = feed([HEALTHY] * 6 + [{**HEALTHY, "policy/entropy": 0.05, "entropy": 0.05}] * 8)
    assert conditions(doctor) == ["entropy_collapse"]


def test_loss_zero_is_explained_and_a_zero_gradient_named():
    ok = feed([{**HEALTHY, "loss": 0.0}] * 5).diagnoses[0]["advice"]
    assert "beta 0" in ok and "gradient is not" in ok
    dead = feed([{**HEALTHY, "loss": 0.0, "grad_norm": 0.0}] * 5).diagnoses[0]["advice"]
    assert "grad_norm is 0" in dead
    with_kl = SimpleNamespace(**{**vars(ARGS), "beta": 0.04})
    assert feed([{**HEALTHY, "loss": 0.0}] * 5, args=with_kl).diagnoses == []


def test_think_never_closing_is_read_from_the_latest_completions():
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    # DeepSeek-R1-Distill's template ends the generation prompt inside <think>
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
    thinking = ["Let me think about 48 / 2 = 24 and then"] * 6 + ["ok.</think>\n#### 72"] * 2
    trainer = SimpleNamespace(_logs={"completion": thinking}, processing_class=tokenizer,
                              reward_func_names=["correctness_reward", "format_reward"])
    doctor = feed([HEALTHY] * 5, doctor=Doctor(trainer))
    assert conditions(doctor) == ["think_unclosed"]
    assert doctor.diagnoses[0]["value"] == pytest.approx(6 / 8)
    closed = SimpleNamespace(**{**vars(trainer), "_logs": {"completion": ["ok.</think>\n#### 72"] * 8}})
    assert feed([HEALTHY] * 5, doctor=Doctor(closed)).diagnoses == []


def test_group_size_recommendation_reaches_the_target_and_no_smaller_one_does():
    for p in (0.01, 0.03, 0.1, 0.2, 0.5, 0.9):
        g = group_size_for(p)
        assert 1 - (1 - p) ** g >= 0.5
        assert g == 1 or 1 - (1 - p) ** (g - 1) < 0.5
    figures = {"pass_at_1": 0.05, "truncated_rate": 0.0, "tokens_p95": 100, "groups_all_wrong": 0.3,
               "groups_all_right": 0.0, "groups_identical": 0.0}
    settings = {"num_generations": 4, "temperature": 1.0, "max_completion_length": 128}
    recs = {r["setting"]: r["value"] for r in recommend(figures, settings)}
    assert recs == {"num_generations": 14}  # 1 - 0.95^14 = 0.512, 0.95^13 -> 0.487


def test_dynamic_sampling_is_advised_only_once_correct_samples_are_not_rare():
    """Most groups all wrong: at pass@1 1.5 % (the CPU benchmark's, where dynamic sampling gave 1.15x the informative
    groups per hour and no accuracy gain) the advice is easier problems; at 10 % dynamic sampling too."""
    settings = {"num_generations": 8, "temperature": 1.0, "max_completion_length": 128, "max_solution_steps": None,
                "dynamic_sampling": False, "reward_funcs": ["correctness_reward", "format_reward"]}

    def recs(pass_at_1):
        figures = {"pass_at_1": pass_at_1, "truncated_rate": 0.0, "tokens_p95": 100, "groups_all_wrong": 0.6,
                   "groups_all_right": 0.0, "groups_identical": 0.0}
        return {r["setting"]: r["value"] for r in recommend(figures, settings)}

    assert "dynamic_sampling" not in recs(0.015) and recs(0.015)["max_solution_steps"] == 2
    assert recs(0.1)["dynamic_sampling"] is True
    settings["dynamic_sampling"] = True  # already on: not advised again
    assert "dynamic_sampling" not in recs(0.1)


def test_dynamic_sampling_advice_names_the_recipes_correctness_reward():
    """dynamic_sampling_reward defaults to correctness_reward: a recipe that scores with the strict one is told to
    decide on it (else training refuses to start); one whose correctness sits inside shaped_reward, to add one."""
    figures = {"pass_at_1": 0.1, "truncated_rate": 0.0, "tokens_p95": 100, "groups_all_wrong": 0.6,
               "groups_all_right": 0.0, "groups_identical": 0.0}
    base = {"num_generations": 8, "temperature": 1.0, "max_completion_length": 128, "max_solution_steps": None,
            "dynamic_sampling": False, "dynamic_sampling_reward": "correctness_reward"}

    def reason(**settings):
        recs = recommend(figures, {**base, **settings})
        return next(r["reason"] for r in recs if r["setting"] == "dynamic_sampling")

    assert "(" not in reason(correctness_reward="correctness_reward")
    strict = reason(correctness_reward="correctness_reward_strict")
    assert "dynamic_sampling_reward: correctness_reward_strict" in strict
    assert "add correctness to reward_funcs" in reason(correctness_reward=None)


def test_a_real_run_puts_the_diagnosis_in_run_info(tmp_path, tiny_model_dir):
    """max_completion_length 8 on a random model: every completion is cut; the run says so in run_info.json and in
    its summary, with the value the logged metric shows."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "model_name_or_path": tiny_model_dir, "max_train_samples": 16, "num_generations": 2,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_completion_length": 8,
        "max_steps": doc.MIN_STEPS, "bf16": False, "use_cpu": True, "learning_rate": 1e-3, "logging_steps": 1,
        "report_to": "none", "save_strategy": "no", "seed": 7, "activation_checkpointing": False,
        "reward_funcs": ["correctness", "format"],
    }))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trl_gsm8k.train", "--config", str(recipe), "--output_dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    diagnoses = {d["condition"]: d for d in json.loads((out / "run_info.json").read_text())["diagnoses"]}
    assert "truncation" in diagnoses, diagnoses
    logged = [h["completions/clipped_ratio"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "loss" in h]
    assert diagnoses["truncation"]["step"] == doc.MIN_STEPS
    assert diagnoses["truncation"]["value"] == pytest.approx(sum(logged) / len(logged))
    assert set(diagnoses["truncation"]) == {"condition", "step", "value", "advice"}
    assert "Doctor:" in proc.stdout and "truncation" in proc.stdout
    assert "doctor (step" in proc.stderr  # the live warning, during training
