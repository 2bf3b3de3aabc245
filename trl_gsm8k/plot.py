"""Pictures of a run: ``python -m trl_gsm8k.plot RUN_DIR`` and ``python -m trl_gsm8k.plot --compare A.json B.json``.

- ``RUN_DIR`` → ``RUN_DIR/training_curves.png``: one figure from the run's ``trainer_state.json`` (``log_history``;
  RUN_DIR's own or its latest ``checkpoint-*/``, whichever is further along), one panel per metric family
  (:data:`PANELS`): total reward mean ± std, each reward term (every ``rewards/<name>/mean`` TRL logs: format,
  tag format, correctness...), accuracy, declared answers, truncated completions, completion length, entropy, advantage, zero-std
  group fraction, KL, each step's seconds and the part spent generating. Both TRL's metric names (``reward``, ``entropy``, ``frac_reward_zero_std``, ``kl``...) and
  this package's (``reward/mean``, ``policy/entropy``, ``frac_zero_std_groups``, ``kl_old``...) are read. A metric
  that never moved (:func:`is_flat`) takes no panel: it is named with its value in a line of text under the panels.
- ``--compare before.json after.json`` → bars of strict and flexible pass@1, declare rate and truncation rate from
  two ``eval.json`` files written by :mod:`trl_gsm8k.evaluate`; when the two were evaluated under different settings
  (prompt, system prompt, max_new_tokens, number of items...) a warning is logged and written on the figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from .models import latest_checkpoint  # noqa: E402

logger = logging.getLogger("trl_gsm8k.plot")


class PlotError(ValueError):
    """Input that cannot be drawn; the message is the one line the command-line tool prints."""


# --- training curves ---------------------------------------------------------------------------------------------


@dataclass
class Panel:
    title: str
    lines: list[list[str]]  # each line: candidate metric names, the first one present wins
    band: list[str] = field(default_factory=list)  # std around the first line, when present
    ylabel: str = ""
    fraction: bool = False  # a share in [0, 1]: the y-axis shows all of it, so 0.16 → 0.50 reads as the move it is
    per_reward_term: bool = False  # a template: one panel per reward function, "{name}" replaced by its name
    from_zero: bool = False  # parts of a whole (seconds of a step): the axis starts at 0, so the parts read as shares


REWARD_TERM = re.compile(r"rewards/(?P<name>.+)/mean")  # TRL: rewards/<reward function __name__>/mean and /std

PANELS = [
    Panel("Reward (mean ± std)", [["reward/mean", "reward"]], band=["reward/std", "reward_std"], ylabel="reward"),
    Panel("Reward term {name} (mean ± std)", [["rewards/{name}/mean"]], band=["rewards/{name}/std"],
          ylabel="reward (unweighted)", per_reward_term=True),
    Panel("Accuracy (correct completions)", [["accuracy"], ["accuracy_strict"]], ylabel="fraction", fraction=True),
    Panel("Declared an answer (right or wrong)", [["declare_rate"], ["declare_rate_strict"]], ylabel="fraction",
          fraction=True),
    Panel("Truncated (cut at max_completion_length)", [["completions/clipped_ratio"]], ylabel="fraction",
          fraction=True),
    Panel("Completion length", [["completions/mean_length"], ["completions/max_length"],
                                ["completions/min_length"]], ylabel="tokens"),
    Panel("Entropy", [["policy/entropy", "entropy"]], ylabel="nats / token"),
    Panel("Advantage", [["advantage/std"], ["advantage/mean"]], ylabel="advantage"),
    Panel("Groups with zero reward std", [["frac_zero_std_groups", "frac_reward_zero_std"]], ylabel="fraction",
          fraction=True),
    Panel("KL", [["kl"], ["kl_old"]], ylabel="KL"),
    Panel("Time per step (of it, generating)", [["timing/step_seconds"], ["timing/generation_seconds"]],
          ylabel="seconds", from_zero=True),
]
"""What the training figure draws, in this order. ``declare_rate`` is logged by the correctness reward
(:class:`trl_gsm8k.rewards.CorrectnessReward`), as the evaluation summary's of the same name."""

