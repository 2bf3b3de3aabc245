r"""GSM8K reward functions for TRL's `GRPOTrainer` (and any TRL job that takes reward callables).

Each follows TRL's reward contract: ``f(completions, answer, **kwargs) -> list[float | None]``. Completions are plain
strings or chat lists ``[{"role": "assistant", "content": ...}]``. The gold is the dataset's ``answer`` column (the full
GSM8K answer text ``... #### 18``, or a bare number), else its ``solution`` column, the name TRL's ``accuracy_reward``
and open-r1's datasets use (also LaTeX: ``\boxed{18}``, ``$18$``). With both, ``answer`` is the gold:
:func:`~trl_gsm8k.data.load_gsm8k`'s ``solution`` is the worked solution without the final number. Parsing lives in
:mod:`trl_gsm8k.answers`.

They load by dotted path, e.g. ``trl grpo --reward_funcs trl_gsm8k.rewards.correctness_reward ...``.
A reward with settings is a small picklable class (:class:`CorrectnessReward`, :class:`LengthReward`,
:class:`ShapedReward`, :class:`TagFormatReward`) and its default is a module-level instance of it
(``correctness_reward = CorrectnessReward()``); a reward without settings is a function (:func:`format_reward`,
:func:`steps_reward`).
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from .answers import (
    MAX_STEPS,
    Mode,
    answers_match_batch,
    declares_strict_answer_last,
    equation_results,
    extract_answer,
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


def _gold_values(answer: Sequence[Any] | None, solution: Sequence[Any] | None, n: int) -> list[Fraction | None]:
    """The gold per completion, from ``answer`` when the dataset has it, else from ``solution``."""
    column, name = (answer, "answers") if answer is not None else (solution, "solutions")
    if column is None:
        raise ValueError(
            "GSM8K rewards need the gold answers: the dataset must have an `answer` column (the GSM8K answer text "
            "ending with '#### N', or the bare number) or a `solution` column (the same, or LaTeX such as "
            "'\\boxed{18}'); with both, `answer` is the gold."
        )
    if len(column) != n:
        raise ValueError(f"got {n} completions but {len(column)} {name}")
    golds = []
    for a in column:
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
    (:class:`ShapedReward`) still reports it; and ``declare_rate`` (``declare_rate_strict``): the share of all
    completions that declare an answer, right or wrong.

    Args:
        mode: ``"flexible"`` (default) credits any declaration (``#### N``, ``\boxed{N}``, "the answer is N", ...);
            ``"strict"`` only ``#### N``. An answer that is never declared gets no credit, even if it is the last
            number of the working. See :mod:`trl_gsm8k.answers`.
        declarations: The only declarations credited, names from :data:`trl_gsm8k.answers.DECLARATIONS`
            (``"hash"``, ``"boxed"``, ``"answer_tag"``, ``"json"``, ``"phrase"``, ``"label"``; flexible mode);
            ``None`` (default): those of ``mode``. ``("answer_tag",)`` credits only ``<answer>N</answer>``: a job
            that trains one template makes it the only one that pays.

    Call arguments:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        answer: The gold per completion: GSM8K answer text (``... #### 18``) or a bare number.
        solution: The gold when there is no ``answer`` column (TRL's and open-r1's name): the same, or LaTeX
            (``\boxed{18}``, ``$18$``). Ignored when ``answer`` is given.
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
    >>> correctness_reward(["#### 18"], solution=["$\\boxed{18}$"])  # TRL's column name, LaTeX gold
    [1.0]
    >>> CorrectnessReward(declarations=("answer_tag",))(["#### 18", "<answer>18</answer>"], answer=["18"] * 2)
    [0.0, 1.0]

    ```
    """

    def __init__(self, mode: Mode = "flexible", declarations: Sequence[str] | None = None) -> None:
        extract_answer(None, mode, declarations)  # answers' own checks: a bad name fails as the recipe loads
        self.mode = mode
        if isinstance(declarations, str):
            declarations = (declarations,)
        self.declarations = None if declarations is None else tuple(declarations)
        self.__name__ = "correctness_reward" if mode == "flexible" else f"correctness_reward_{mode}"
        self.metric = "accuracy" if mode == "flexible" else f"accuracy_{mode}"
        # The share of completions that declare any answer under the same rules, right or wrong (the evaluation
        # summary's declare_rate): what moves first in a small model, before accuracy does.
        self.declare_metric = "declare_rate" if mode == "flexible" else f"declare_rate_{mode}"

    def __call__(self, completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 solution: Sequence[Any] | None = None, log_metric: Callable[[str, float], None] | None = None,
                 **kwargs) -> list[float | None]:
        golds = _gold_values(answer, solution, len(completions))
        known = [i for i, gold in enumerate(golds) if gold is not None]
        # One batch: math-verify's time is bounded for the whole call (answers.MATH_VERIFY_BATCH_S).
        matches = answers_match_batch([completion_text(completions[i]) for i in known], [golds[i] for i in known],
                                      self.mode, declarations=self.declarations)
        rewards: list[float | None] = [None] * len(completions)
        for i, match in zip(known, matches):
            rewards[i] = float(match)
            if log_metric is not None:  # TRL averages a step's values over all processes: the exact share
                log_metric(self.metric, float(match))
        if log_metric is not None:
            for completion in completions:
                declared = extract_answer(completion_text(completion), self.mode, self.declarations) is not None
                log_metric(self.declare_metric, float(declared))
        return rewards

    def __repr__(self) -> str:
        return f"CorrectnessReward(mode={self.mode!r}, declarations={self.declarations!r})"


