r"""GSM8K reward functions for TRL's `GRPOTrainer` (and any TRL job that takes reward callables).

Each follows TRL's reward contract: ``f(completions, answer, **kwargs) -> list[float | None]``. Completions are plain
strings or chat lists ``[{"role": "assistant", "content": ...}]``; ``answer`` is the dataset's column, the full
GSM8K answer text (``... #### 18``) or a bare number. Parsing lives in :mod:`trl_gsm8k.answers`.

They load by dotted path, e.g. ``trl grpo --reward_funcs trl_gsm8k.rewards.correctness_reward ...``.
A reward with settings is a small picklable class (:class:`CorrectnessReward`, :class:`LengthReward`,
:class:`ShapedReward`) and its default is a module-level instance of it (``correctness_reward =
CorrectnessReward()``); a reward without settings is a function (:func:`format_reward`, :func:`steps_reward`).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from .answers import (
    MAX_STEPS,
    Mode,
    answers_match_batch,
    declares_strict_answer_last,
    equation_results,
    extract_gold,
    gold_steps,
)

logger = logging.getLogger(__name__)

_warned_golds: set[str] = set()


def completion_text(completion: Any) -> str | None:
    """The text of one completion: a string, or the last message's ``content`` of a chat completion.

    >>> completion_text([{"role": "assistant", "content": "#### 18"}])
    '#### 18'
    >>> completion_text(None) is None
    True
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else None
    return None


def _gold_values(answer: Sequence[Any] | None, n: int) -> list[Fraction | None]:
    if answer is None:
        raise ValueError(
            "GSM8K rewards need the gold answers: the dataset must have an `answer` column "
            "(the GSM8K answer text ending with '#### N', or the bare number)."
        )
    if len(answer) != n:
        raise ValueError(f"got {n} completions but {len(answer)} answers")
    golds = []
    for a in answer:
        gold = extract_gold(a)
        if gold is None:
            key = repr(a)[:80]
            if key not in _warned_golds:
                _warned_golds.add(key)
                logger.warning("Gold answer %s has no readable number: its completions get reward None.", key)
        golds.append(gold)
    return golds


class CorrectnessReward:
    r"""1.0 when the completion's declared final answer equals the gold, else 0.0; ``None`` when the gold is unreadable.

    The module's ``correctness_reward`` is ``CorrectnessReward()`` and ``correctness_reward_strict`` is
    ``CorrectnessReward("strict")``. Under `GRPOTrainer` it also logs ``accuracy`` (``accuracy_strict``): the share
    of graded completions that are right, through TRL's ``log_metric``, so a weighted or wrapped correctness reward
    (:class:`ShapedReward`) still reports it.

    Args:
        mode: ``"flexible"`` (default) credits any declaration (``#### N``, ``\boxed{N}``, "the answer is N", ...);
            ``"strict"`` only ``#### N``. An answer that is never declared gets no credit, even if it is the last
            number of the working. See :mod:`trl_gsm8k.answers`.

    Call arguments:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        answer: The gold per completion: GSM8K answer text (``... #### 18``) or a bare number.
        log_metric: TRL's metric logger (passed by `GRPOTrainer`); optional.
        **kwargs: Other dataset columns and trainer arguments; unused, accepted for `GRPOTrainer`.

    Returns:
        One float per completion, or ``None`` where the gold has no readable number (TRL then skips it).

    Example:
    ```python
    >>> from trl_gsm8k.rewards import correctness_reward, correctness_reward_strict
    >>> completions = [
    ...     [{"role": "assistant", "content": "9 * 2 = 18 dollars.\n#### 18"}],
    ...     [{"role": "assistant", "content": "The answer is $\\boxed{18}$."}],
    ...     [{"role": "assistant", "content": "I think 9 * 2 = 18"}],
    ... ]
    >>> correctness_reward(completions, answer=["... #### 18"] * 3)
    [1.0, 1.0, 0.0]
    >>> correctness_reward_strict(["#### 18", "The answer is 18."], answer=["18", "18"])
    [1.0, 0.0]

    ```
    """

    def __init__(self, mode: Mode = "flexible") -> None:
        if mode not in ("strict", "flexible"):
            raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
        self.mode = mode
        self.__name__ = "correctness_reward" if mode == "flexible" else f"correctness_reward_{mode}"
        self.metric = "accuracy" if mode == "flexible" else f"accuracy_{mode}"

    def __call__(self, completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **kwargs) -> list[float | None]:
        golds = _gold_values(answer, len(completions))
        known = [i for i, gold in enumerate(golds) if gold is not None]
        # One batch: math-verify's time is bounded for the whole call (answers.MATH_VERIFY_BATCH_S).
        matches = answers_match_batch([completion_text(completions[i]) for i in known], [golds[i] for i in known],
                                      self.mode)
        rewards: list[float | None] = [None] * len(completions)
        for i, match in zip(known, matches):
            rewards[i] = float(match)
            if log_metric is not None:  # TRL averages a step's values over all processes: the exact share
                log_metric(self.metric, float(match))
        return rewards

    def __repr__(self) -> str:
        return f"CorrectnessReward(mode={self.mode!r})"


