"""Does GRPO learn on this machine, and does GSM8KGRPOTrainer learn at least as fast as plain TRL?

    python benchmarks/learning_cpu.py            # ~1 h 45 min on 2 cores; writes benchmarks/learning_cpu.md + .png

Real SmolLM2-135M-Instruct, GSM8K train, the settings of ``recipes/smollm2-135m_cpu_demo.yaml`` (full fine-tune,
lr 1e-5, group 8, one prompt per step, 128 completion tokens, temperature 1, correctness + 0.5 x format, the
worked-example system prompt), ``max_steps`` lifted and a wall-clock budget instead:

1. held-out GSM8K test accuracy of the untrained model (``trl_gsm8k.evaluate``, greedy, the recipe's prompt);
2. plain TRL ``GRPOTrainer`` (``GRPOConfig``), then ``GSM8KGRPOTrainer`` (``GSM8KGRPOConfig``), the same seed,
   data order, rewards and budget, each in its own child process that has the machine to itself; every logged
   step is written with its wall-clock time;
3. the same evaluation of each trained model;
4. the report: declare rate and training accuracy over wall-clock minutes for both (one plot), held-out before/after.

Dynamic sampling (the ``dyn*`` arms): a settings study at a short budget, then the chosen arm against plain TRL::

    python benchmarks/learning_cpu.py --budget-min 10 --arms plain,dyn,dyn_easy,dyn_easy_g16,dyn_easy_4p \
        --skip-eval --out benchmarks/out/study --report benchmarks/learning_cpu_study.md
    python benchmarks/learning_cpu.py --budget-min 60 --arms plain,ARM --easy-eval \
        --out benchmarks/out/learning_cpu_dynamic --report benchmarks/learning_cpu_dynamic.md

The report then also counts, per hour, the groups with variance on correctness that reached the loss and the correct
completions sampled (``CorrectnessCounter`` wraps the correctness reward; with dynamic sampling the kept groups come
from ``sampling/groups_kept``), and ``--easy-eval`` adds the held-out test problems of ≤ 2 calculation steps.

Every phase skips what is already on disk under ``--out`` (delete a phase's folder to redo it), so an interrupted
run continues where it stopped. Both trainers run without DeepSpeed (one process, torch AdamW): the comparison is
of the trainers, and the launch path is benchmarked in ``benchmarks/demo.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes" / "smollm2-135m_cpu_demo.yaml"
ARMS = {"plain": "plain TRL `GRPOTrainer`", "ours": "`GSM8KGRPOTrainer`",
        "ours_steps": "`GSM8KGRPOTrainer` + `steps` reward",
        "ours_easy": "`GSM8KGRPOTrainer` + `steps` reward, problems of ≤ 2 steps",
        "dyn": "`GSM8KGRPOTrainer` + dynamic sampling",
        "dyn_easy": "`GSM8KGRPOTrainer` + dynamic sampling, problems of ≤ 2 steps",
        "dyn_easy_g16": "`GSM8KGRPOTrainer` + dynamic sampling, ≤ 2 steps, group 16",
        "dyn_easy_4p": "`GSM8KGRPOTrainer` + dynamic sampling, ≤ 2 steps, 4 prompts per round",
        "dyn_easy_4p_fill": "`GSM8KGRPOTrainer` + dynamic sampling, ≤ 2 steps, 4 prompts per round, short batches "
                            "filled with trained groups",
        "ours_easy_4p": "`GSM8KGRPOTrainer`, ≤ 2 steps, 4 prompts per step, no dynamic sampling"}
WITH_STEPS = {"reward_funcs": ["correctness", "format", "steps"], "reward_weights": [1.0, 0.5, 0.5]}
DYNAMIC = {"dynamic_sampling": True, "max_sampling_rounds": 4}
RECIPE_CHANGES = {
    "ours_steps": WITH_STEPS, "ours_easy": {**WITH_STEPS, "max_solution_steps": 2},
    "dyn": DYNAMIC, "dyn_easy": {**DYNAMIC, "max_solution_steps": 2},
    "dyn_easy_g16": {**DYNAMIC, "max_solution_steps": 2, "num_generations": 16, "per_device_train_batch_size": 16},
    "dyn_easy_4p": {**DYNAMIC, "max_solution_steps": 2, "per_device_train_batch_size": 32},
    # Generation batch of 32 (4 prompts) trained in micro-batches of 8: one micro-batch of 32 sequences took the
    # process past the 24 GB of RAM of a 2-core CPU machine (OOM-killed after 11 steps).
    "dyn_easy_4p_fill": {**DYNAMIC, "max_sampling_rounds": 2, "dynamic_sampling_fill": "trained",
                         "max_solution_steps": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4},
    # dyn_easy_4p_fill without the filter: same trainer, data and generation batch, so the difference is the filter's.
    "ours_easy_4p": {"max_solution_steps": 2, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4},
}
"""What an arm changes in the recipe."""
INFORMATIVE = "bench/informative_groups"
"""Groups with variance on correctness that reached the loss (cumulative; logged by the benchmark, not the trainer)."""
GENERATED_CORRECT = "bench/correct_completions"
"""Correct completions sampled in training (cumulative)."""
GENERATED = "bench/completions"
"""Completions sampled in training (cumulative)."""
DECLARE = "rewards/format_reward/mean"
CORRECT = "rewards/correctness_reward/mean"
GOAL_DECLARE = 0.80
EASY_EVAL_STEPS = 2
"""Held-out subset for a 135M model: the 456 test problems whose gold has at most this many calculation results."""
READING = "## Reading (by hand)"


# --- training (child process) ------------------------------------------------------------------------------------


def train_arm(arm: str, out: Path, budget_s: float, model: str | None) -> None:
    import yaml
    from transformers import TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from trl_gsm8k.rewards import get_reward_funcs
    from trl_gsm8k.data import load_gsm8k
    from trl_gsm8k.models import resolve_model_path
    from trl_gsm8k.trainer import GSM8KGRPOConfig, GSM8KGRPOTrainer

    recipe = {**yaml.safe_load(RECIPE.read_text()), **RECIPE_CHANGES.get(arm, {})}
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if arm == "plain" else (GSM8KGRPOConfig, GSM8KGRPOTrainer)
    known = {f.name for f in fields(config_cls)}
    args = config_cls(**{
        **{k: v for k, v in recipe.items() if k in known and k != "dtype"},
        "output_dir": str(out / "run"), "max_steps": 100_000, "save_strategy": "no", "disable_tqdm": True,
        "model_init_kwargs": {"dtype": recipe.get("dtype", "float32")},
    })
    dataset = load_gsm8k("train", recipe["dataset_source"], "chat", recipe["system_prompt"],
                         max_solution_steps=recipe.get("max_solution_steps"))

    counter = CorrectnessCounter(get_reward_funcs(["correctness"])[0], recipe["num_generations"])
    reward_funcs = [counter if name == "correctness" else func
                    for name, func in zip(recipe["reward_funcs"], get_reward_funcs(recipe["reward_funcs"]))]

    class Clock(TrainerCallback):
        """Every log line with its wall-clock time; stops after the first step that ends past the budget."""

        def __init__(self) -> None:
            self.t0 = 0.0
            self.log = (out / "log.jsonl").open("w")

        def on_train_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **k):
            kept = (logs or {}).get("sampling/groups_kept")  # dynamic sampling: only kept groups reach the loss
            counter.informative_total += counter.informative_pending if kept is None else kept
            counter.informative_pending = 0
            self.log.write(json.dumps({"step": state.global_step, "wall_s": time.perf_counter() - self.t0,
                                       INFORMATIVE: int(counter.informative_total), GENERATED_CORRECT: counter.correct,
                                       GENERATED: counter.scored,
                                       **(logs or {})}) + "\n")
            self.log.flush()

        def on_step_end(self, args, state, control, **k):
            if time.perf_counter() - self.t0 >= budget_s:
                control.should_training_stop = True
            return control

    set_seed(args.seed)
    trainer = trainer_cls(model=model or resolve_model_path(recipe["model_name_or_path"]),
                          reward_funcs=reward_funcs, args=args,
                          train_dataset=dataset, callbacks=[Clock()])
    trainer.train()
    trainer.save_model(str(out / "model"))
    (out / "done.json").write_text(json.dumps({"arm": arm, "budget_s": budget_s, "steps": trainer.state.global_step,
                                               "trainer": trainer_cls.__name__}) + "\n")


class CorrectnessCounter:
    """The correctness reward, unchanged, counting what it scores: correct completions, and groups (G consecutive
    completions of one prompt, TRL's layout in one process) with variance on it."""

    def __init__(self, reward, num_generations: int) -> None:
        self.reward, self.num_generations = reward, num_generations
        self.__name__ = reward.__name__
        self.correct = self.scored = self.informative_pending = self.informative_total = 0

    def __call__(self, completions, **kwargs):
        scores = self.reward(completions, **kwargs)
        self.correct += sum(s == 1 for s in scores)
        self.scored += len(scores)
        for start in range(0, len(scores), self.num_generations):
            group = {s for s in scores[start:start + self.num_generations] if s is not None}
            self.informative_pending += len(group) > 1
        return scores


# --- phases ------------------------------------------------------------------------------------------------------


def evaluate(model: str, out: Path, limit: int | None, max_solution_steps: int | None = None) -> dict:
    from trl_gsm8k import evaluate as ev

    result = out / ("eval.json" if max_solution_steps is None else f"eval_steps{max_solution_steps}.json")
    if not result.is_file():
        out.mkdir(parents=True, exist_ok=True)
        subset = ["--limit", str(limit)] if max_solution_steps is None else [
            "--max-solution-steps", str(max_solution_steps)]
        if ev.main(["--model", model, "--split", "test", *subset, "--max-new-tokens", "256",
                    "--batch-size", "32", "--threads", str(os.cpu_count() or 1), "--recipe", str(RECIPE),
                    "--output", str(result)]):
            raise SystemExit(f"evaluation of {model} failed (its error is above)")
    summary = json.loads(result.read_text())["summary"]
    items = [json.loads(line) for line in result.with_suffix(".jsonl").read_text().splitlines()]
    items = items[:limit] if max_solution_steps is None else items
    strict = [a for item in items for a in item["extracted"]["strict"]]
    return {**summary, "strict_declare_rate": sum(a is not None for a in strict) / len(strict)}


def train(arm: str, out: Path, budget_s: float, model: str | None) -> list[dict]:
    if not (out / "done.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "--train-arm", arm, "--out", str(out), "--budget-s", str(budget_s)]
        subprocess.run(command + (["--model", model] if model else []), check=True)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# --- report: pure functions ---------------------------------------------------------------------------------------


def step_rows(log: list[dict]) -> list[dict]:
    """The per-step training log lines (TRL also logs a final summary line without reward metrics)."""
    return [row for row in log if DECLARE in row]


def window_means(rows: list[dict], key: str, minutes: float, budget_min: float) -> list[float | None]:
    """Mean of ``key`` over steps ending in each ``minutes``-wide window of wall-clock time."""
    n = math.ceil(budget_min / minutes)
    buckets: list[list[float]] = [[] for _ in range(n)]
    for row in rows:
        buckets[min(int(row["wall_s"] / 60 / minutes), n - 1)].append(row[key])
    return [sum(b) / len(b) if b else None for b in buckets]


def first_time_above(rows: list[dict], key: str, threshold: float, span: int = 10) -> float | None:
    """Wall-clock minutes when the mean of ``key`` over the last ``span`` steps first exceeds ``threshold``."""
    for i in range(span - 1, len(rows)):
        if sum(r[key] for r in rows[i - span + 1:i + 1]) / span > threshold:
            return rows[i]["wall_s"] / 60
    return None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return ((centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n))


def counts_signal(logs: dict[str, list[dict]]) -> bool:
    """Whether every arm's log has the benchmark's learning-signal counts (logs from before they existed do not)."""
    return all(INFORMATIVE in step_rows(log)[0] for log in logs.values())


def rolling(values: list[float], span: int) -> list[float]:
    return [sum(values[max(0, i - span + 1):i + 1]) / len(values[max(0, i - span + 1):i + 1])
            for i in range(len(values))]


def plot(logs: dict[str, list[dict]], budget_min: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal = counts_signal(logs)
    fig, axes = plt.subplots(1, 3 if signal else 2, figsize=(18 if signal else 12, 4.8))
    for (arm, log), colour in zip(logs.items(), ("tab:gray", "tab:blue", "tab:green", "tab:purple", "tab:orange",
                                                 "tab:red", "tab:brown", "tab:olive")):
        rows = step_rows(log)
        minutes = [r["wall_s"] / 60 for r in rows]
        for ax, key in zip(axes, (DECLARE, CORRECT)):
            values = [r[key] for r in rows]
            ax.scatter(minutes, values, s=8, alpha=0.25, color=colour)
            ax.plot(minutes, rolling(values, 10), color=colour, label=f"{ARMS[arm].replace('`', '')} (10-step mean)")
        if signal:  # the learning signal itself, cumulative: what the per-hour table divides by the hours
            axes[2].step(minutes, [r[GENERATED_CORRECT] for r in rows], where="post", color=colour)
            axes[2].step(minutes, [r[INFORMATIVE] for r in rows], where="post", color=colour, ls="--")
    axes[0].axhline(GOAL_DECLARE, ls=":", color="tab:red", lw=1, label="goal: 80 %")
    axes[0].set(title="Declare rate: completions ending '#### <number>'", ylabel="fraction of the group")
    axes[1].set(title="Training accuracy: correct completions", ylabel="fraction of the group")
    top = max([r[CORRECT] for log in logs.values() for r in step_rows(log)] + [0.25])
    for ax, ymax in zip(axes, (1.0, top)):
        ax.set(xlabel="wall-clock minutes", xlim=(0, budget_min * 1.02), ylim=(-0.03 * ymax, 1.03 * ymax))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=8)
    if signal:
        axes[2].set(title="Cumulative: correct completions (solid),\ninformative groups (dashed)",
                    xlabel="wall-clock minutes", ylabel="count", xlim=(0, budget_min * 1.02))
        axes[2].grid(alpha=0.3)
    fig.suptitle("SmolLM2-135M-Instruct, GRPO on GSM8K train, 2 CPU cores, same seed and budget")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(logs: dict[str, list[dict]], before: dict, after: dict[str, dict], budget_min: float, limit: int,
           command: str, machine: str, started: str, image: str, easy_before: dict | None = None,
           easy_after: dict[str, dict] | None = None) -> str:
    import yaml

    group = yaml.safe_load(RECIPE.read_text())["num_generations"]
    win = 5.0
    heads = [f"{i * win:.0f}–{min((i + 1) * win, budget_min):.0f}" for i in range(math.ceil(budget_min / win))]
    fmt = lambda v: "–" if v is None else f"{100 * v:.0f} %"  # noqa: E731
    lines = ["| trainer | steps | s/step | " + " | ".join(f"declare {h} min" for h in heads) +
             " | 10-step declare > 80 % at | correct completions |",
             "|---|---:|---:|" + "---:|" * len(heads) + "---:|---:|"]
    for arm, log in logs.items():
        rows = step_rows(log)
        hit = first_time_above(rows, DECLARE, GOAL_DECLARE)
        correct = sum(r[CORRECT] for r in rows) * group
        sampled = len(rows) * group
        if GENERATED in rows[-1]:  # counted by the benchmark: right with refill rounds and several prompts per step
            correct, sampled = rows[-1][GENERATED_CORRECT], rows[-1][GENERATED]
        lines.append(
            f"| {ARMS[arm]} | {len(rows)} | {rows[-1]['wall_s'] / len(rows):.1f} | "
            + " | ".join(fmt(v) for v in window_means(rows, DECLARE, win, budget_min))
            + f" | {'never' if hit is None else f'{hit:.1f} min'} | {correct:.0f} of {sampled} |")
    evals = [] if before is None else [
        f"## Held-out accuracy: GSM8K test, first {limit} problems", "",
        "`python -m trl_gsm8k.evaluate --split test --limit "
        f"{limit} --max-new-tokens 256 --recipe recipes/smollm2-135m_cpu_demo.yaml` (greedy, the training prompt "
        "with its worked example), before training and after each trainer's run.", "",
        *eval_rows([("untrained", before)] + [(f"after {ARMS[a]}", after[a]) for a in after]), ""]
    signal = signal_table(logs) if counts_signal(logs) else []
    easy_evals = []
    if easy_after:
        easy_evals = [f"## Held-out accuracy: the {easy_before['num_items']} GSM8K test problems of ≤ "
                      f"{EASY_EVAL_STEPS} calculation steps", "",
                      "The same evaluation on every test problem whose gold solution has at most "
                      f"{EASY_EVAL_STEPS} distinct calculation results (`--max-solution-steps {EASY_EVAL_STEPS}`): "
                      "more sensitive for a 135M model than the full test.", "",
                      *eval_rows([("untrained", easy_before)] + [(f"after {ARMS[a]}", easy_after[a]) for a in easy_after]),
                      ""]
    easy = "ours_easy" in logs
    easy_order = " (the `≤ 2 steps` arm: its subset's)" if easy else ""
    easy_data = ("; the `≤ 2 steps` arm also trains only on the 2,734 train problems whose gold solution has at "
                 "most 2 calculation steps, `max_solution_steps: 2`") if easy else ""
    return "\n".join([
        "# CPU learning benchmark: " + ("plain TRL vs GSM8KGRPOTrainer" if "plain" in logs else
                                        " vs ".join(ARMS[a].replace("`", "") for a in logs))
        + " on SmolLM2-135M-Instruct", "",
        f"Command: `{command}` (started {started})", "", f"Machine: {machine}", "",
        "## Training at equal wall-clock budget", "",
        f"Budget {budget_min:g} min per trainer, same seed (42), same prompts in the same order{easy_order}, "
        "same rewards (`correctness` + 0.5 × `format`; the `steps` arm adds 0.5 × `steps_reward`, partial credit for "
        f"the gold solution's intermediate results{easy_data}), settings of `recipes/smollm2-135m_cpu_demo.yaml` "
        "(full fine-tune, lr 1e-5, group 8, one prompt per step, 128 completion tokens, temperature 1.0, worked-example system prompt); "
        "declare rate = `rewards/format_reward/mean`, the share of a step's 8 completions ending `#### <number>`; "
        "mean over the steps that ended in each 5-minute window."
        + "".join(f" {ARMS[a]} changes the recipe: `{json.dumps(RECIPE_CHANGES[a])}`." for a in logs
                  if a in RECIPE_CHANGES),
        "", *lines, "",
        f"![declare rate and training accuracy over wall-clock time]({image})", "",
        *signal, *evals, *easy_evals,
    ])


def eval_rows(named: list[tuple[str, dict]]) -> list[str]:
    rows = ["| model | strict pass@1 | 95 % interval | flexible pass@1 | declare rate | `#### N` declared | "
            "truncated | mean length |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in named:
        n, k = s["num_items"], round(s["strict_pass@1"] * s["num_items"])
        lo, hi = wilson(k, n)
        rows.append(f"| {name} | **{100 * s['strict_pass@1']:.1f} %** ({k}/{n}) | {100 * lo:.1f}–{100 * hi:.1f} % | "
                    f"{100 * s['flexible_pass@1']:.1f} % | {100 * s['declare_rate']:.1f} % | "
                    f"{100 * s['strict_declare_rate']:.1f} % | {100 * s['truncated_rate']:.1f} % | "
                    f"{s['mean_completion_tokens']:.0f} |")
    return rows


def signal_table(logs: dict[str, list[dict]]) -> list[str]:
    """Learning signal per hour: groups with correctness variance that reached the loss, correct completions
    sampled; ratios to the first arm (plain TRL when it ran)."""
    rates = {}
    for arm, log in logs.items():
        rows = step_rows(log)
        hours = rows[-1]["wall_s"] / 3600
        rates[arm] = (rows[-1][INFORMATIVE], rows[-1][GENERATED_CORRECT], hours)
    anchor = next(iter(rates))
    a_inf, a_cor, a_h = rates[anchor]
    ratio = lambda x, h, ax, ah: "–" if not ax else f"{(x / h) / (ax / ah):.1f}×"  # noqa: E731
    lines = ["## Learning signal", "",
             "Groups with variance on correctness that reached the loss (with dynamic sampling: the kept groups) and "
             f"correct completions sampled in training, per hour of wall-clock; ratio to {ARMS[anchor]}.", "",
             "| trainer | informative groups | per hour | ratio | correct completions | per hour | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for arm, (inf, cor, h) in rates.items():
        lines.append(f"| {ARMS[arm]} | {inf} | {inf / h:.1f} | {ratio(inf, h, a_inf, a_h)} | {cor} | {cor / h:.1f} | "
                     f"{ratio(cor, h, a_cor, a_h)} |")
    return lines + [""]


def machine() -> str:
    """The trainer benchmark's machine line, with torch's thread count (what a CPU step time depends on)."""
    import torch

    from trainer import machine as trainer_machine  # benchmarks/trainer.py, beside this file

    return trainer_machine().replace(f"torch {torch.__version__}",
                                     f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-min", type=float, default=30.0, help="wall-clock minutes of training per trainer")
    parser.add_argument("--eval-limit", type=int, default=250, help="held-out test problems evaluated")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "learning_cpu"))
    parser.add_argument("--report", default=str(ROOT / "benchmarks" / "learning_cpu.md"))
    parser.add_argument("--arms", default="plain,ours", help=f"comma-separated, run in this order: {', '.join(ARMS)}")
    parser.add_argument("--model", help="another model directory (a quick check of this script on a tiny model)")
    parser.add_argument("--skip-eval", action="store_true",
                        help="train and report the learning signal only (a settings study)")
    parser.add_argument("--easy-eval", action="store_true",
                        help=f"also evaluate on every test problem of <= {EASY_EVAL_STEPS} calculation steps")
    parser.add_argument("--train-arm", choices=tuple(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, help=argparse.SUPPRESS)
    a = parser.parse_args()
    out = Path(a.out)
    if a.train_arm:
        return train_arm(a.train_arm, out, a.budget_s, a.model)

    out.mkdir(parents=True, exist_ok=True)
    if not (out / "started.txt").is_file():  # the first invocation's; later ones resume it
        (out / "started.txt").write_text(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    started = (out / "started.txt").read_text()
    base = a.model or "smollm2-135m-instruct"
    arms = a.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}: choose from {', '.join(ARMS)}")
    logs = {arm: train(arm, out / arm, a.budget_min * 60, a.model) for arm in arms}  # the timed part first
    before = None if a.skip_eval else evaluate(base, out / "before", a.eval_limit)
    after = {} if a.skip_eval else {arm: evaluate(str(out / arm / "model"), out / arm, a.eval_limit) for arm in arms}
    easy_before = easy_after = None
    if a.easy_eval and not a.skip_eval:
        easy_before = evaluate(base, out / "before", None, EASY_EVAL_STEPS)
        easy_after = {arm: evaluate(str(out / arm / "model"), out / arm, None, EASY_EVAL_STEPS) for arm in arms}
    report_path = Path(a.report)
    plot(logs, a.budget_min, report_path.with_suffix(".png"))
    command = "python benchmarks/learning_cpu.py" + " ".join(
        [""] + [f"--{k.replace('_', '-')} {v}" for k, v in (("budget_min", a.budget_min), ("eval_limit", a.eval_limit),
                                                                 ("arms", a.arms), ("out", a.out), ("report", a.report))
                if v != parser.get_default(k)] + [f"--{flag}" for flag in ("easy-eval", "skip-eval")
                                                   if getattr(a, flag.replace("-", "_"))])
    # A hand-written reading of the figures below this heading survives a rerun of the report.
    kept = report_path.read_text().partition(READING)[2] if report_path.is_file() else ""
    text = report(logs, before, after, a.budget_min, a.eval_limit, command, machine(), started,
                  report_path.with_suffix(".png").name, easy_before, easy_after)
    report_path.write_text(text + (f"\n{READING}{kept}" if kept else ""))
    print(report_path.read_text())


if __name__ == "__main__":
    main()
