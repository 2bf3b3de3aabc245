"""Pictures of a run: ``python -m trl_gsm8k.plot RUN_DIR`` and ``python -m trl_gsm8k.plot --compare A.json B.json``.

- ``RUN_DIR`` → ``RUN_DIR/training_curves.png``: one figure, one panel per metric family found in the run's
  ``trainer_state.json`` (``log_history``; RUN_DIR's own or its latest ``checkpoint-*/``, whichever is further
  along): reward mean ± std, accuracy, advantage std, entropy, completion length, zero-std group fraction, KL.
  Both TRL's metric names (``reward``, ``entropy``, ``frac_reward_zero_std``, ``kl``...) and this package's
  (``reward/mean``, ``policy/entropy``, ``frac_zero_std_groups``, ``kl_old``...) are read.
- ``--compare before.json after.json`` → a bar chart of strict and flexible pass@1 from two ``eval.json`` files
  written by :mod:`trl_gsm8k.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .models import latest_checkpoint  # noqa: E402


class PlotError(ValueError):
    """Input that cannot be drawn; the message is the one line the command-line tool prints."""


@dataclass
class Panel:
    title: str
    lines: list[list[str]]  # each line: candidate metric names, the first one present wins
    band: list[str] = field(default_factory=list)  # std around the first line, when present
    ylabel: str = ""


PANELS = [
    Panel("Reward (mean ± std)", [["reward/mean", "reward"]], band=["reward/std", "reward_std"], ylabel="reward"),
    Panel("Accuracy (correct completions)", [["accuracy", "rewards/correctness_reward/mean"]], ylabel="fraction"),
    Panel("Advantage", [["advantage/std"], ["advantage/mean"]], ylabel="advantage"),
    Panel("Entropy", [["policy/entropy", "entropy"]], ylabel="nats / token"),
    Panel("Completion length", [["completions/mean_length"], ["completions/max_length"],
                                ["completions/min_length"]], ylabel="tokens"),
    Panel("Groups with zero reward std", [["frac_zero_std_groups", "frac_reward_zero_std"]], ylabel="fraction"),
    Panel("KL", [["kl"], ["kl_old"]], ylabel="KL"),
]


def find_trainer_state(run: Path) -> Path:
    """The ``trainer_state.json`` of a run: a file given directly, the run's own, or its latest checkpoint's."""
    if run.is_file():
        return run
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory")
    candidates = [run / "trainer_state.json"]
    checkpoint = latest_checkpoint(run)
    if checkpoint is not None:
        candidates.append(checkpoint / "trainer_state.json")
    found = [p for p in candidates if p.is_file()]
    if not found:
        raise FileNotFoundError(f"{run} holds no trainer_state.json, neither itself nor in a checkpoint-*/ "
                                "(the trainer writes one at each checkpoint and at the end of training)")
    return max(found, key=lambda p: _read_state(p).get("global_step") or 0)


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlotError(f"{path}: not a readable trainer state ({exc})") from None
    if not isinstance(state, dict):
        raise PlotError(f"{path}: not a trainer state (expected a JSON object)")
    return state


def training_series(log_history: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``metric -> (steps, values)`` from the training entries of ``log_history`` (evaluation entries skipped).

    >>> training_series([{"step": 1, "reward": 0.5, "loss": 0.1}, {"step": 2, "eval_loss": 1.0}])["reward"]
    ([1], [0.5])
    """
    series: dict[str, tuple[list[float], list[float]]] = {}
    for entry in log_history:
        if not isinstance(entry, dict) or "step" not in entry or any(k.startswith("eval_") for k in entry):
            continue
        for key, value in entry.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                steps, values = series.setdefault(key, ([], []))
                steps.append(entry["step"])
                values.append(float(value))
    return series


def plot_training(run: Path, output: Path | None = None) -> Path:
    """Draw the training curves of a run into a PNG; returns its path."""
    state_path = find_trainer_state(run)
    history = _read_state(state_path).get("log_history") or []
    series = training_series(history)
    panels = [(p, [next(k for k in names if k in series) for names in p.lines if any(k in series for k in names)])
              for p in PANELS]
    panels = [(p, keys) for p, keys in panels if keys]
    if not panels:
        known = sorted({k for p in PANELS for names in p.lines for k in names})
        raise PlotError(f"{state_path}: log_history holds none of the metrics to plot "
                        f"({', '.join(known)}); found: {', '.join(sorted(series)) or 'no training logs'}")
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, (panel, keys) in zip(axes.flat, panels):
        for n, key in enumerate(keys):
            steps, values = series[key]
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key,
                    lw=1.8 if n == 0 else 1.0, alpha=1.0 if n == 0 else 0.7)
        band = next((k for k in panel.band if k in series), None)
        if band:
            std = dict(zip(*series[band]))
            points = [(x, m, std[x]) for x, m in zip(*series[keys[0]]) if x in std]
            ax.fill_between([x for x, _, _ in points], [m - s for _, m, s in points], [m + s for _, m, s in points],
                            alpha=0.25, label=f"± {band}")
        ax.set_title(panel.title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-6+1.0796e1" offset labels on near-flat curves
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Training curves: {run.resolve().name}", fontsize=13)
    fig.tight_layout()
    output = output or (run if run.is_dir() else run.parent) / "training_curves.png"
    return _save(fig, output)


def plot_compare(before: Path, after: Path, output: Path | None = None,
                 labels: Sequence[str] = ("before", "after")) -> Path:
    """Bar chart of strict and flexible pass@1 from two ``eval.json`` files; returns the PNG path."""
    summaries = [_read_summary(p) for p in (before, after)]
    metrics = [("strict_pass@1", "strict\n(#### N only)"), ("flexible_pass@1", "flexible\n(any declared answer)")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.38
    for n, (summary, label) in enumerate(zip(summaries, labels)):
        xs = [i + (n - 0.5) * width for i in range(len(metrics))]
        values = [100 * summary[key] for key, _ in metrics]
        bars = ax.bar(xs, values, width, label=f"{label} (n={summary.get('num_items', '?')})")
        ax.bar_label(bars, fmt="%.1f%%", padding=2)
    ax.set_xticks(range(len(metrics)), [name for _, name in metrics])
    ax.set_ylabel("GSM8K pass@1 (%)")
    top = max(100 * s[key] for s in summaries for key, _ in metrics)
    ax.set_ylim(0, max(10.0, top * 1.2))
    ax.set_title("GSM8K accuracy before and after training")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    if summaries[0].get("num_items") != summaries[1].get("num_items"):
        print("warning: the two evaluations cover different numbers of items", file=sys.stderr)
    fig.tight_layout()
    return _save(fig, output or after.parent / "compare.png")


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such eval.json")
    summary = _read_state(path).get("summary")
    if not isinstance(summary, dict) or not {"strict_pass@1", "flexible_pass@1"} <= summary.keys():
        raise PlotError(f"{path}: not an eval.json from trl_gsm8k.evaluate (no summary pass@1)")
    return summary


def _save(fig, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trl_gsm8k.plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, help="training output directory (or a trainer_state.json)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE_JSON", "AFTER_JSON"))
    parser.add_argument("--labels", nargs=2, default=("before", "after"), metavar=("BEFORE", "AFTER"))
    parser.add_argument("--output", "-o", type=Path, help="PNG path (default: beside the input)")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.compare is None):
        parser.error("give either RUN_DIR or --compare BEFORE_JSON AFTER_JSON")
    try:
        if args.compare:
            path = plot_compare(*args.compare, output=args.output, labels=args.labels)
        else:
            path = plot_training(args.run_dir, args.output)
    except (PlotError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
