"""The run doctor: what keeps a GRPO run on GSM8K from learning, said with numbers, before and while it costs.

Two halves share the thresholds below:

- :func:`recommend` turns the figures ``python -m trl_gsm8k.probe`` measures on a recipe's own samples into settings
  to change (pure: figures and settings in, recommendations out).
- :class:`Doctor`, a ``TrainerCallback`` that ``trl_gsm8k.train`` adds unless ``doctor: false``, watches the logged
  metrics over a window of steps and warns once per condition with the measured value and the fix. Its findings go to
  ``run_info.json`` (``diagnoses``) and the end-of-run summary.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from .rewards import completion_text, correctness_reward, find_correctness
from .trainer import GENERATION_SECONDS, GENERATION_TOKENS_PER_SECOND, STEP_SECONDS

logger = logging.getLogger(__name__)

# --- thresholds (each says why) ---------------------------------------------------------------------------------------

# Logged steps averaged per judgement. One GRPO step's metrics come from one generation batch (the demo: one problem's
# 8 completions), so a single step is noise; 5 steps smooth it and still judge the 12-step demo early.
WINDOW_STEPS = 5
# Judge once this many steps are logged (over what is there): the demo's problems show from its first steps.
MIN_STEPS = 3

# A completion cut by max_completion_length declares no answer and scores 0 whatever its working: above 1 in 5 the
# reward mostly measures length, not arithmetic.
TRUNCATION_HIGH = 0.2
# Max_completion_length should cover the 95th percentile of completion lengths: more than 5 % truncated means it does
# not (and the measured p95 is then only a lower bound, capped at the limit).
TRUNCATION_TARGET = 0.05
# Groups whose rewards are all equal get advantage 0 and teach nothing: with more than 3 in 4 of them, most of each
# step's generation (its dominant cost) is wasted.
ZERO_STD_HIGH = 0.75
# Most groups all-wrong: a model that solves too few problems has nothing to reinforce; half is where easier problems
# or dynamic sampling start to pay for themselves.
ALL_WRONG_HIGH = 0.5
# Most groups all-right: the problems are too easy to teach anything.
ALL_RIGHT_HIGH = 0.5
# Accuracy under which zero-variance groups are all-wrong ones (and above 1 minus it, all-right ones); also the
# pass@1 from which dynamic sampling is advised (below it, correct samples are too rare for a filter to help).
ACCURACY_LOW = 0.05
# A group of identical completions is a sampling problem (temperature too low), not a reward one: more than 1 in 4
# such groups and the temperature is the first thing to raise.
IDENTICAL_HIGH = 0.25
# A format reward stuck at 0: fewer than 1 completion in 100 follows its template over the window, so format never
# differs within a group and the format reward gives no signal.
FORMAT_STUCK = 0.01
FORMAT_REWARDS = {
    "format_reward": ("end with '#### <number>'", "recipes/smollm2-135m_cpu_demo.yaml"),
    "tag_format_reward": ("are '<think>…</think> <answer>N</answer>'", "recipes/smollm2-135m_cpu_demo_tags.yaml"),
}
"""The format rewards (``trl_gsm8k.rewards``) the doctor watches: what their completions do, a recipe whose prompt
shows the template."""
# A think block that never closes declares nothing (trl_gsm8k.answers reads only after '</think>') and scores 0.
THINK_UNCLOSED_HIGH = 0.5
# Reward collapse: the window's mean reward fell below half of the best window's, from a best that was not noise.
REWARD_COLLAPSE_FRACTION = 0.5
REWARD_COLLAPSE_MIN_PEAK = 0.1
# Entropy collapse: per-token entropy below a fifth of the first window's: the policy has become near-deterministic,
# so groups turn identical and stop teaching.
ENTROPY_COLLAPSE_FRACTION = 0.2
# |loss| below this prints as 0 in the Trainer's log (4 decimals), which users read as a bug.
LOSS_ZERO = 1e-3
# A gradient norm below this is no update at all.
GRAD_ZERO = 1e-8
# The group size recommendation: P(at least one correct completion in a group) >= this, so that at least every other
# group has a correct completion to reinforce.
GROUP_HIT_TARGET = 0.5
# Beyond this group size, a bigger group is no practical fix (generation cost grows linearly): easier problems are.
MAX_USEFUL_GROUP = 64
# Generation dominates a step when it takes more than half of the step's wall time: then batching more completions
# per generate call (or a faster backend) is the lever, not the loss or the optimizer.
GENERATION_DOMINANT = 0.5
# Temperature the identical-groups advice aims for: sampling at 1.0 is the model's own distribution.
TEMPERATURE_FLOOR = 1.0
TEMPERATURE_STEP = 0.2


# --- pure helpers -------------------------------------------------------------------------------------------------


def group_hit_probability(pass_rate: float, group_size: int) -> float:
    """P(at least one of ``group_size`` independent samples is correct) = 1 - (1 - p)^G.

    >>> round(group_hit_probability(0.1, 8), 3)
    0.57
    """
    return 1.0 - (1.0 - pass_rate) ** group_size


def group_size_for(pass_rate: float, target: float = GROUP_HIT_TARGET) -> int | None:
    """The smallest group size G with 1 - (1 - p)^G >= ``target``; ``None`` when p is 0 (no G reaches it).

    >>> group_size_for(0.1), group_size_for(0.5), group_size_for(0.0) is None
    (7, 1, True)
    """
    if pass_rate <= 0:
        return None
    if pass_rate >= 1:
        return 1
    g = math.ceil(math.log(1.0 - target) / math.log(1.0 - pass_rate))
    while group_hit_probability(pass_rate, g - 1) >= target and g > 1:  # float rounding at exact powers
        g -= 1
    return max(1, g)


def round_up(value: float, multiple: int = 64) -> int:
    """``value`` rounded up to a multiple of ``multiple``.

    >>> round_up(130), round_up(128)
    (192, 128)
    """
    return int(math.ceil(value / multiple) * multiple)


def prompt_opens_think(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template ends its generation prompt inside ``<think>`` (DeepSeek-R1-Distill's
    does): the completion then thinks without writing ``<think>`` itself."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1?"}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # a template that needs other roles or arguments: it does not open a think block by itself
        return False
    return isinstance(text, str) and text.rstrip().endswith("<think>")


def unclosed_think(text: str | None, opened_by_prompt: bool = False) -> bool:
    """Whether a completion is inside a think block at its end (opened by itself or by the prompt, never closed).

    >>> unclosed_think("<think>hmm"), unclosed_think("<think>a</think>#### 1"), unclosed_think("hmm", True)
    (True, False, True)
    """
    if not isinstance(text, str):
        return opened_by_prompt
    if "</think>" in text:
        return text.rfind("<think>") > text.rfind("</think>")
    return opened_by_prompt or "<think>" in text


# --- the probe's recommendations ------------------------------------------------------------------------------------


def recommend(figures: Mapping[str, Any], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Settings to change, computed from a probe's figures and the recipe's settings.

    ``figures``: ``pass_at_1``, ``truncated_rate``, ``tokens_p95``, ``unclosed_think_rate``, ``groups_all_wrong``,
    ``groups_all_right``, ``groups_identical`` (shares in [0, 1]), ``reward_none_rate`` (per function).
    ``settings``: ``num_generations``, ``temperature``, ``max_completion_length``, ``max_solution_steps``,
    ``dynamic_sampling``, ``dynamic_sampling_reward``, ``reward_funcs`` (the trainer's function names),
    ``correctness_reward`` (the name among them of the correctness reward that judged ``pass_at_1``: ``None`` when
    none stands alone, e.g. inside ``shaped_reward``).

    Returns a list of ``{"setting", "value", "reason"}`` (``setting`` and ``value`` are ``None`` for a finding
    with no setting to change).
    """
    recs: list[dict[str, Any]] = []
    limit = int(settings["max_completion_length"])
    truncated = float(figures["truncated_rate"])
    think = float(figures.get("unclosed_think_rate") or 0.0)
    if truncated > TRUNCATION_TARGET:
        value = 2 * limit
        reason = (f"{100 * truncated:.0f} % of completions hit max_completion_length {limit} (they declare no answer "
                  f"and score 0); the 95th percentile of lengths lies beyond {limit}, so it is unknown: double it and "
                  f"probe again with --max_completion_length {value} to measure it")
        if think > THINK_UNCLOSED_HIGH:
            reason += (f"; {100 * think:.0f} % never close their <think> block (a reasoning model thinks for "
                       "hundreds to thousands of tokens; an instruct model answers within 256)")
        recs.append({"setting": "max_completion_length", "value": value, "reason": reason})
    elif float(figures["tokens_p95"]) > 0 and limit > 2 * round_up(float(figures["tokens_p95"])):
        value = round_up(float(figures["tokens_p95"]))
        recs.append({"setting": "max_completion_length", "value": value,
                     "reason": f"95 % of completions end within {figures['tokens_p95']:.0f} tokens of the {limit} "
                               f"allowed: {value} covers them and bounds the longest generations' cost"})

    p = float(figures["pass_at_1"])
    G = int(settings["num_generations"])
    needed = group_size_for(p)
    if needed is None:
        recs.append({"setting": None, "value": None,
                     "reason": "no sampled completion was correct: no group size gives a group a correct completion "
                               "to reinforce (easier problems or a stronger model do)"})
    elif needed > G:
        if needed <= MAX_USEFUL_GROUP:
            recs.append({"setting": "num_generations", "value": needed,
                         "reason": f"pass@1 {100 * p:.1f} %: a group of {G} holds a correct completion with "
                                   f"P = {group_hit_probability(p, G):.2f}; {needed} reaches "
                                   f"P = {group_hit_probability(p, needed):.2f} >= {GROUP_HIT_TARGET} (keep "
                                   "per_device_train_batch_size x steps_per_generation a multiple of it)"})
        else:
            recs.append({"setting": None, "value": None,
                         "reason": f"pass@1 {100 * p:.1f} % needs groups of {needed} for P(a correct completion) >= "
                                   f"{GROUP_HIT_TARGET}: too costly, train on easier problems instead"})

    all_wrong = float(figures["groups_all_wrong"])
    if all_wrong > ALL_WRONG_HIGH:
        steps = settings.get("max_solution_steps")
        if steps is None or steps > 2:
            recs.append({"setting": "max_solution_steps", "value": 2,
                         "reason": f"{100 * all_wrong:.0f} % of groups are all wrong (advantage 0, nothing to learn): "
                                   "train first on the problems of at most 2 calculation steps"})
        elif steps > 1:
            recs.append({"setting": "max_solution_steps", "value": steps - 1,
                         "reason": f"{100 * all_wrong:.0f} % of groups are all wrong even on problems of at most "
                                   f"{steps} steps"})
        # Dynamic sampling cannot make a group informative, only skip training on those that are not: at a pass@1
        # near 1.5 % it gave 1.15x plain TRL's informative groups per hour and no accuracy gain
        # (benchmarks/learning_cpu_dynamic.md), and with none correct it drops the format signal too
        # (benchmarks/learning_cpu_study.md). So below ACCURACY_LOW the advice is easier problems, not it.
        if not settings.get("dynamic_sampling") and p >= ACCURACY_LOW:
            # Dynamic sampling decides on one function, and only a correctness reward standing alone says whether a
            # group is all wrong (a shaped reward's small terms keep all-wrong groups alive).
            judge = settings.get("correctness_reward")
            if judge is None:
                extra = " (add correctness to reward_funcs, weight 0 if it should only decide)"
            elif judge != settings.get("dynamic_sampling_reward", judge):
                extra = f" (with dynamic_sampling_reward: {judge}, the recipe's correctness reward)"
            else:
                extra = ""
            recs.append({"setting": "dynamic_sampling", "value": True,
                         "reason": f"{100 * all_wrong:.0f} % of groups are all wrong: keep only groups with "
                                   f"variance in correctness and refill the batch{extra}"})

    all_right = float(figures["groups_all_right"])
    if all_right > ALL_RIGHT_HIGH:
        recs.append({"setting": "max_solution_steps", "value": None,
                     "reason": f"{100 * all_right:.0f} % of groups are all right: the problems are too easy to teach "
                               "anything; lift max_solution_steps (or unset it)"})

    identical = float(figures["groups_identical"])
    if identical > IDENTICAL_HIGH:
        t = float(settings["temperature"])
        value = round(TEMPERATURE_FLOOR if t < TEMPERATURE_FLOOR else t + TEMPERATURE_STEP, 2)
        recs.append({"setting": "temperature", "value": value,
                     "reason": f"{100 * identical:.0f} % of groups are {G} identical completions at temperature {t:g}: "
                               "they can never differ in reward"})

    for name, rate in (figures.get("reward_none_rate") or {}).items():
        if rate > 0:
            recs.append({"setting": None, "value": None,
                         "reason": f"{name} returned None for {100 * rate:.0f} % of completions (unreadable gold "
                                   "answers?): those completions are left out of their groups"})
    return recs