FLAT_TOLERANCE = 1e-6
"""Relative spread under which a metric counts as never having moved. Metrics are float32 means (machine epsilon
1.2e-7) of O(1) quantities: the same value comes back as 0.99999994 and 0.99999988 (``advantage/std``) or as ±2e-8
instead of 0 (``advantage/mean``), a spread of a few epsilon. 1e-6 (about 8 epsilon) is above that rounding and far
below any real move: a share over a batch moves by at least 1 / completions per step (1/8 in the CPU demo), and a
move under 1e-6 of the metric's scale would not show on the panel's axis anyway."""


def is_flat(values: Sequence[float]) -> bool:
    """Whether a metric never moved: at least two finite values, all equal within :data:`FLAT_TOLERANCE` of their
    scale (at least 1, so that float32 noise around 0 is flat). One value shows no movement and no flatness either.

    >>> is_flat([0.9999999403953552, 0.9999998807907104]), is_flat([-7.45e-09, 2.24e-08]), is_flat([0.125, 0.375])
    (True, True, False)
    >>> is_flat([0.0])
    False
    """
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return False
    return max(finite) - min(finite) <= FLAT_TOLERANCE * max(1.0, max(abs(v) for v in finite))


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
    return max(found, key=lambda p: _read_json(p, "trainer state").get("global_step") or 0)


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlotError(f"{path}: not a readable {what} ({exc})") from None
    if not isinstance(data, dict):
        raise PlotError(f"{path}: not a {what} (expected a JSON object)")
    return data


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


def _expand(series: dict) -> list[Panel]:
    """:data:`PANELS` with each reward-term template repeated for every reward function the run logged."""
    terms = [m["name"] for key in series if (m := REWARD_TERM.fullmatch(key))]
    panels = []
    for panel in PANELS:
        if not panel.per_reward_term:
            panels.append(panel)
            continue
        for name in terms:
            panels.append(replace(panel, title=panel.title.format(name=name),
                                  lines=[[k.format(name=name) for k in names] for names in panel.lines],
                                  band=[k.format(name=name) for k in panel.band], per_reward_term=False))
    return panels


def training_figure(log_history: list[dict], title: str, where: str = "log_history") -> Figure:
    """The training figure of a ``log_history``: panels for the metrics that moved, a line naming the flat ones.

    Raises :class:`PlotError` when no metric of :data:`PANELS` was logged (``where`` names the input in it).
    """
    series = training_series(log_history)
    found = [(p, [next(k for k in names if k in series) for names in p.lines if any(k in series for k in names)])
             for p in _expand(series)]
    found = [(p, keys) for p, keys in found if keys]
    if not found:
        known = [k.replace("{name}", "<name>") for p in PANELS for names in p.lines for k in names]
        raise PlotError(f"{where}: log_history holds none of the metrics to plot "
                        f"({', '.join(known)}); found: {', '.join(sorted(series)) or 'no training logs'}")
    # A panel whose every line is flat is dropped; a flat line beside moving ones stays (e.g. max_length at the
    # completion cap is the reference the mean and min lengths are read against).
    panels, flat = [], []
    for panel, keys in found:
        if all(is_flat(series[k][1]) for k in keys):
            flat += keys
        else:
            panels.append((panel, keys))

    cols = 3 if len(panels) <= 6 else 4
    rows = max(1, -(-len(panels) // cols))
    width = 5 * cols if panels else 10
    note = _flat_note(flat, series, width_chars=int(width * 72 / 10 / 0.6)) if flat else ""  # 10 pt, ~0.6 em/char
    note_inches = 0.25 * (note.count("\n") + 1) + 0.2 if note else 0.0
    height = (3.6 * rows if panels else 0.8) + note_inches + 0.6
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    for ax, (panel, keys) in zip(axes.flat, panels):
        _draw_panel(ax, panel, keys, series)
    for ax in list(axes.flat)[len(panels):]:
        ax.remove()
    fig.suptitle(title, fontsize=13)
    if note:
        fig.text(0.5, 0.1 / height, note, ha="center", va="bottom", fontsize=10, color="0.25")
    if panels:
        fig.tight_layout(rect=(0, note_inches / height, 1, 1 - 0.3 / height))
    return fig


def _draw_panel(ax, panel: Panel, keys: list[str], series: dict) -> None:
    for n, key in enumerate(keys):
        steps, values = series[key]
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=key,
                lw=1.8 if n == 0 else 1.0, alpha=1.0 if n == 0 else 0.7)
    band = next((k for k in panel.band if k in series), None)
    if band:
        std = dict(zip(*series[band]))
        points = [(x, m, std[x]) for x, m in zip(*series[keys[0]]) if x in std]
        if len(points) == 1:  # a band over one step has no width: show the std as an error bar
            ax.errorbar(*points[0][:2], yerr=points[0][2], capsize=4, alpha=0.5, label=f"± {band}")
        else:
            ax.fill_between([x for x, _, _ in points], [m - s for _, m, s in points],
                            [m + s for _, m, s in points], alpha=0.25, label=f"± {band}")
    if panel.fraction:
        ax.set_ylim(-0.03, 1.03)
    elif panel.from_zero:
        ax.set_ylim(bottom=0)
    ax.set_title(panel.title)
    # Steps are integers; min_n_ticks=1 keeps integer ticks when the run logged one step (the default falls back to
    # fractional ticks, 1.900 ... 2.100, when fewer than two integers are in view).
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.ticklabel_format(axis="y", useOffset=False)  # no "1e-6+1.0796e1" offset labels on near-flat curves
    ax.set_xlabel("step")
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _flat_note(flat: list[str], series: dict, width_chars: int) -> str:
    steps = len(set(step for key in flat for step in series[key][0]))
    items = [f"{key} {_fmt(_mean(series[key][1]))}" for key in flat]
    return textwrap.fill(f"flat over {steps} logged steps (no panel): " + ", ".join(items), width=width_chars)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite)