correctness_reward = CorrectnessReward()
correctness_reward_strict = CorrectnessReward("strict")


def format_reward(completions: Sequence[Any], **kwargs) -> list[float]:
    r"""Reward 1.0 when the completion ends with a ``#### <number>`` line (the format the prompt asks for), else 0.0.

    Args:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        **kwargs: Dataset columns and trainer arguments; unused.

    Returns:
        One float per completion.

    Example:
    ```python
    >>> from trl_gsm8k.rewards import format_reward
    >>> format_reward(["3 + 4 = 7\n#### 7", "#### 7\nHope that helps!", "The answer is 7."])
    [1.0, 0.0, 0.0]

    ```
    """
    return [float(declares_strict_answer_last(completion_text(c))) for c in completions]


class LengthReward:
    r"""1.0 when the completion's length in characters lies strictly inside ``(min_chars, max_chars)``, else 0.0.

    The module's ``length_reward`` is ``LengthReward()``: the tutorial's window of 50 to 500 characters.

    Args:
        min_chars, max_chars: The window, exclusive.

    Example:
    ```python
    >>> from trl_gsm8k.rewards import length_reward
    >>> length_reward(["#### 7", "She has 16 - 3 - 4 = 9 eggs and sells them at $2: 9 * 2 = 18.\n#### 18"])
    [0.0, 1.0]

    ```
    """

    def __init__(self, min_chars: int = 50, max_chars: int = 500) -> None:
        if not 0 <= min_chars < max_chars:
            raise ValueError(f"need 0 <= min_chars < max_chars, got {min_chars} and {max_chars}")
        self.min_chars, self.max_chars = min_chars, max_chars
        self.__name__ = "length_reward"

    def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        lengths = [len(completion_text(c) or "") for c in completions]
        return [float(self.min_chars < n < self.max_chars) for n in lengths]

    def __repr__(self) -> str:
        return f"LengthReward(min_chars={self.min_chars}, max_chars={self.max_chars})"


length_reward = LengthReward()


class ShapedReward:
    r"""The tutorial's shaped reward: ``w_c * correctness + w_f * format + w_l * length``.

    The module's ``shaped_reward`` is ``ShapedReward()``: ``1.0 * correct + 0.1 * format + 0.05 * length``.
    Picklable (no closures), so it survives multiprocessing and ``accelerate launch``. ``None`` (unreadable gold)
    propagates: the completion is skipped rather than scored on format alone. Its correctness term logs
    ``accuracy`` as :class:`CorrectnessReward` does.

    Args:
        correctness_weight, format_weight, length_weight: The weights (tutorial: 1.0, 0.1, 0.05).
        min_chars, max_chars: The length window in characters (tutorial: 50, 500).
        mode: Extraction mode of the correctness term.

    Example:
    ```python
    >>> from trl_gsm8k.rewards import shaped_reward
    >>> good = "She has 16 - 3 - 4 = 9 eggs and sells them at $2: 9 * 2 = 18.\n#### 18"
    >>> [round(r, 2) for r in shaped_reward([good, "#### 18", "#### 17"], answer=["18"] * 3)]
    [1.15, 1.1, 0.1]

    ```
    """

    def __init__(
        self,
        correctness_weight: float = 1.0,
        format_weight: float = 0.1,
        length_weight: float = 0.05,
        min_chars: int = 50,
        max_chars: int = 500,
        mode: Mode = "flexible",
    ) -> None:
        self.weights = (float(correctness_weight), float(format_weight), float(length_weight))
        self.correctness = CorrectnessReward(mode)
        self.length = LengthReward(min_chars, max_chars)
        self.__name__ = "shaped_reward"

    def __call__(self, completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **kwargs) -> list[float | None]:
        w_c, w_f, w_l = self.weights
        correct = self.correctness(completions, answer, log_metric=log_metric)
        parts = zip(correct, format_reward(completions), self.length(completions))
        return [None if c is None else w_c * c + w_f * f + w_l * n for c, f, n in parts]

    def __repr__(self) -> str:
        w_c, w_f, w_l = self.weights
        return (
            f"ShapedReward(correctness_weight={w_c}, format_weight={w_f}, length_weight={w_l}, "
            f"min_chars={self.length.min_chars}, max_chars={self.length.max_chars}, mode={self.correctness.mode!r})"
        )


