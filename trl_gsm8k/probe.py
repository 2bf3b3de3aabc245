"""Will it learn? Sample a recipe's groups before training and say what would keep it from learning.

    python -m trl_gsm8k.probe --config RECIPE [--num-prompts 32] [--output probe.json] [--any_field value ...]

Builds the recipe's trainer exactly as training does (`trl_gsm8k.train.build_trainer`: model, prompt, generation
settings, reward functions), takes the first prompts training would see, and runs the trainer's own generation and
scoring (`_generate_and_score_completions`' round, with the model in train mode as in a training step) on
`num_generations` completions per prompt. Correctness is the recipe's own correctness reward's judgement (the first
among its `reward_funcs`, or inside one such as `shaped`: strict or flexible, its `declarations=`; the default
`correctness_reward` when the recipe has none), and the report names it. Reports per-sample and per-group
correctness, truncation, declare rate, completion lengths, unclosed `<think>` blocks and reward functions' `None`
rate, then the settings to change (`trl_gsm8k.doctor.recommend`). Runs as one process (plain `python -m`), on CPU
or one GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from .doctor import (
    ALL_WRONG_HIGH,
    IDENTICAL_HIGH,
    THINK_UNCLOSED_HIGH,
    TRUNCATION_TARGET,
    group_hit_probability,
    prompt_opens_think,
    recommend,
    unclosed_think,
)

DEFAULT_NUM_PROMPTS = 32
# Completions per generation call when --batch-size is not given (at least the recipe's own generation batch, which
# is known to fit): fewer, larger calls are what makes the probe fast on a CPU (measured on the demo model, 2 shared
# cores: 64 completions of 16 tokens took 324 s in calls of 8, 20 s in one call; benchmarks/probe.md), and 64
# completions of a 1.5B Qwen2 model's ~1,300 tokens need ~2.3 GB of KV cache in bf16.
DEFAULT_BATCH_COMPLETIONS = 64


class ProbeError(ValueError):
    """A probe that cannot run as asked: bad recipe, bad arguments."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100].

    >>> percentile([1, 2, 3, 4], 50), percentile([1, 2, 3, 4], 95)
    (2.5, 3.85)
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo), 6)