correctness_reward = CorrectnessReward()
correctness_reward_strict = CorrectnessReward("strict")


def find_correctness(reward_funcs: Sequence[Any]) -> tuple[int, CorrectnessReward] | None:
    """The first correctness reward among a trainer's reward functions, with its index: a :class:`CorrectnessReward`
    itself, or the correctness term a reward carries (:class:`ShapedReward`'s). ``None`` when there is none. Its
    ``metric`` is the accuracy the run logs, its ``mode`` and ``declarations`` how it judges.

    >>> i, judge = find_correctness([format_reward, ShapedReward(mode="strict")])
    >>> i, judge.metric
    (1, 'accuracy_strict')
    >>> find_correctness([format_reward]) is None
    True
    """
    for i, func in enumerate(reward_funcs):
        judge = func if isinstance(func, CorrectnessReward) else getattr(func, "correctness", None)
        if isinstance(judge, CorrectnessReward):
            return i, judge
    return None


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


# The template's tags, lower case only: the templates that use them (R1-Zero, the GSM8K GRPO notebooks) write them so,
# and trl_gsm8k.answers reads a think block by its lower-case '</think>'.
_TEMPLATE_TAG_RE = re.compile(r"</?(?:think|reasoning|answer)>")
_THINK_BLOCKS = (["<think>", "</think>"], ["<reasoning>", "</reasoning>"])
END_OF_TURN_TOKENS = (
    "</s>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>",
)
"""End-of-turn tokens a completion may still end with (when the tokenizer does not mark them special, decoding keeps
them): Llama 2/Mistral, ChatML (Qwen, SmolLM2), Llama 3 instruct, GPT-2/Qwen base, Llama 3 base, DeepSeek."""


class TagFormatReward:
    r"""1.0 when the completion is exactly the tag template, ``<think>…</think> <answer>N</answer>``, else 0.0.

    The template of R1-Zero (open-r1's format reward checks it), and with ``<reasoning>…</reasoning>`` of the most
    copied GSM8K GRPO notebooks. Credited: optional whitespace, a ``<think>…</think>`` (or
    ``<reasoning>…</reasoning>``) block, optional whitespace, an ``<answer>…</answer>`` whose content declares one
    readable number (:func:`trl_gsm8k.answers.extract_answer` with ``declarations=("answer_tag",)``: ``72``, ``$72``,
    not ``72 or 73`` nor ``seventy-two``), then only whitespace and end-of-turn tokens (:data:`END_OF_TURN_TOKENS`).
    Any other ``<think>``, ``<reasoning>`` or ``<answer>`` tag (nested, repeated, unclosed) or text outside the
    blocks scores 0. Tags are lower case (``<ANSWER>`` is not the template). TRL's ``think_format_reward`` checks the
    think block only; :func:`format_reward` is this reward for the ``#### N`` template. Whether the number is right
    is :class:`CorrectnessReward`'s to say.

    The module's ``tag_format_reward`` is ``TagFormatReward()``.

    Args:
        think_opened_in_prompt: The prompt itself ends with ``<think>`` (R1-Zero's ``Assistant: <think>``, or a chat
            template that opens the block, as DeepSeek-R1-Distill's does), so the completion starts inside the think
            block: it is credited for the rest of that block, ``…</think>``, then the answer; writing ``<think>``
            again is a second block and scores 0. Default ``False``: the completion opens the block itself.

    Call arguments:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        **kwargs: Dataset columns and trainer arguments; unused.

    Returns:
        One float per completion.

    Example:
    ```python
    >>> from trl_gsm8k.rewards import TagFormatReward, tag_format_reward
    >>> tag_format_reward(["<think>48 + 24 = 72</think> <answer>72</answer>", "<answer>72</answer>",
    ...                    "<think>48 + 24</think> <answer>72</answer> Hope that helps!"])
    [1.0, 0.0, 0.0]
    >>> TagFormatReward(think_opened_in_prompt=True)(["48 + 24 = 72</think>\n<answer>72</answer>"])
    [1.0]

    ```
    """

    def __init__(self, think_opened_in_prompt: bool = False) -> None:
        self.think_opened_in_prompt = bool(think_opened_in_prompt)
        self.__name__ = "tag_format_reward"

    def __call__(self, completions: Sequence[Any], **kwargs) -> list[float]:
        return [float(self._follows_template(completion_text(c))) for c in completions]

    def _follows_template(self, text: str | None) -> bool:
        if not isinstance(text, str):
            return False
        body = text.rstrip()
        while token := next((t for t in END_OF_TURN_TOKENS if body.endswith(t)), None):
            body = body[:-len(token)].rstrip()
        tags = list(_TEMPLATE_TAG_RE.finditer(body))
        names = [m.group(0) for m in tags]
        if self.think_opened_in_prompt:
            expected = [["</think>", "<answer>", "</answer>"]]  # text before '</think>' is the think block's
        else:
            expected = [[*block, "<answer>", "</answer>"] for block in _THINK_BLOCKS]
            if tags and body[:tags[0].start()].strip():
                return False
        if names not in expected:
            return False
        think_end, answer_start, answer_end = tags[-3].end(), tags[-2].start(), tags[-1].end()
        if body[think_end:answer_start].strip() or answer_end != len(body):
            return False
        return extract_answer(body[answer_start:], declarations=("answer_tag",)) is not None

    def __repr__(self) -> str:
        return f"TagFormatReward(think_opened_in_prompt={self.think_opened_in_prompt})"