# --- live diagnoses -----------------------------------------------------------------------------------------------

# metric name: where it comes from. TRL 1.16 logs `completions/clipped_ratio`, `frac_reward_zero_std` (per
# completion), `entropy`, `loss`, `grad_norm`, `rewards/<func>/mean`; GSM8KGRPOTrainer adds `frac_zero_std_groups`,
# `reward/mean`, `policy/entropy`; the correctness reward logs its accuracy (`CorrectnessReward.metric`: `accuracy`,
# `accuracy_strict`), the one the doctor reads.
_TRUNCATION = "completions/clipped_ratio"
_ZERO_STD = ("frac_zero_std_groups", "frac_reward_zero_std")
_REWARD = ("reward/mean", "reward")
_ENTROPY = ("policy/entropy", "entropy")
_UNCLOSED_THINK = "doctor/unclosed_think"  # measured by the callback on the trainer's latest completions


def diagnose(window: Mapping[str, Sequence[float]], settings: Mapping[str, Any],
             history: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """The conditions the last steps' metrics show (pure).

    ``window``: metric name -> its values over the last logged steps (missing metrics are skipped).
    ``settings``: ``max_completion_length``, ``beta``, ``temperature``, ``num_generations``, ``dynamic_sampling``,
    ``max_solution_steps``, ``format_rewards`` (the names of :data:`FORMAT_REWARDS` among the rewards),
    ``accuracy_metric`` (the metric the run's correctness reward logs, ``None`` for a run without one; default
    ``correctness_reward``'s).
    ``history``: ``reward_peak`` (best window mean of the reward so far), ``entropy_start`` (first window's entropy).

    Returns ``{"condition", "value", "advice"}`` per condition present.
    """
    history = history or {}

    def mean(*names: str) -> float | None:
        for name in names:
            values = [v for v in window.get(name, ()) if v is not None and not math.isnan(v)]
            if values:
                return sum(values) / len(values)
        return None

    found: list[dict[str, Any]] = []
    metric = settings.get("accuracy_metric", correctness_reward.metric)
    limit = settings.get("max_completion_length")
    think = mean(_UNCLOSED_THINK)
    truncated = mean(_TRUNCATION)
    if truncated is not None and truncated > TRUNCATION_HIGH:
        advice = (f"{100 * truncated:.0f} % of completions are cut at max_completion_length {limit}: they declare no "
                  f"answer and score 0. Raise max_completion_length (e.g. {round_up(2 * (limit or 64))}); "
                  "python -m trl_gsm8k.probe --config RECIPE --max_completion_length N measures what covers 95 %.")
        found.append({"condition": "truncation", "value": truncated, "advice": advice})
    if think is not None and think > THINK_UNCLOSED_HIGH:
        found.append({"condition": "think_unclosed", "value": think, "advice": (
            f"{100 * think:.0f} % of completions never close their <think> block: they declare nothing and score 0. "
            f"A reasoning model needs max_completion_length in the thousands (now {limit}); or train an instruct "
            "model that answers without thinking.")})

    zero_std = mean(*_ZERO_STD)
    if zero_std is not None and zero_std > ZERO_STD_HIGH:
        accuracy = mean(metric) if metric else None
        if settings.get("dynamic_sampling"):
            advice = ("dynamic sampling drops them and refills, at the cost of sampling/rounds generations per batch: "
                      "if it runs short (sampling/groups_short), raise max_sampling_rounds or train on easier problems "
                      "(max_solution_steps).")
        elif accuracy is None:  # all wrong, all right or all alike: unknown, so no advice that depends on which
            unknown = (f"{metric} is not logged" if metric else
                       "no correctness reward is among reward_funcs (add correctness, weight 0 to only measure)")
            advice = (f"raise temperature (now {settings.get('temperature')}) or num_generations (now "
                      f"{settings.get('num_generations')}) so that completions of a group differ; {unknown}, so "
                      "whether the groups are all wrong or all right is unknown.")
        elif accuracy == 0:
            advice = (f"{metric} is 0 %: the groups are all wrong. Train on easier problems (max_solution_steps: 2) "
                      "or raise num_generations; dynamic sampling would drop every group, the format signal included, "
                      "until some completion is correct.")
        elif accuracy < ACCURACY_LOW:
            advice = (f"{metric} is {100 * accuracy:.1f} %: the groups are all wrong. Train on easier problems "
                      "(max_solution_steps: 2) or raise num_generations; dynamic sampling would only skip training "
                      "on these groups, not make more of them informative.")
        elif accuracy > 1 - ACCURACY_LOW:
            advice = f"{metric} is {100 * accuracy:.1f} %: the groups are all right. Train on harder problems."
        else:
            advice = (f"raise temperature (now {settings.get('temperature')}) or num_generations (now "
                      f"{settings.get('num_generations')}) so that completions of a group differ; or turn on "
                      "dynamic_sampling: true.")
        found.append({"condition": "zero_variance_groups", "value": zero_std, "advice": (
            f"{100 * zero_std:.0f} % of groups have all-equal rewards (advantage 0: they teach nothing); {advice}")})

    for name in settings.get("format_rewards") or ():
        fmt = mean(f"rewards/{name}/mean")
        if fmt is not None and fmt <= FORMAT_STUCK:
            template, recipe = FORMAT_REWARDS[name]
            why = " Most completions are truncated: fix that first." if truncated and truncated > TRUNCATION_HIGH \
                else ""
            found.append({"condition": f"{name}_zero", "value": fmt, "advice": (
                f"{name} is {fmt:.3f}: completions never {template}, so the format reward gives no signal. Show the "
                f"format in the prompt (a worked example in system_prompt, as {recipe} does) or drop "
                f"{name.removesuffix('_reward')} from reward_funcs.{why}")})

    reward, peak = mean(*_REWARD), history.get("reward_peak")
    if (reward is not None and peak is not None and peak >= REWARD_COLLAPSE_MIN_PEAK
            and reward < REWARD_COLLAPSE_FRACTION * peak):
        found.append({"condition": "reward_collapse", "value": reward, "advice": (
            f"mean reward fell to {reward:.3f} from a peak of {peak:.3f}: lower learning_rate, keep max_grad_norm at "
            "1.0, add a KL penalty (beta, or kl_old_coef), and read the latest completions for reward hacking.")})

    entropy, start = mean(*_ENTROPY), history.get("entropy_start")
    if entropy is not None and start and entropy < ENTROPY_COLLAPSE_FRACTION * start:
        found.append({"condition": "entropy_collapse", "value": entropy, "advice": (
            f"per-token entropy fell to {entropy:.3f} from {start:.3f}: the policy is near-deterministic, its groups "
            "turn identical and stop teaching. Lower learning_rate, raise temperature, or add a KL penalty.")})

    generating, step = mean(GENERATION_SECONDS), mean(STEP_SECONDS)
    if generating is not None and step and generating / step > GENERATION_DOMINANT:
        found.append({"condition": "generation_dominates", "value": generating / step,
                      "advice": _batch_generation_advice(generating / step, mean(GENERATION_TOKENS_PER_SECOND),
                                                         settings)})

    loss = mean("loss")
    if loss is not None and abs(loss) < LOSS_ZERO and not settings.get("beta"):
        grad = mean("grad_norm")
        if grad is not None and grad < GRAD_ZERO:
            tail = (f"here grad_norm is {grad:.1e} as well: no group had reward variance, nothing was learned "
                    "(see zero_variance_groups).")
        else:
            watch = f"reward/mean and {metric}" if metric else "reward/mean"
            tail = f"the gradient is not (grad_norm): watch {watch}, not the loss."
        found.append({"condition": "loss_near_zero", "value": loss, "advice": (
            f"loss is {loss:.1e}. Expected: with beta 0 the GRPO loss is ~0 by construction (on-policy the ratio is 1 "
            f"and advantages average 0 within each group); {tail}")})
    return found


def _batch_generation_advice(share: float, tokens_per_second: float | None, settings: Mapping[str, Any]) -> str:
    per_device = settings.get("per_device_train_batch_size")
    steps = settings.get("steps_per_generation") or settings.get("gradient_accumulation_steps") or 1
    calls = f"{per_device * steps} completions per generate call" if per_device else "each generate call"
    rate = f" at {tokens_per_second:.0f} tokens/s" if tokens_per_second else ""
    vllm = "" if settings.get("use_vllm") or settings.get("use_cpu") else (
        " On a GPU, use_vllm: true generates several times faster than Transformers.")
    return (f"generation takes {100 * share:.0f} % of each step ({calls}{rate}): batch more completions per call. "
            f"steps_per_generation: {2 * steps} generates {2 * steps} micro-batches' completions in one call (the "
            "later ones are then off-policy: TRL corrects them by importance ratio, at the price of one more forward "
            "pass over them unless gradient_accumulation_steps is a multiple of it), or more prompts per step: "
            f"per_device_train_batch_size: {2 * per_device if per_device else 'x2'} (scale learning_rate with the "
            f"batch).{vllm} Compare timing/step_seconds per completion before and after: a bigger batch pays only "
            "where the hardware was not saturated.")


class Doctor(TrainerCallback):
    """Watches the logged metrics and warns once per condition (see :func:`diagnose`); ``diagnoses`` holds
    ``{"condition", "step", "value", "advice"}`` for each, in the order found."""

    def __init__(self, trainer: Any = None, window_steps: int = WINDOW_STEPS, min_steps: int = MIN_STEPS) -> None:
        self.trainer = trainer
        self.window_steps = window_steps
        self.min_steps = min_steps
        self.diagnoses: list[dict[str, Any]] = []
        self._window: dict[str, deque] = {}
        self._logged = 0
        self._history: dict[str, float] = {}
        self._think_opened: bool | None = None
        self._logging_steps: float | None = None

    def settings(self, args: Any) -> dict[str, Any]:
        names = list(getattr(self.trainer, "reward_func_names", None) or [])
        funcs = getattr(self.trainer, "reward_funcs", None)
        if funcs is None:  # no trainer to ask: the default correctness reward's metric
            metric = correctness_reward.metric
        else:
            found = find_correctness(funcs)
            metric = found[1].metric if found else None
        return {
            "max_completion_length": getattr(args, "max_completion_length", None),
            "beta": getattr(args, "beta", 0.0),
            "temperature": getattr(args, "temperature", None),
            "num_generations": getattr(args, "num_generations", None),
            "dynamic_sampling": getattr(args, "dynamic_sampling", False),
            "per_device_train_batch_size": getattr(args, "per_device_train_batch_size", None),
            "steps_per_generation": getattr(args, "steps_per_generation", None),
            "gradient_accumulation_steps": getattr(args, "gradient_accumulation_steps", None),
            "use_vllm": getattr(args, "use_vllm", False),
            "use_cpu": getattr(args, "use_cpu", False),
            "format_rewards": [name for name in names if name in FORMAT_REWARDS] if names else list(FORMAT_REWARDS),
            "accuracy_metric": metric,
        }

    def _unclosed_think_rate(self) -> float | None:
        """Share of the trainer's latest generation batch (TRL keeps it for the completions table) that is inside a
        think block at its end."""
        logs = getattr(self.trainer, "_logs", None)
        if not logs or not logs.get("completion"):
            return None
        if self._think_opened is None:
            self._think_opened = prompt_opens_think(getattr(self.trainer, "processing_class", None))
        texts = [completion_text(c) for c in logs["completion"]]
        return sum(unclosed_think(t, self._think_opened) for t in texts) / len(texts)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:  # the end-of-training summary and eval logs are not steps
            return
        values = dict(logs)
        think = self._unclosed_think_rate()
        if think is not None:
            values[_UNCLOSED_THINK] = think
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._window.setdefault(name, deque(maxlen=self.window_steps)).append(float(value))
        self._logged += 1
        self._logging_steps = getattr(args, "logging_steps", None)
        if self._logged < self.min_steps:
            return
        self.observe(state.global_step, args, state.is_world_process_zero)

    def observe(self, step: int, args: Any, report: bool = True) -> None:
        found = diagnose(self._window, self.settings(args), self._history)
        self._update_history()
        known = {d["condition"] for d in self.diagnoses}
        for d in found:
            if d["condition"] in known:
                continue
            record = {"condition": d["condition"], "step": step, "value": round(d["value"], 6), "advice": d["advice"]}
            self.diagnoses.append(record)
            if report:
                logger.warning("doctor (step %d): %s: %s", step, d["condition"], d["advice"])

    def _update_history(self) -> None:
        for key, names in (("reward_peak", _REWARD), ("entropy_start", _ENTROPY)):
            for name in names:
                values = self._window.get(name)
                if values:
                    m = sum(values) / len(values)
                    if key == "reward_peak":
                        self._history[key] = max(self._history.get(key, m), m)
                    elif key not in self._history and len(values) >= self.min_steps:
                        self._history[key] = m
                    break

    def summary_lines(self) -> list[str]:
        if not self.diagnoses and self._logged < self.min_steps:
            return [self._cannot_judge()]
        if not self.diagnoses:
            return [f"Doctor: no problem found in the logged metrics ({self._logged} logged steps, judged over the "
                    f"last {self.window_steps})."]
        lines = [f"Doctor: {len(self.diagnoses)} problem(s) found (also in run_info.json):"]
        for d in self.diagnoses:
            lines.append(f"  step {d['step']}: {d['condition']} ({d['value']:.3g}): {d['advice']}")
        return lines

    def _cannot_judge(self) -> str:
        every = self._logging_steps
        how = (f"logging_steps: {every:g} logs every {every:g} optimizer steps, so it needs "
               f"{self.min_steps * every:g} steps: train longer or log more often (logging_steps: 1)"
               if every and every >= 1 else "train longer or log more often (logging_steps: 1)")
        return (f"Doctor: cannot judge this run: it needs {self.min_steps} logged steps and got {self._logged}; "
                f"{how}.")