shaped_reward = ShapedReward()


def steps_reward(completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 solution: Sequence[Any] | None = None, **kwargs) -> list[float | None]:
    r"""Partial credit for the reasoning: how well the results a completion computes match the gold solution's steps.

    The gold's steps are read from the ``solution`` column when the dataset has one (:func:`~trl_gsm8k.data.load_gsm8k`
    does: the numbers after ``=``), else from ``answer`` when it is the full GSM8K text (its calculator annotations
    ``<<48/2=24>>``), else the final answer is the one step; the completion's are the numbers it writes after ``=``.
    The reward is the F1 of the two sets: recall credits each gold step reached, precision keeps number spam from
    paying (and more than ``MAX_STEPS`` results score 0). A denser signal than correctness for a model that rarely gets a problem
    fully right; pair it with :func:`correctness_reward`, which it does not replace.

    Args:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        answer: The gold per completion: the GSM8K answer text or the bare final number.
        solution: The worked gold solution per completion (optional; ``load_gsm8k``'s column).
        **kwargs: Other dataset columns and trainer arguments; unused.

    Returns:
        One float in [0, 1] per completion, ``None`` where the gold has no readable number.

    Example:
    ```python
    >>> from trl_gsm8k.rewards import steps_reward
    >>> gold = "In May: 48/2 = <<48/2=24>>24 clips. In all: 48+24 = <<48+24=72>>72 clips.\n#### 72"
    >>> completions = ["48 / 2 = 24 in May, 48 + 24 = 72.\n#### 72", "48 / 2 = 24, 24 + 2 = 26.\n#### 26",
    ...                "48 * 2 = 96.\n#### 96", " ".join(f"{i} = {i}" for i in range(100))]
    >>> [round(r, 2) for r in steps_reward(completions, answer=[gold] * 4)]
    [1.0, 0.5, 0.0, 0.0]

    ```
    """
    golds = _gold_values(answer, len(completions))
    rewards: list[float | None] = []
    if solution is not None and len(solution) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(solution)} solutions")
    solutions = [None] * len(completions) if solution is None else solution
    for c, a, sol, gold in zip(completions, answer, solutions, golds):
        if gold is None:
            rewards.append(None)
            continue
        target = gold_steps(sol) or gold_steps(a) or frozenset([gold])
        results = equation_results(completion_text(c))
        reached = len(target & set(results))
        if not reached or len(results) > MAX_STEPS:
            rewards.append(0.0)
            continue
        precision, recall = reached / len(set(results)), reached / len(target)
        rewards.append(2 * precision * recall / (precision + recall))
    return rewards


REWARDS = {
    "correctness": correctness_reward,
    "correctness_strict": correctness_reward_strict,
    "format": format_reward,
    "length": length_reward,
    "shaped": shaped_reward,
    "steps": steps_reward,
}
"""Short names used by recipes (``reward_funcs: [correctness, format]``)."""


def get_reward_funcs(names: Sequence[str]) -> list:
    """Reward callables from short names (``correctness``, ``format``, ...) or dotted paths (``pkg.mod.func``).

    >>> [f.__name__ for f in get_reward_funcs(["correctness", "trl_gsm8k.rewards.format_reward"])]
    ['correctness_reward', 'format_reward']
    >>> get_reward_funcs(["corect"])
    Traceback (most recent call last):
    ...
    ValueError: Unknown reward function 'corect': ...
    """
    if not names:
        raise ValueError(f"reward_funcs is empty: name at least one of {sorted(REWARDS)} or a dotted path.")
    funcs = []
    for name in names:
        if name in REWARDS:
            funcs.append(REWARDS[name])
            continue
        module_name, _, attr = name.rpartition(".")
        try:
            func: Any = getattr(importlib.import_module(module_name), attr) if module_name else None
        except (ImportError, AttributeError):
            func = None
        if not callable(func):
            raise ValueError(
                f"Unknown reward function {name!r}: use one of {sorted(REWARDS)} or a dotted import path to a "
                "callable such as trl_gsm8k.rewards.correctness_reward."
            )
        funcs.append(func)
    return funcs
