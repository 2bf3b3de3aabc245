r"""Answer extraction for GSM8K: the gold `#### N` and the final answer a completion declares.

All parsing of the package lives here. Pure functions, no torch, no model: they test in milliseconds.

Two modes read a completion:

- ``strict``: only ``#### N`` counts, the format the training prompt asks for.
- ``flexible``: any *declaration* counts: ``#### N``, ``\boxed{N}``, "the answer is N", "final answer is N",
  ``Answer: N`` / ``A: N`` / ``**Answer:** N`` at the start of a line, a ``## Final Answer`` heading followed
  by the value.

In both modes the **last** declaration wins ("#### 20 ... wait, that's wrong ... #### 21" → 21), and text after it
(other numbers included) does not change it. A ``<think>...</think>`` block is never read: the answer comes after
the last ``</think>``; a think block that never closed has declared nothing. A declaration must be of one number:
one of several (``18 or 19``, ``18, 19``, ``18 to 19``, ``between 18 and 19``) or a negated one (``is not 18``)
declares nothing.

Difference with lm-evaluation-harness and verl: their "flexible" modes take the *last number anywhere in the
text*, which credits number spam and answers left in the working. Ours requires a declaration: a completion
that never declares an answer gets none, even when its last number equals the gold.

Numbers are compared exactly as fractions: ``18.00 == 18``, ``18.5 != 18``, ``1,234 == 1234``, ``$18 == 18``.
Inputs are bounded (length, digits, LaTeX nesting), and the math-verify fallback for LaTeX the fast path cannot
read runs in a separate process under hard time limits (``MATH_VERIFY_*`` below: per input, per batch, start-up),
so no input can hang the caller, on any thread.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from typing import Literal

logger = logging.getLogger(__name__)

Mode = Literal["strict", "flexible"]

MAX_COMPLETION_CHARS = 100_000
"""Longer completions are read only in their last MAX_COMPLETION_CHARS characters (where the answer is)."""
MAX_NUMBER_DIGITS = 40
"""Numbers with more digits than this are treated as unreadable (GSM8K answers have at most 8)."""
MAX_LATEX_CHARS = 200
"""Boxed LaTeX longer than this is not handed to math-verify."""
MATH_VERIFY_TIMEOUT_S = 2.0
"""Most seconds one input spends in math-verify, on every call (the child kills it then: it scores 0)."""
MATH_VERIFY_BATCH_S = 6.0
"""Most seconds one batch (:func:`answers_match_batch`, so one reward call) waits on math-verify in all; once spent,
its remaining LaTeX answers score 0 unchecked."""
MATH_VERIFY_STARTUP_S = 20.0
"""Most seconds to wait for math-verify's child to start (it imports sympy: about a second), the first time an input
needs it; not charged to that input or its batch."""
_GRACE_S = 1.0  # for the child to stop an input and answer; past it, the child itself is killed and restarted

# A number as models write it: optional sign and currency, thousands commas, decimals, a trailing percent.
_NUMBER_RE = re.compile(
    r"[-−]?\s?(?:\\\$|\$)?\s?[-−]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|[-−]?\.[0-9]+"
)
_FRACTION_RE = re.compile(r"^(-?[0-9]+(?:\.[0-9]+)?)\s*/\s*(-?[0-9]+(?:\.[0-9]+)?)$")
_LATEX_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\s*\{\s*(-?[0-9.,]+)\s*\}\s*\{\s*(-?[0-9.,]+)\s*\}$")
# What may follow a number that stands alone: nothing, a unit word, a percent sign, punctuation.
_ALLOWED_AFTER_NUMBER = re.compile(r"$|[A-Za-z%.,;:!?()\[\]'\"]")
_SENTENCE_END_RE = re.compile(r"[.;!?](?=\s|$)")
_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
# A declaration of more than one number: after a number (and up to three unit words; one before a comma), a
# connector, a few filler words or a variable ("or x ="), then another number. A unit word ends where its letters do
# (no backtracking into it: a long run of letters costs linear time). "-" and "/" are not connectors: after
# a declared number they already make it unreadable, and inside \boxed{} they are arithmetic.
_ANOTHER_NUMBER_RE = re.compile(
    r"\s*(?:(?:[A-Za-z%]+\s*)?[,;]|(?:[A-Za-z%]+(?![A-Za-z%])\s*){0,3}?[(\[]?\s*"
    r"(?:\\?&|\||~|–|—|±|\+/-|\\pm|\\mp"
    r"|(?<![A-Za-z])(?:and/or|or|and|to|through|thru|till|until|vs\.?|versus|nor|plus\s+or\s+minus)(?![A-Za-z])))"
    r"\s*(?:(?<![A-Za-z])(?:maybe|perhaps|possibly|probably|either|even|else|rather|also|actually|alternatively|just"
    r"|or|and|to|is|it's|it\s+is|that|the|answer|answers|from)(?![A-Za-z])[\s:,]*)*"
    r"(?:[A-Za-z]\w{0,10}\s*=\s*)?(?:\\?\$\s?)?[-−]?\.?[0-9]",
    re.IGNORECASE,
)
# Words before a declared number that make it something other than the answer: a negation, a bound, a range.
_NEGATED_RE = re.compile(
    r"(?<![A-Za-z])(?:not|never|cannot|neither|nor|between|either|at\s+(?:least|most)|(?:more|less|fewer|greater)"
    r"\s+than|up\s+to)(?![A-Za-z])|n['’]t(?![A-Za-z])|[<>≤≥≠]"
    r"|\\(?:neq?|leq?|geq?|lt|gt|lor|vee|pm|mp)(?![A-Za-z])",
    re.IGNORECASE,
)
_EXPONENT_RE = re.compile(r"[eE]([+-]?[0-9]{1,2})(?![0-9])")
_LOOSE_EXPONENT_RE = re.compile(r"\s*[eE][+-]?[0-9]")

_STRICT_RE = re.compile(r"####\s*")
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:\*\*|__)?\s*(?:is|=|would\s+be|will\s+be|should\s+be)\s*:?"
    r"|final\s+answer\s*(?:\*\*|__)?\s*[:：]",
    re.IGNORECASE,
)
_LABEL_RE = re.compile(
    r"^[ \t>*_#-]*(?:final\s+answer|answer|ans|a)\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s*\**\s*final\s+answer\b[^\n]*\n", re.IGNORECASE | re.MULTILINE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_DIGIT_RE = re.compile(r"[0-9]")
_MARKUP_CHARS_RE = re.compile(r"[\\$*_`{]")
_LATEX_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textnormal|mbox)\s*\{([^{}]*)\}")
_LATEX_SPACING_RE = re.compile(r"\\(?:left|right|displaystyle|!|,|;|:| )")


def strip_annotations(solution: str) -> str:
    """Remove GSM8K calculator annotations ``<<a*b=c>>`` from a worked solution.

    >>> strip_annotations("She makes 9 * 2 = $<<9*2=18>>18 every day.")
    'She makes 9 * 2 = $18 every day.'
    """
    return _ANNOTATION_RE.sub("", solution)


def parse_number(text: str) -> Fraction | None:
    r"""Read one number as a model or a grader writes it; ``None`` if it is not exactly one number.

    Accepts thousands commas, a leading ``$`` (or ``\$``), a sign, decimals, a trailing ``%`` or unit word,
    a fraction ``a/b`` or ``\frac{a}{b}``.

    >>> parse_number("1,234")
    Fraction(1234, 1)
    >>> parse_number("$18.00") == 18, parse_number("18.5") == 18
    (True, False)
    >>> parse_number("-5"), parse_number("3/4"), parse_number("12 apples")
    (Fraction(-5, 1), Fraction(3, 4), Fraction(12, 1))
    >>> parse_number("twelve") is None
    True
    """
    if not isinstance(text, str):
        return None
    text = _clean_latex(text.strip())
    m = _LATEX_FRAC_RE.match(text)
    if m:
        return _fraction(m.group(1) + m.group(2), m.group(3))
    m = _FRACTION_RE.match(text.replace(",", ""))
    if m:
        return _fraction(m.group(1), m.group(2))
    m = _NUMBER_RE.match(text)
    return _standalone_number(text, m)


def extract_gold(answer: str | int | float | None) -> Fraction | None:
    """The gold final answer of a GSM8K row: the number after the last ``####``, or a bare number.

    >>> extract_gold("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\\n#### 18")
    Fraction(18, 1)
    >>> extract_gold("#### 1,234"), extract_gold("-7"), extract_gold(42)
    (Fraction(1234, 1), Fraction(-7, 1), Fraction(42, 1))
    >>> extract_gold("no final answer here") is None
    True
    """
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, (int, float)):
        try:
            return Fraction(answer)
        except (ValueError, OverflowError):
            return None
    if not isinstance(answer, str) or len(answer) > MAX_COMPLETION_CHARS:
        return None
    return _gold_from_text(answer)


@functools.lru_cache(maxsize=8192)  # a group's completions share one gold
def _gold_from_text(answer: str) -> Fraction | None:
    idx = answer.rfind("####")
    if idx >= 0:
        answer = answer[idx + 4:]
    return parse_number(answer.strip().splitlines()[0] if answer.strip() else "")


_ANNOTATION_RESULT_RE = re.compile(r"<<[^<>=]*=\s*([^<>=]+?)\s*>>")
_EQUATION_RESULT_RE = re.compile(r"=\s*((?:\\\$|\$)?\s?[-−]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?)")
MAX_STEPS = 64
"""Intermediate results read per text: a GSM8K solution has 2-8; more is number spam."""


def gold_steps(solution: str | None) -> frozenset[Fraction]:
    """The intermediate results of a GSM8K gold solution: its calculator annotations ``<<48/2=24>>``, or, in a
    solution without them (the ``solution`` column of :func:`trl_gsm8k.data.load_gsm8k`), the numbers after ``=``.

    >>> sorted(gold_steps("In May: 48/2 = <<48/2=24>>24. In all: 48+24 = <<48+24=72>>72.\\n#### 72"))
    [Fraction(24, 1), Fraction(72, 1)]
    >>> sorted(gold_steps("In May: 48/2 = 24. In all: 48+24 = 72."))
    [Fraction(24, 1), Fraction(72, 1)]
    >>> gold_steps("#### 72")
    frozenset()
    """
    if not isinstance(solution, str):
        return frozenset()
    found = _ANNOTATION_RESULT_RE.findall(solution[:MAX_COMPLETION_CHARS])[:MAX_STEPS]
    if found:
        return frozenset(v for v in map(_to_fraction, found) if v is not None)
    return frozenset(equation_results(solution)[:MAX_STEPS])


def equation_results(completion: str | None) -> list[Fraction]:
    """The numbers a completion writes right after ``=``: the results of its worked steps, in order.

    >>> equation_results("48 / 2 = 24 clips, then 48 + 24 = $72.\\n#### 72")
    [Fraction(24, 1), Fraction(72, 1)]
    """
    region = _answer_region(completion)
    if region is None:
        return []
    found = (_to_fraction(m) for m in _EQUATION_RESULT_RE.findall(region))
    return [v for v in found if v is not None][:MAX_STEPS + 1]


def extract_answer(completion: str | None, mode: Mode = "flexible") -> Fraction | None:
    r"""The final answer a completion *declares*, or ``None`` when it declares none.

    Args:
        completion: The model's text (a string; anything else yields ``None``).
        mode: ``"strict"`` reads only ``#### N``; ``"flexible"`` also reads ``\boxed{}``, "the answer is",
            ``Answer:`` lines and a ``## Final Answer`` heading. The last declaration wins.

    Returns:
        The declared number as an exact ``Fraction``, or ``None``.

    >>> extract_answer("3 + 4 = 7 eggs left, 7 * 2 = 14.\n#### 14")
    Fraction(14, 1)
    >>> extract_answer("So she makes $\\boxed{18}$ dollars.")
    Fraction(18, 1)
    >>> extract_answer("So she makes $\\boxed{18}$ dollars.", mode="strict") is None
    True
    >>> extract_answer("#### 20\nWait, that's wrong: 3 * 7 = 21.\n#### 21")
    Fraction(21, 1)
    >>> extract_answer("The total is 5 + 13 = 18.") is None  # no declaration, no answer
    True
    """
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
    text = _answer_region(completion)
    if text is None:
        return None
    value, _ = _last_declaration(text, mode)
    return value


def answers_match(completion: str | None, gold: str | int | float | Fraction | None, mode: Mode = "flexible") -> bool:
    r"""Whether the completion's declared final answer equals the gold.

    The gold is a GSM8K answer text (``... #### N``), a bare number, or a ``Fraction``. LaTeX the fast path cannot
    read (``\boxed{2 \times 9}``) is checked with math-verify in a separate process, at most
    :data:`MATH_VERIFY_TIMEOUT_S` seconds. To score many completions, :func:`answers_match_batch` bounds the whole.

    >>> answers_match("... so 9 * 2 = 18.\n#### $18.00", "#### 18")
    True
    >>> answers_match("The answer is \\boxed{\\frac{36}{2}}", "18")
    True
    >>> answers_match("18", "18")  # a bare number is not a declaration
    False
    >>> answers_match("#### 18 or 19", "18"), answers_match("The answer is not 18.", "18")  # not one number
    (False, False)
    """
    outcome = _fast_match(completion, gold, mode)
    if isinstance(outcome, bool):
        return outcome
    return _worker.equal(*outcome, MATH_VERIFY_TIMEOUT_S)


def answers_match_batch(
    completions: Sequence[str | None], golds: Sequence[str | int | float | Fraction | None], mode: Mode = "flexible",
    budget_s: float = MATH_VERIFY_BATCH_S,
) -> list[bool]:
    r""":func:`answers_match` for each completion and its gold, waiting on math-verify at most ``budget_s`` seconds
    in all (each input at most :data:`MATH_VERIFY_TIMEOUT_S`).

    Inputs that need math-verify go in order of a guessed cost (small literals first, so that honest LaTeX is not
    starved by ``\boxed{9^{999999999}}``), each distinct one once; when the budget is spent, the rest score ``False``.

    >>> answers_match_batch(["#### 18", r"\boxed{2 \times 9}", "#### 18 or 19"], ["18", "18", "18"])
    [True, True, False]
    """
    if len(completions) != len(golds):
        raise ValueError(f"got {len(completions)} completions but {len(golds)} golds")
    results: list[bool] = []
    pending: dict[tuple[str, str], list[int]] = {}
    for i, (completion, gold) in enumerate(zip(completions, golds)):
        outcome = _fast_match(completion, gold, mode)
        results.append(outcome if isinstance(outcome, bool) else False)
        if not isinstance(outcome, bool):
            pending.setdefault(outcome, []).append(i)
    if not pending or not _worker.start():  # start-up is bounded apart: MATH_VERIFY_STARTUP_S
        return results
    deadline = time.monotonic() + budget_s
    queue = sorted(pending.items(), key=lambda item: _latex_cost(item[0][0]))
    for n, ((latex, gold_text), indices) in enumerate(queue):
        left = deadline - time.monotonic()
        if left < 0.01:
            _worker.skipped += len(queue) - n
            logger.warning("math-verify's %.0f s for this batch are spent: %d LaTeX answers scored 0 unchecked",
                           budget_s, len(queue) - n)
            break
        ok = _worker.equal(latex, gold_text, min(MATH_VERIFY_TIMEOUT_S, left))
        for i in indices:
            results[i] = ok
    return results


def declares_strict_answer_last(completion: str | None) -> bool:
    """Whether the last non-empty line (after any think block) is a ``#### <number>`` declaration.

    This is the format the training prompt asks for.

    >>> declares_strict_answer_last("9 * 2 = 18\\n#### 18\\n")
    True
    >>> declares_strict_answer_last("#### 18\\nHope this helps!")
    False
    """
    text = _answer_region(completion)
    if not text:
        return False
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].strip().strip("*_` ")
    if not last.startswith("####"):
        return False
    return _read_value(last[4:])[0] is not None


# --- internals ---------------------------------------------------------------------------------------------------


def _fast_match(completion: object, gold: object, mode: Mode) -> bool | tuple[str, str]:
    """The verdict without math-verify, or ``(latex, gold)`` that it must settle (already screened)."""
    gold_value = gold if isinstance(gold, Fraction) else extract_gold(gold)
    if gold_value is None:
        return False
    text = _answer_region(completion)
    if text is None:
        return False
    value, latex = _last_declaration(text, mode)
    if value is not None:
        return value == gold_value
    if latex is None or not _math_verify_safe(latex):
        return False
    return latex, str(gold_value)  # "18", "3/4"


def _standalone_number(text: str, m: re.Match | None) -> Fraction | None:
    """The number matched by ``m`` unless it is part of an expression (``2 \\times 9``, ``5 + 13``) or the first of
    several (``18 or 19``, ``18, 19``, ``18 to 19``). ``1.8e1`` reads 18."""
    if m is None:
        return None
    rest = text[m.end():]
    exponent = _EXPONENT_RE.match(rest)
    if exponent:
        value = _to_fraction(m.group(0))
        rest = rest[exponent.end():]
        if value is not None:
            value *= Fraction(10) ** int(exponent.group(1))
    elif _LOOSE_EXPONENT_RE.match(rest):
        return None  # "1.8 e1", or an exponent too large to be an answer
    else:
        value = _to_fraction(m.group(0))
    if not _ALLOWED_AFTER_NUMBER.match(rest.lstrip()) or _ANOTHER_NUMBER_RE.match(rest):
        return None
    return value


def _fraction(num: str, den: str) -> Fraction | None:
    a, b = _to_fraction(num), _to_fraction(den)
    if a is None or b is None or b == 0:
        return None
    return a / b


def _to_fraction(token: str) -> Fraction | None:
    token = token.replace("−", "-").replace("\\$", "").replace("$", "").replace(",", "").replace(" ", "")
    negative = token.count("-") % 2 == 1
    token = token.replace("-", "")
    digits = len(_DIGIT_RE.findall(token))
    if digits == 0 or digits > MAX_NUMBER_DIGITS or not token.isascii():
        return None
    try:
        value = Fraction(int(token)) if token.isdigit() else Fraction(token)
    except (ValueError, ZeroDivisionError):
        return None
    return -value if negative else value


def _clean_latex(text: str) -> str:
    r"""Drop the LaTeX and markdown wrapping around a value: ``$``, ``\(``, ``\text{}``, ``\,``, ``**``."""
    if not _MARKUP_CHARS_RE.search(text):
        return text.strip()
    text = _LATEX_TEXT_RE.sub(r"\1", text)
    text = _LATEX_SPACING_RE.sub("", text)
    text = text.replace("\\%", "%").replace("{,}", ",").replace("\\(", "").replace("\\)", "")
    text = text.replace("\\[", "").replace("\\]", "").replace("**", "").replace("__", "").replace("`", "")
    text = text.strip()
    # Surrounding math dollars (not a currency sign in front of a number).
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    if text.startswith("$") and not re.match(r"\$\s?[-−]?[\d.]", text):
        text = text[1:].strip()
    if text.endswith("$") and text.count("$") == 1 and not text.startswith("$"):
        text = text[:-1].strip()
    return text.strip()


def _answer_region(completion: object) -> str | None:
    if not isinstance(completion, str) or not completion:
        return None
    close = completion.rfind("</think>")
    if close >= 0:
        completion = completion[close + len("</think>"):]
    elif "<think>" in completion:
        return None  # still thinking: nothing declared yet
    return completion[-MAX_COMPLETION_CHARS:]


def _read_value(segment: str) -> tuple[Fraction | None, bool]:
    """The value right after a declaration: the first number, or the result of a short ``a op b = c`` chain.

    Returns ``(value, declared)``: ``declared`` is false when the text holds no value; a value that is negated or
    one of several (``not 18``, ``18 or 19``, ``between 18 and 19``) is declared, as nothing: ``(None, True)``.
    """
    line = _clean_latex(segment.split("\n", 1)[0][:300])
    boxed = _boxed_contents(line)
    if boxed:
        value, _ = _boxed_value(boxed[-1][1])
        return value, True
    segment = _SENTENCE_END_RE.split(line, 1)[0]
    first = _NUMBER_RE.search(segment)
    if first is None:
        return None, False
    if _NEGATED_RE.search(segment[:first.start()]) or _ANOTHER_NUMBER_RE.match(line, first.end()):
        return None, True
    # "The answer is 3 * 6 = 18." reads the result after the last "=".
    if "=" in segment:
        start = segment.rindex("=") + 1
        start += len(segment[start:]) - len(segment[start:].lstrip())
        m = _NUMBER_RE.match(line, start)
    else:
        m = first
        # A few words may stand before the value ("is a total of $18"); a later sentence may not.
        if m.start() > 40:
            return None, False
    value = _standalone_number(line[:len(segment)], m) if m else None
    if value is not None and _ANOTHER_NUMBER_RE.match(line, m.end()):
        return None, True
    return value, value is not None


def _boxed_value(content: str) -> tuple[Fraction | None, str | None]:
    """``(value, None)`` for a number, ``(None, latex)`` for LaTeX to verify, ``(None, None)`` for several numbers or
    a negation (``\\boxed{18, 19}``, ``\\boxed{18 \\text{ or } 19}``, ``\\boxed{\\neq 18}``)."""
    text = _clean_latex(content)
    if _NEGATED_RE.search(text) or any(_ANOTHER_NUMBER_RE.match(text, m.end()) for m in _NUMBER_RE.finditer(text)):
        return None, None
    value = parse_number(content)
    return value, (content if value is None else None)


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    """``(position, content)`` of every ``\\boxed{...}`` with balanced braces (bounded nesting)."""
    found = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        limit = min(len(text), m.end() + 2 * MAX_LATEX_CHARS)
        while i < limit and depth:
            c = text[i]
            if c == "{":
                depth += 1
                if depth > 20:
                    break
            elif c == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found.append((m.start(), text[m.end():i - 1]))
    return found


def _last_declaration(text: str, mode: Mode) -> tuple[Fraction | None, str | None]:
    """The last declaration in ``text``: ``(value, None)``, or ``(None, latex)`` for boxed LaTeX to verify."""
    candidates: list[tuple[int, Fraction | None, str | None]] = []
    if "####" in text:
        for m in _STRICT_RE.finditer(text):
            candidates.append((m.start(), _read_value(text[m.end():])[0], None))
    if mode == "flexible":
        if "\\boxed" in text or "\\fbox" in text:
            for pos, content in _boxed_contents(text):
                candidates.append((pos, *_boxed_value(content)))
        # Cheap substring tests first: most completions hold none of these words.
        lowered = text.lower()
        regexes = (_PHRASE_RE, _HEADING_RE) if "answer" in lowered else ()
        if ":" in text or "：" in text:
            regexes += (_LABEL_RE,)
        for regex in regexes:
            for m in regex.finditer(text):
                rest = text[m.end():].lstrip(" \t*_:")
                if regex is _HEADING_RE or not rest.strip("\n"):
                    rest = rest.lstrip("\n")
                if rest.lstrip().startswith(("\\boxed", "$\\boxed", "\\(\\boxed", "\\[\\boxed", "\\[")):
                    continue  # the boxed candidate at that position speaks for it
                value, declared = _read_value(rest)
                if declared:  # a hedged "the answer is 18 or 19" declares nothing, and still comes last
                    candidates.append((m.start(), value, None))
    if not candidates:
        return None, None
    _, value, latex = max(candidates, key=lambda c: c[0])
    return value, latex


# --- math-verify fallback, in a child process so its sympy work can always be stopped ----------------------------
# A plain subprocess rather than multiprocessing: spawn/forkserver would re-import the user's __main__ script, and
# fork is unsafe in a process that already runs torch threads. The child imports math-verify once, then forks a
# grandchild per input (safe there: one thread, no torch) and kills it when its time is up, so a timeout costs that
# time and nothing else: no restart, no second import. math-verify's own timeout (signal.alarm) cannot stop sympy
# inside one long C call (9^999999999), a kill can.

_WORKER_CODE = r"""
import os, select, signal, sys
from math_verify import parse, verify

def check(latex, gold):
    try:
        return bool(verify(parse(gold), parse("$" + latex + "$", parsing_timeout=None), timeout_seconds=None))
    except Exception:
        return False

check("2 \\times 9", "18")  # sympy's lazy imports happen now, in the start-up, not on the first input
sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:
    timeout, latex, gold = line.rstrip("\n").split("\t", 2)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, b"1" if check(latex, gold) else b"0")
        os._exit(0)
    os.close(w)
    ready, _, _ = select.select([r], [], [], float(timeout))
    answer = (os.read(r, 1).decode() or "0") if ready else "T"
    if answer == "T":
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(r)
    sys.stdout.write(answer + "\n")
    sys.stdout.flush()
"""


class _MathVerifyWorker:
    """The long-lived child answering ``timeout<TAB>latex<TAB>gold`` lines with ``1``, ``0`` or ``T`` (timed out).

    The counters say what happened, for tests and logs: ``starts`` (children started), ``requests`` (inputs sent),
    ``timeouts`` (inputs the child stopped), ``kills`` (children killed for not answering), ``skipped`` (inputs not
    sent: their batch's time was spent).
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._broken = False
        self.starts = self.requests = self.timeouts = self.kills = self.skipped = 0

    def start(self) -> bool:
        """Start the child if it is not running and wait until it is ready; whether it is."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            return True  # running: no need to wait for another thread's input
        with self._lock:
            return self._started()

    def equal(self, latex: str, gold: str, timeout: float) -> bool:
        """Whether math-verify finds ``latex`` equal to ``gold`` within ``timeout`` seconds (waiting for another
        thread's input included; the child's start-up excluded, see :data:`MATH_VERIFY_STARTUP_S`)."""
        begin = time.monotonic()
        acquired = self._lock.acquire(timeout=timeout) if timeout > 0 else self._lock.acquire(blocking=False)
        if not acquired:
            self.skipped += 1
            return False
        try:
            waited = time.monotonic() - begin
            if not self._started():
                return False
            left = timeout - waited
            if left < 0.01:
                self.skipped += 1
                return False
            self.requests += 1
            self._proc.stdin.write(f"{left:.3f}\t{latex.replace(chr(10), ' ').replace(chr(9), ' ')}\t{gold}\n")
            self._proc.stdin.flush()
            answer = self._readline(left + _GRACE_S)
            if answer in ("0", "1"):
                return answer == "1"
            if answer == "T":
                self.timeouts += 1
                logger.warning("math-verify took over %.1f s on %r: scored as wrong", left, latex[:80])
                return False
            self.kills += 1
            logger.warning("math-verify's child stopped answering on %r: scored as wrong, child restarted", latex[:80])
            self.close()
            return False
        except (OSError, ValueError) as exc:
            self.kills += 1
            logger.warning("math-verify's child failed on %r (%s): scored as wrong, child restarted", latex[:80], exc)
            self.close()
            return False
        finally:
            self._lock.release()

    def _started(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        self.close()
        if self._broken:
            return False
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True,  # its own group: one kill ends it all
        )
        self.starts += 1
        answer = self._readline(MATH_VERIFY_STARTUP_S)
        if answer == "ready":
            return True
        if answer is None:
            logger.warning("math-verify's child did not start within %s s: this input scores 0, the next one "
                           "tries again", MATH_VERIFY_STARTUP_S)
        else:
            self._broken = True  # it exited: math-verify is missing or broken, and will stay so
            logger.error("math-verify cannot start in a child process (is it installed?): LaTeX answers that the "
                         "fast parser cannot read score 0")
        self.close()
        return False

    def _readline(self, timeout: float) -> str | None:
        """The child's next line, ``None`` if none came within ``timeout`` seconds, ``""`` if the child is gone."""
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        return self._proc.stdout.readline().strip() if ready else None

    def close(self) -> None:
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # never a hang: leave it, with its pipes closed it exits on its own
                logger.warning("math-verify's child %d did not exit when killed", self._proc.pid)
            for pipe in (self._proc.stdin, self._proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self._proc = None


_worker = _MathVerifyWorker()
atexit.register(_worker.close)


def _math_verify_safe(latex: str) -> bool:
    r"""Cheap screen: GSM8K answers never need towers of powers, factorials or deep nesting."""
    if len(latex) > MAX_LATEX_CHARS or "!" in latex or latex.count("^") > 1:
        return False
    if latex.count("{") > 12 or len(re.findall(r"[0-9]", latex)) > MAX_NUMBER_DIGITS:
        return False
    return True


def _latex_cost(latex: str) -> tuple[int, int]:
    """A guess at how long math-verify takes: huge literals (``9^{999999999}``) first, then length."""
    return max(map(len, re.findall(r"[0-9]+", latex)), default=0), len(latex)