def first_prompts(trainer: Any, n: int) -> list[int]:
    """The dataset indices of the first ``n`` prompts training would see (the trainer's own seeded sampler)."""
    indices: list[int] = []
    seen: set[int] = set()
    for i in trainer._get_train_sampler():
        if i not in seen:
            seen.add(i)
            indices.append(int(i))
            if len(indices) == n:
                break
    return indices


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def probe(recipe: str, num_prompts: int = DEFAULT_NUM_PROMPTS, overrides: Sequence[str] = (),
          batch_size: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Sample and score ``num_prompts`` groups with the recipe's trainer; returns the report (see module doc)."""
    import torch
    from tqdm.auto import tqdm

    from .errors import LaunchError
    from .rewards import completion_text, correctness_reward, find_correctness
    from .config import parse
    from .train import build_trainer

    if num_prompts < 1:
        raise ProbeError(f"--num-prompts must be >= 1, got {num_prompts}.")
    if not os.path.isfile(recipe):
        raise ProbeError(f"recipe not found: {recipe}")
    try:
        script_args, training_args, model_args = parse(["--config", recipe, *overrides])
    except LaunchError as exc:
        raise ProbeError(str(exc)) from None
    G = training_args.num_generations
    if batch_size is None:
        batch_size = max(DEFAULT_BATCH_COMPLETIONS, training_args.generation_batch_size)
    if batch_size < G:
        raise ProbeError(f"--batch-size {batch_size} holds no whole group of num_generations ({G}) completions.")

    started, load_at_start = time.perf_counter(), _load_average()
    with tempfile.TemporaryDirectory(prefix="trl_gsm8k_probe_") as scratch:
        training_args.output_dir = scratch  # the probe writes nothing where the run will
        training_args.report_to = []
        trainer = build_trainer(script_args, training_args, model_args)
        if trainer.accelerator.num_processes != 1:
            raise ProbeError("run the probe as one process: python -m trl_gsm8k.probe ... (not accelerate launch).")
        load_s = time.perf_counter() - started
        indices = first_prompts(trainer, num_prompts)
        dataset = trainer.train_dataset

        captured: list[tuple[list, list, Any]] = []
        score = trainer._calculate_rewards

        def capture(inputs, prompts, completions, completion_ids_list):  # what the rewards saw, as they saw it
            rewards = score(inputs, prompts, completions, completion_ids_list)
            captured.append((list(completions), [list(ids) for ids in completion_ids_list], rewards.detach().cpu()))
            return rewards

        trainer._calculate_rewards = capture
        trainer.model.train()  # a training step samples in train mode
        per_call = max(1, batch_size // G)
        rows_of: list[dict] = []
        sample_started = time.perf_counter()
        bar = tqdm(total=len(indices), desc="probe", unit="prompt", disable=not progress)
        try:
            for start in range(0, len(indices), per_call):
                chunk = indices[start:start + per_call]
                rows = [dataset[i] for i in chunk for _ in range(G)]
                with torch.no_grad():
                    trainer._generate_and_score_round(rows)
                rows_of.extend(rows)
                bar.update(len(chunk))
        finally:
            bar.close()
            trainer._calculate_rewards = score
        sample_s = time.perf_counter() - sample_started
        eos_and_pad = {*trainer.eos_token_ids, trainer.processing_class.pad_token_id}
        opens_think = prompt_opens_think(trainer.processing_class)
        func_names = list(trainer.reward_func_names)
        weights = trainer.reward_weights.tolist()
        found = find_correctness(trainer.reward_funcs)
        standalone = found is not None and trainer.reward_funcs[found[0]] is found[1]

    completions = [c for batch in captured for c in batch[0]]
    ids = [i for batch in captured for i in batch[1]]
    rewards = torch.cat([batch[2] for batch in captured]).tolist()
    texts = [completion_text(c) for c in completions]
    # Judged as training judges: the recipe's correctness reward, given every column but the prompt, as TRL does.
    judge = found[1] if found else correctness_reward
    columns = {key: [row[key] for row in rows_of] for key in (rows_of[0] if rows_of else {}) if key != "prompt"}
    correct = judge(completions, **columns)
    correctness = {"judge": repr(judge), "metric": judge.metric,
                   "reward_func": func_names[found[0]] if found else None}
    from .answers import extract_answer

    samples = []
    for k, (text, tok, per_func, ok) in enumerate(zip(texts, ids, rewards, correct)):
        samples.append({
            "prompt": indices[k // G], "group": k // G, "completion": text, "tokens": len(tok),
            "truncated": bool(tok) and tok[-1] not in eos_and_pad,
            "declared": extract_answer(text, judge.mode, judge.declarations) is not None, "correct": ok,
            "unclosed_think": unclosed_think(text, opens_think),
            "rewards": {name: _none_if_nan(v) for name, v in zip(func_names, per_func)},
            "reward": _total_reward(per_func, weights),
        })
    figures = compute_figures(samples, G, func_names)
    settings = {
        "num_generations": G, "temperature": training_args.temperature, "top_p": training_args.top_p,
        "max_completion_length": training_args.max_completion_length,
        "max_solution_steps": script_args.max_solution_steps, "dynamic_sampling": training_args.dynamic_sampling,
        "dynamic_sampling_reward": training_args.dynamic_sampling_reward,
        "reward_funcs": func_names, "reward_weights": weights,
        # the function among reward_funcs that is the correctness reward itself (None: none, or one inside shaped)
        "correctness_reward": correctness["reward_func"] if standalone else None,
    }
    return {
        "recipe": recipe, "overrides": list(overrides), "model": model_args.model_name_or_path,
        "prompt_indices": indices, "correctness": correctness, "settings": settings, "figures": figures,
        "recommendations": recommend(figures, settings), "samples": samples,
        "seconds": {"load": round(load_s, 1), "sampling": round(sample_s, 1),
                    "total": round(time.perf_counter() - started, 1)},
        "machine": {**machine(), "load_average_at_start": load_at_start},
    }


def _total_reward(per_func: Sequence[float], weights: Sequence[float]) -> float | None:
    """The weighted sum training uses (None where every function returned None)."""
    if all(math.isnan(v) for v in per_func):
        return None
    return sum(w * v for w, v in zip(weights, per_func) if not math.isnan(v))


def compute_figures(samples: Sequence[dict], group_size: int, func_names: Sequence[str]) -> dict[str, Any]:
    """The probe's figures from its per-sample records (consecutive groups of ``group_size``)."""
    n = len(samples)
    groups = [samples[i:i + group_size] for i in range(0, n, group_size)]
    graded = [s["correct"] for s in samples if s["correct"] is not None]
    pass_at_1 = sum(graded) / len(graded) if graded else 0.0

    def share(pred) -> float:
        return sum(1 for g in groups if pred(g)) / len(groups) if groups else 0.0

    def gradable(g):
        return [s["correct"] for s in g if s["correct"] is not None]

    tokens = [s["tokens"] for s in samples]
    return {
        "completions": n, "groups": len(groups),
        "pass_at_1": pass_at_1,
        "p_group_has_correct": group_hit_probability(pass_at_1, group_size),
        "groups_all_wrong": share(lambda g: gradable(g) and not any(gradable(g))),
        "groups_all_right": share(lambda g: gradable(g) and all(gradable(g))),
        "groups_mixed": share(lambda g: len(set(gradable(g))) > 1),
        "groups_zero_reward_std": share(lambda g: len({s["reward"] for s in g if s["reward"] is not None}) <= 1),
        "groups_identical": share(lambda g: len({s["completion"] for s in g}) == 1),
        "truncated_rate": sum(s["truncated"] for s in samples) / n if n else 0.0,
        "declare_rate": sum(s["declared"] for s in samples) / n if n else 0.0,
        "unclosed_think_rate": sum(s["unclosed_think"] for s in samples) / n if n else 0.0,
        "tokens_p50": percentile(tokens, 50), "tokens_p95": percentile(tokens, 95),
        "reward_none_rate": {name: sum(s["rewards"][name] is None for s in samples) / n if n else 0.0
                             for name in func_names},
        "reward_mean": {name: _mean([s["rewards"][name] for s in samples]) for name in func_names},
    }


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    info["load_average"] = _load_average()
    return info


def _load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: on a shared machine, how many cores the probe really had."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _judged_by(correctness: dict[str, Any]) -> str:
    """Which correctness reward judged pass@1, and the accuracy metric training will log for it."""
    where = f"the recipe's {correctness['reward_func']}" if correctness["reward_func"] else \
        "the default: no correctness reward among the recipe's reward_funcs"
    return f"correct = {correctness['judge']} ({where}; training logs it as {correctness['metric']})"


def format_report(report: dict[str, Any]) -> str:
    f, s = report["figures"], report["settings"]
    judge_metric = report["correctness"]["metric"]
    pct = lambda x: f"{100 * x:5.1f} %"  # noqa: E731
    trunc_note = f"   (> {TRUNCATION_TARGET:.0%}: p95 is capped, the real one is longer)" \
        if f["truncated_rate"] > TRUNCATION_TARGET else ""
    lines = [
        f"{report['recipe']}: {report['model']}, {f['groups']} prompts x {s['num_generations']} completions, "
        f"T {s['temperature']:g}, top_p {s['top_p']:g}, max_completion_length {s['max_completion_length']}, "
        f"rewards {', '.join(s['reward_funcs'])}",
        _judged_by(report["correctness"]),
        "",
        f"  {'pass@1 (' + judge_metric + ')':<32} {pct(f['pass_at_1'])}   P(group has a correct one) "
        f"{f['p_group_has_correct']:.2f}",
        f"  groups all wrong                 {pct(f['groups_all_wrong'])}" +
        ("   <- teach nothing" if f["groups_all_wrong"] > ALL_WRONG_HIGH else ""),
        f"  groups all right                 {pct(f['groups_all_right'])}",
        f"  groups mixed                     {pct(f['groups_mixed'])}",
        f"  groups with zero reward variance {pct(f['groups_zero_reward_std'])}   (advantage 0)",
        f"  groups of identical completions  {pct(f['groups_identical'])}" +
        ("   <- sampling too cold" if f["groups_identical"] > IDENTICAL_HIGH else ""),
        f"  truncated (no EOS)               {pct(f['truncated_rate'])}{trunc_note}",
        f"  declare an answer                {pct(f['declare_rate'])}",
        f"  unclosed <think>                 {pct(f['unclosed_think_rate'])}" +
        ("   <- declare nothing" if f["unclosed_think_rate"] > THINK_UNCLOSED_HIGH else ""),
        f"  completion tokens p50 / p95      {f['tokens_p50']:.0f} / {f['tokens_p95']:.0f}",
    ]
    for name in s["reward_funcs"]:
        mean = f["reward_mean"][name]
        lines.append(f"  {name:<32} mean {'-' if mean is None else f'{mean:.3f}'}, "
                     f"None {pct(f['reward_none_rate'][name]).strip()}")
    lines.append("")
    recs = report["recommendations"]
    if not recs:
        lines.append("Recommendations: none, the recipe's groups carry signal.")
    else:
        lines.append("Recommendations:")
        for r in recs:
            head = f"{r['setting']}: {json.dumps(r['value'])}" if r["setting"] and r["value"] is not None \
                else (r["setting"] or "note")
            lines.append(f"  - {head}  ({r['reason']})")
    sec = report["seconds"]
    m = report.get("machine", {})
    where = m.get("gpu") or f"{m.get('cpus')} CPUs"
    load = m.get("load_average_at_start")
    lines.append(f"\n{sec['total']:.0f} s ({sec['load']:.0f} s loading, {sec['sampling']:.0f} s sampling and scoring) on "
                 f"{where}" + (f", load average {load[0]:g} at start" if load else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trl_gsm8k.probe",
        description="Sample a recipe's groups with its own trainer before training: correctness, truncation, "
                    "lengths, zero-variance groups, and the settings to change.",
        epilog="Other --flags override recipe fields, as with trl_gsm8k.train.")
    parser.add_argument("--config", required=True, help="recipe YAML")
    parser.add_argument("--num-prompts", type=int, default=DEFAULT_NUM_PROMPTS,
                        help=f"prompts to sample, num_generations completions each (default {DEFAULT_NUM_PROMPTS})")
    parser.add_argument("--output", help="write the full report (figures, recommendations, samples) as JSON")
    parser.add_argument("--batch-size", type=int,
                        help="completions per generation call (default: the recipe's generation batch, at least "
                             f"{DEFAULT_BATCH_COMPLETIONS}); lower it if memory is short")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, overrides = parser.parse_known_args(argv)
    try:
        report = probe(args.config, args.num_prompts, overrides, args.batch_size, progress=not args.no_progress)
    except (ProbeError, ValueError, FileNotFoundError) as exc:  # LaunchError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(report, f, indent=1)
        print(f"Full report: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