tag_format_reward = TagFormatReward()


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
    ``accuracy`` (``accuracy_strict``) as :class:`CorrectnessReward` does.

    Args:
        correctness_weight, format_weight, length_weight: The weights (tutorial: 1.0, 0.1, 0.05).
        min_chars, max_chars: The length window in characters (tutorial: 50, 500).
        mode, declarations: Those of the correctness term (:class:`CorrectnessReward`).

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
        declarations: Sequence[str] | None = None,
    ) -> None:
        self.weights = (float(correctness_weight), float(format_weight), float(length_weight))
        self.correctness = CorrectnessReward(mode, declarations)
        self.length = LengthReward(min_chars, max_chars)
        self.__name__ = "shaped_reward"

    def __call__(self, completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 solution: Sequence[Any] | None = None, log_metric: Callable[[str, float], None] | None = None,
                 **kwargs) -> list[float | None]:
        w_c, w_f, w_l = self.weights
        correct = self.correctness(completions, answer, solution=solution, log_metric=log_metric)
        parts = zip(correct, format_reward(completions), self.length(completions))
        return [None if c is None else w_c * c + w_f * f + w_l * n for c, f, n in parts]

    def __repr__(self) -> str:
        w_c, w_f, w_l = self.weights
        return (
            f"ShapedReward(correctness_weight={w_c}, format_weight={w_f}, length_weight={w_l}, "
            f"min_chars={self.length.min_chars}, max_chars={self.length.max_chars}, mode={self.correctness.mode!r}, "
            f"declarations={self.correctness.declarations!r})"
        )


shaped_reward = ShapedReward()


def steps_reward(completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 solution: Sequence[Any] | None = None, **kwargs) -> list[float | None]:
    r"""Partial credit for the reasoning: how well the results a completion computes match the gold solution's steps.

    The gold's steps are read from the ``solution`` column when the dataset has one (:func:`~trl_gsm8k.data.load_gsm8k`
    does: the numbers after ``=``), else from ``answer`` when it is the full GSM8K text (its calculator annotations
    ``<<48/2=24>>``), else the final answer is the one step; the completion's are the numbers it writes after ``=``.
    Without an ``answer`` column, ``solution`` is the gold too (as in :class:`CorrectnessReward`).
    The reward is the F1 of the two sets: recall credits each gold step reached, precision keeps number spam from
    paying (and more than ``MAX_STEPS`` results score 0). A denser signal than correctness for a model that rarely gets a problem
    fully right; pair it with :func:`correctness_reward`, which it does not replace.

    Args:
        completions: Plain strings or chat lists ``[{"role": "assistant", "content": ...}]``.
        answer: The gold per completion: the GSM8K answer text or the bare final number.
        solution: The worked gold solution per completion (optional; ``load_gsm8k``'s column); the gold itself when
            there is no ``answer``.
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
    golds = _gold_values(answer, solution, len(completions))
    rewards: list[float | None] = []
    if solution is not None and len(solution) != len(completions):
        raise ValueError(f"got {len(completions)} completions but {len(solution)} solutions")
    solutions = [None] * len(completions) if solution is None else solution
    for c, a, sol, gold in zip(completions, solutions if answer is None else answer, solutions, golds):
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
    "tag_format": tag_format_reward,
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