def _fmt(value: float) -> str:
    """Three decimals, as the README quotes metrics; significant digits where three decimals would hide the value.

    >>> _fmt(0.99999994), _fmt(-1.5e-08), _fmt(2.5e-05), _fmt(128.0)
    ('1.000', '0.000', '2.5e-05', '128.000')
    """
    shown = f"{value:.3f}"
    if abs(value) >= 1e-6 and float(shown) == 0.0:
        return f"{value:.2g}"
    return "0.000" if float(shown) == 0.0 else shown


def plot_training(run: Path, output: Path | None = None) -> Path:
    """Draw the training curves of a run into a PNG; returns its path."""
    state_path = find_trainer_state(run)
    history = _read_json(state_path, "trainer state").get("log_history") or []
    name = (run if run.is_dir() else run.parent).resolve().name  # the run's name, also when given its JSON file
    fig = training_figure(history, f"Training curves: {name}", where=str(state_path))
    output = output or (run if run.is_dir() else run.parent) / "training_curves.png"
    return _save(fig, output)


# --- before / after evaluation -----------------------------------------------------------------------------------

COMPARE_PANELS = [
    ("Accuracy (pass@1)", [("strict_pass@1", "strict\n(#### N only)"),
                           ("flexible_pass@1", "flexible\n(any declared answer)")], False),
    ("Completions", [("declare_rate", "declared\nan answer"), ("truncated_rate", "truncated\n(hit max_new_tokens)")],
     True),
]
"""The summary fields of ``eval.json`` (:func:`trl_gsm8k.scoring.summarize`) drawn by ``--compare``: per panel, its
title, ``(field, bar label)`` pairs and whether its y-axis spans 0-100 %. Accuracy of a small model is a few percent,
so its panel gets its own scale (at least 0-10 %) to keep the bars visible; declare and truncation rates, often tens
of percent, are read on the whole scale."""

SETTINGS_NOT_COMPARED = ("model", "items_file", "batch_size", "limit", "backend", "dtype")
"""``eval.json`` settings that may differ between a fair before and after: the model (what is compared), file
names and batching (they do not change what is measured), ``--limit`` (the summary's ``num_items``, compared in
its place, says whether the items are the same number), and the backend and dtype (they change the arithmetic, not
the test; older files record ``dtype: auto``, which cannot be compared with the dtype newer ones record). Every other
setting evaluate records (prompt, system_prompt, num_fewshot, max_new_tokens, temperature, split...) changes what
is asked or how long the model may answer, so a difference is warned about; a setting evaluate leaves out at its
default compares as that default (absent on both sides: equal)."""


def setting_differences(before: dict, after: dict) -> list[str]:
    """``"key: before ≠ after"`` for each setting (or ``num_items``) two evaluations do not share.

    ``before`` and ``after`` are whole ``eval.json`` objects (``summary`` and ``settings``).

    >>> a = {"summary": {"num_items": 50}, "settings": {"prompt": "train", "max_new_tokens": 256, "model": "x"}}
    >>> b = {"summary": {"num_items": 50}, "settings": {"prompt": "train", "max_new_tokens": 512, "model": "y"}}
    >>> setting_differences(a, b)
    ['max_new_tokens: 256 ≠ 512']
    """
    pairs = {"num_items": (before["summary"].get("num_items"), after["summary"].get("num_items"))}
    keys = [k for k in {**before.get("settings", {}), **after.get("settings", {})} if k not in SETTINGS_NOT_COMPARED]
    pairs.update({k: (before.get("settings", {}).get(k), after.get("settings", {}).get(k)) for k in keys})
    return [f"{key}: {_short(a)} ≠ {_short(b)}" for key, (a, b) in pairs.items() if a != b]


def _short(value, limit: int = 40) -> str:
    text = "default" if value is None else repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def compare_figure(before: dict, after: dict, labels: Sequence[str] = ("before", "after")) -> Figure:
    """Bars of :data:`COMPARE_PANELS` for two ``eval.json`` objects, with a warning line when their settings differ."""
    evals = (before, after)
    differences = setting_differences(before, after)
    warning = textwrap.fill("WARNING, not like for like: different settings: " + "; ".join(differences),
                            width=120) if differences else ""
    lines = warning.count("\n") + 1 if warning else 0
    height = 4.6 + 0.2 * lines
    fig, axes = plt.subplots(1, len(COMPARE_PANELS), figsize=(11, height), squeeze=False)
    width = 0.38
    for ax, (title, metrics, full_scale) in zip(axes.flat, COMPARE_PANELS):
        for n, (data, label) in enumerate(zip(evals, labels)):
            xs = [i + (n - 0.5) * width for i in range(len(metrics))]
            bars = ax.bar(xs, [100 * data["summary"][key] for key, _ in metrics], width, label=_legend(data, label),
                          color=f"C{n}")
            ax.bar_label(bars, fmt="%.1f%%", padding=2, fontsize=9)
        ax.set_xticks(range(len(metrics)), [name for _, name in metrics])
        top = max(100 * data["summary"][key] for data in evals for key, _ in metrics)
        ax.set_ylim(0, 109 if full_scale or top > 80 else max(10.0, top * 1.25))  # 109: room for a 100 % label
        ax.yaxis.set_major_formatter(PercentFormatter(decimals=0))
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].set_ylabel("GSM8K, share of completions")
    axes.flat[0].legend(fontsize=9, loc="upper left")
    fig.suptitle("GSM8K evaluation before and after training", fontsize=13)
    if warning:  # under the title, above the panels: on the figure wherever the PNG ends up without the log
        fig.text(0.5, 1 - 0.42 / height, warning, ha="center", va="top", fontsize=10, color="#b00020",
                 fontweight="bold")
    fig.tight_layout()
    if warning:  # tight_layout leaves room for the title only: the axes (and their titles) start below the warning
        fig.subplots_adjust(top=1 - (0.42 + 0.2 * lines + 0.4) / height)
    return fig


def _legend(data: dict, label: str) -> str:
    model = data.get("settings", {}).get("model")
    name = Path(str(model)).name if model else "?"
    return f"{label}: {name} (n={data['summary'].get('num_items', '?')})"


def plot_compare(before: Path, after: Path, output: Path | None = None,
                 labels: Sequence[str] = ("before", "after")) -> Path:
    """Bars of pass@1, declare and truncation rates from two ``eval.json`` files; returns the PNG path. Logs a
    warning (and writes it on the figure) when the two were evaluated under different settings."""
    evals = [_read_eval(p) for p in (before, after)]
    differences = setting_differences(*evals)
    if differences:
        logger.warning("the two evaluations used different settings, the comparison is not like for like: %s",
                       "; ".join(differences))
    return _save(compare_figure(*evals, labels=labels), output or after.parent / "compare.png")


def _read_eval(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such eval.json")
    data = _read_json(path, "evaluation summary (eval.json)")
    summary = data.get("summary")
    needed = [key for _, metrics, _ in COMPARE_PANELS for key, _ in metrics]
    missing = [key for key in needed if not isinstance(summary, dict) or not isinstance(summary.get(key), (int, float))]
    if missing:
        raise PlotError(f"{path}: not an eval.json from trl_gsm8k.evaluate (its summary lacks {', '.join(missing)})")
    if not isinstance(data.get("settings", {}), dict):
        raise PlotError(f"{path}: not an eval.json from trl_gsm8k.evaluate (settings is not an object)")
    return data


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
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
