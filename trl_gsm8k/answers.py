r"""Answer extraction for GSM8K: the gold `#### N` and the final answer a completion declares.

All parsing of the package lives here. Pure functions, no torch, no model: they test in milliseconds.

Two modes read a completion: ``strict`` reads only ``#### N`` (the format the training prompt asks for);
``flexible`` reads every declaration below. ``declarations=`` names the ones that count, so a job can make its
own template the only one credited (``declarations=("answer_tag",)``).

**The grammar.** The answer is read in three steps: find the last declaration, cut its clause, read the clause.

1. *Region.* Thinking declares nothing: text inside ``<think>…</think>``, before a ``</think>`` whose opener was
   in the prompt, and after a ``<think>`` that never closes.
2. *Declarations* (:data:`DECLARATIONS`), the **last** one wins ("#### 20 … wait … #### 21" → 21); text after it
   never changes it:

   ============== =================================================================== ===========================
   name           marker                                                              clause
   ============== =================================================================== ===========================
   ``hash``       ``####``                                                            rest of the line [*]
   ``boxed``      ``\boxed{…}`` / ``\fbox{…}`` (balanced braces)                      its content
   ``answer_tag`` the last *closed* ``<answer …>…</answer>`` (any case)                its content [**]
   ``json``       a JSON object's ``"answer"`` / ``"final_answer"`` field              the string, or the number
   ``phrase``     "[the/final/correct/my] answer [to …/, as …,] is/was/would be/=/:"   rest of the line [*]
   ``label``      a line opening with ``Answer:``, ``A:``, ``Ans:``, ``Final Answer:``  rest of the line [*]
                  (bold, heading, list markup allowed), or a line that is only a
                  label or heading (``**Final Answer**``, ``## Final Answer``)
   ============== =================================================================== ===========================

   [*] when the rest of the line is empty, the next non-empty line (a ``$$…$$`` / ``\[…\]`` block whole).
   [**] an unclosed tag declares nothing itself. A declaration inside a tag or a JSON field (``\boxed{}``,
   "the answer is", ``####``) speaks for it; the other fields of the JSON object that holds the answer declare
   nothing. Not declarations: a phrase or label whose sentence makes the answer someone else's or a hypothesis
   ("A common mistake is to say the answer is 84", "Some might think…", "If the answer is 84, …"; "I think" and
   "we can say" are one's own), and a remark with no number ("the answer is correct").
3. *Clause.* Cut at the end of its first sentence (``.``/``!`` before a space or the end; ``?`` stays, it hedges),
   normalised (special tokens such as ``</s>``, markup tags, ``**``, math ``$``, currency signs, ``\text{}``,
   ``\left``, ``{,}`` go; ``\frac{a}{b}`` is ``a/b``; ``\times``, ``\geq``, ``\neq``, ``\pm`` become their signs;
   full-width punctuation its ASCII) and tokenised: numbers (``1,234``, ``18.00``, ``1.8e1``, ``3/4``, a clock
   ``2:00`` reads 2), words, operators, punctuation.
4. *Reading: one rule.* The answer is the **first number** of the clause, with what modifies it:

   - before it: a sign (``-8``, "negative 8", "minus 8") makes it negative; a negation (``not``, ``never``,
     ``n't``, ``cannot``), a bound or approximation (``at least``, ``more than``, ``up to``, ``about``,
     ``almost``, ``approximately``, ``~``, ``≥``, ``between``, ``either``) or a transformation (``half of``,
     ``twice``, ``the square root of``) leaves the clause committed to **nothing**; so does another number;
   - when words come first, the sentence is read as a field: it must hold that one number (repeated at most):
     "She will have $15 more." → 15, "Together 5 + 15 = 20 cookies." → nothing;
   - after it, text that describes something else is allowed, other numbers included: units and rates (``18
     apples``, ``18/day``, ``18%``), ``18 cookies and 2 left over``, ``18 apples in total, 9 in each box``,
     ``(= 25+10+70)``, ``since 9 + 9 = 18``, a scale word multiplies (``18 thousand`` is 18,000);
   - after it, text that offers another candidate for the same answer commits to **nothing**: an alternative
     (``or``, ``maybe``, ``could be``, ``unless``, ``(or 19)``; "or" anywhere later in the clause with a number
     after it), a range (``to``, ``through``, ``-``, ``–``, ``~``, ``±``), a list (``18, 19``, ``18; 19``, ``18
     and 19``, ``18 & 19``: a comma with at most a unit word before it, an "and" with none), a bound (``or
     more``, ``or so``, ``max``, ``18+``), a question mark, a transformation (``squared``, ``25% of 80``), an
     unfinished calculation (``18 + 2``; in a box it goes to math-verify);
   - a calculation that ends in ``=`` commits to its result: ``20 - 2 = 18`` → 18;
   - a correction inside the clause replaces what came before it: ``32... no wait, 34`` → 34; ``not 15 but
     8`` → 8; a retraction with no new number (``18, wait``) commits to nothing.

   Decisions on debatable forms: ``approximately 18`` and ``18 or so`` commit to nothing (no exact answer);
   ``18?`` commits to nothing; ``18 thousand`` is 18,000; ``18 apples and 19 pears`` is 18 (an "and" after a
   word describes something else) while ``18 apples, 19 pears`` is a list; a retraction on a later line ("The
   answer is 18.\nHmm, that's wrong.") does not undo the declaration: only a later declaration does. Number
   words (``eighteen``) are not read.

A declaration that commits to nothing still counts as the last one: "#### 18\nThe answer is 18 or 19." has no
answer. Markers are read from the end, at most :data:`MAX_MARKERS_READ`: past that a text is spam and declares nothing.

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
import bisect
import functools
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Literal, NamedTuple

logger = logging.getLogger(__name__)

Mode = Literal["strict", "flexible"]

MAX_COMPLETION_CHARS = 100_000
"""Longer completions are read only in their last MAX_COMPLETION_CHARS characters (where the answer is)."""
MAX_NUMBER_DIGITS = 40
"""Numbers with more digits than this are treated as unreadable (GSM8K answers have at most 8)."""
MAX_MARKERS_READ = 64
"""Markers read per text, from the end: when none of the last 64 declares an answer, the text declares none (a
solution makes a few; thousands are spam, and reading each would cost seconds)."""
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

_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
_DIGIT_RE = re.compile(r"[0-9]")

DECLARATIONS = ("hash", "boxed", "answer_tag", "json", "phrase", "label")
"""The declarations a completion can make, by name (see the module docstring); ``strict`` reads ``hash`` only."""


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
    return read_clause(text)


def extract_gold(answer: str | int | float | None) -> Fraction | None:
    """The gold final answer of a row: the number after the last ``####``, else in the last ``\\boxed{}`` (the LaTeX
    solutions of open-r1's datasets), else a bare number (``72``, ``$72$``).

    >>> extract_gold("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\\n#### 18")
    Fraction(18, 1)
    >>> extract_gold("#### 1,234"), extract_gold("-7"), extract_gold(42)
    (Fraction(1234, 1), Fraction(-7, 1), Fraction(42, 1))
    >>> extract_gold("So $48 + 24 = \\\\boxed{72}$."), extract_gold("$72$")
    (Fraction(72, 1), Fraction(72, 1))
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
    elif "\\boxed" in answer or "\\fbox" in answer:
        boxed = _boxed_contents(answer)
        return parse_number(boxed[-1][2]) if boxed else None  # an unclosed box is no gold, not its first line
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


def extract_answer(completion: str | None, mode: Mode = "flexible",
                   declarations: Sequence[str] | None = None) -> Fraction | None:
    r"""The final answer a completion *declares*, or ``None`` when it declares none.

    Args:
        completion: The model's text (a string; anything else yields ``None``).
        mode: ``"strict"`` reads only ``#### N``; ``"flexible"`` reads every declaration of :data:`DECLARATIONS`.
            The last declaration wins.
        declarations: Names from :data:`DECLARATIONS` that count (the others are not read), e.g. ``("answer_tag",)``
            to credit only a ``<answer>`` template; ``None`` for the mode's own set.

    Returns:
        The declared number as an exact ``Fraction``, or ``None``.

    >>> extract_answer("3 + 4 = 7 eggs left, 7 * 2 = 14.\n#### 14")
    Fraction(14, 1)
    >>> extract_answer("So she makes $\\boxed{18}$ dollars.")
    Fraction(18, 1)
    >>> extract_answer("So she makes $\\boxed{18}$ dollars.", mode="strict") is None
    True
    >>> extract_answer("<think>48+24</think> <answer>72</answer>")
    Fraction(72, 1)
    >>> extract_answer('```json\n{"reasoning": "48+24", "answer": "72"}\n```')
    Fraction(72, 1)
    >>> extract_answer("#### 20\nWait, that's wrong: 3 * 7 = 21.\n#### 21")
    Fraction(21, 1)
    >>> extract_answer("The total is 5 + 13 = 18.") is None  # no declaration, no answer
    True
    """
    kinds = _kinds(mode, declarations)
    text = _answer_region(completion)
    if text is None:
        return None
    value, _ = _last_declaration(text, kinds)
    return value


def answers_match(completion: str | None, gold: str | int | float | Fraction | None, mode: Mode = "flexible",
                  declarations: Sequence[str] | None = None) -> bool:
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
    outcome = _fast_match(completion, gold, _kinds(mode, declarations))
    if isinstance(outcome, bool):
        return outcome
    return _worker.equal(*outcome, MATH_VERIFY_TIMEOUT_S)


def answers_match_batch(
    completions: Sequence[str | None], golds: Sequence[str | int | float | Fraction | None], mode: Mode = "flexible",
    budget_s: float = MATH_VERIFY_BATCH_S, declarations: Sequence[str] | None = None,
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
    kinds = _kinds(mode, declarations)
    results: list[bool] = []
    pending: dict[tuple[str, str], list[int]] = {}
    for i, (completion, gold) in enumerate(zip(completions, golds)):
        outcome = _fast_match(completion, gold, kinds)
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
    lines = [line for line in _SPECIAL_TOKEN_RE.sub("", text).strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = lines[-1].strip().strip("*_` ")
    if not last.startswith("####"):
        return False
    return read_clause(last[4:]) is not None


# --- the answer grammar ----------------------------------------------------------------------------------------------


def _kinds(mode: Mode, declarations: Sequence[str] | None) -> frozenset[str]:
    if mode not in ("strict", "flexible"):
        raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
    if declarations is None:
        return _ALL_KINDS if mode == "flexible" else _STRICT_KINDS
    if isinstance(declarations, str):
        declarations = (declarations,)
    kinds = frozenset(declarations)
    unknown = sorted(kinds - _ALL_KINDS)
    if unknown or not kinds:
        raise ValueError(f"declarations must name some of {list(DECLARATIONS)}, got {list(declarations)!r}")
    if mode == "strict" and kinds != _STRICT_KINDS:
        raise ValueError("strict mode reads only 'hash' (#### N); use mode='flexible' to name other declarations")
    return kinds


_ALL_KINDS = frozenset(DECLARATIONS)
_STRICT_KINDS = frozenset({"hash"})
_INNER_KINDS = frozenset({"hash", "boxed", "phrase", "label"})  # what may speak for an answer tag's or field's content

# Normalisation of a clause: wrappers that carry no value go, LaTeX operators become their plain sign.
_SPECIAL_TOKEN_RE = re.compile(r"</s>|<s>|<\|[A-Za-z0-9_]{1,30}\|>|<eos>|<end_of_turn>|<start_of_turn>|\[/?INST\]")
_MARKUP_TAG_RE = re.compile(r"</?[A-Za-z][A-Za-z0-9_-]{0,20}(?:\s[^<>]{0,100})?/?>")
_LATEX_WRAP_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mathit|textnormal|mbox|operatorname|emph)\s*\{([^{}]*)\}")
_LATEX_FRAC_TEXT_RE = re.compile(r"\\[dt]?frac\s*\{\s*([0-9.,]+)\s*\}\s*\{\s*([0-9.,]+)\s*\}")
_LATEX_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac([0-9])([0-9])")
_LATEX_THOUSANDS_RE = re.compile(r"(?<=[0-9])(?:\{,\}|\\,|\\!|\\ )(?=[0-9]{3}(?![0-9]))")
_LATEX_SYMBOLS = {
    "times": " × ", "cdot": " × ", "ast": " × ", "div": " ÷ ", "pm": " ± ", "mp": " ± ", "approx": " ≈ ",
    "sim": " ~ ", "simeq": " ≈ ", "geq": " ≥ ", "ge": " ≥ ", "geqslant": " ≥ ", "leq": " ≤ ", "le": " ≤ ",
    "leqslant": " ≤ ", "neq": " ≠ ", "ne": " ≠ ", "lt": " < ", "gt": " > ", "lor": " or ", "vee": " or ",
    "land": " and ", "wedge": " and ", "to": " to ", "rightarrow": " → ", "Rightarrow": " → ", "implies": " → ",
    "%": "%", "$": "$", "&": " & ", "{": " ", "}": " ", "#": "#", "_": "_",
    "left": "", "right": "", "displaystyle": "", "bigl": "", "bigr": "", "Big": "", "big": "",
    ",": " ", ";": " ", ":": " ", "!": "", " ": " ", "quad": " ", "qquad": " ", "(": " ", ")": " ", "[": " ",
    "]": " ", "boxed": "", "fbox": "",
}
_LATEX_SYMBOL_RE = re.compile(r"\\([A-Za-z]+|[%$&{}#_,;:! ()\[\]])")
_UNICODE_PUNCT = str.maketrans({
    "−": "-", "‐": "-", "‑": "-", "，": ",", "。": ".", "．": ".", "！": "!", "？": "?", "：": ":", "；": ";",
    "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "‘": "'", "’": "'", "\u00a0": " ", "\u202f": " ",
    "\u2009": " ", "（": "(", "）": ")", "$": " ", "€": " ", "£": " ", "¥": " ", "₹": " ", "*": "*", "`": " ",
})
_MARKDOWN_RE = re.compile(r"\*\*|__|(?<![0-9 ])\*(?![0-9 ])")

# Tokens of a clause. A number has no sign (a "-" before it is a sign only where no number precedes it):
# thousands commas, decimals, an exponent of at most two digits, a fraction "a/b" written without spaces.
_TOKEN_RE = re.compile(
    r"(?P<clock>(?<![0-9.,])[0-9]{1,2}:[0-9]{2}(?![0-9]))"
    r"|(?P<num>(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2}(?![0-9]))?"
    r"(?:/(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?![0-9/]))?|\.[0-9]+)"
    r"|(?P<word>[^\W\d_]+(?:'[^\W\d_]+)*)"
    r"|(?P<op>\+/-|\.\.\.+|…|[-+×÷/^=~≈<>≤≥≠±–—→*x])"
    r"|(?P<punct>\S)"
)
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "k": 1000}
_SIGN_WORDS = frozenset({"negative", "minus"})
_WORD_OPERATORS = {"minus": "-", "plus": "+", "times": "×", "multiplied": "×", "divided": "÷"}  # after a number
# Before the number: these make it something other than the committed answer.
_NEGATIONS = frozenset({"not", "never", "neither", "nor", "cannot"})
_BOUND_WORDS = frozenset({  # anywhere before the number
    "almost", "nearly", "approximately", "approx", "roughly", "circa", "between", "either", "estimated", "somewhere",
    "possibly", "maybe", "perhaps", "probably",
})
_NEAR_BOUND_WORDS = frozenset({  # right before it (two words at most): "at least", "more than", "about"
    "least", "most", "than", "over", "under", "above", "below", "upto", "within", "maximum", "minimum", "max", "min",
    "about", "around", "exceeding", "beyond",
})
_TRANSFORM_WORDS = frozenset({
    "half", "twice", "double", "triple", "thrice", "quarter", "square", "sqrt", "root", "cube", "squared", "cubed",
    "percent", "percentage", "product", "sum", "difference", "quotient", "factorial", "log",
})
_BOUND_SIGNS = frozenset({"~", "≈", "<", ">", "≤", "≥", "≠", "±"})
# After the number.
_RANGE_WORDS = frozenset({"to", "through", "thru", "till", "until", "vs", "versus", "nor", "and/or"})
_ALTERNATIVE_WORDS = frozenset({
    "or", "maybe", "perhaps", "possibly", "probably", "could", "might", "unless", "otherwise", "alternatively",
    "either",
})
_BOUND_AFTER = frozenset({  # right after the number: "18 max", "18ish", "18 plus"
    "max", "maximum", "min", "minimum", "tops", "ish", "approx", "approximately", "roughly", "plus", "thereabouts",
})
_OR_BOUNDS = frozenset({  # after "or": "18 or more", "18 or so"
    "more", "less", "fewer", "so", "above", "below", "over", "under", "higher", "lower", "greater", "smaller",
    "later", "earlier", "thereabouts", "something", "thereabout", "bigger", "larger", "longer", "shorter",
})
_AFTER_TRANSFORMS = frozenset({"squared", "cubed", "factorial"})
_CORRECTIONS = frozenset({"wait", "actually", "sorry", "oops", "correction", "rather", "instead", "scratch",
                          "mean", "correcting", "corrected"})
_RETRACTIONS = frozenset({"wait", "oops", "sorry", "correction"})
_FILLERS = frozenset({"maybe", "perhaps", "possibly", "even", "else", "rather", "also", "actually", "just", "is",
                      "it's", "it", "that", "the", "answer", "answers", "from", "be", "would", "could", "x", "y",
                      "n", "a", "an", "of", "probably", "alternatively"})
_CHAIN_OPS = frozenset({"+", "-", "×", "÷", "/", "^", "*", "x", "="})
_DASHES = frozenset({"–", "—", "→", "~", "±", "+/-"})
_MAX_CLAUSE_CHARS = 400
_SENTENCE_END_RE = re.compile(r"(?<!\.)[.!?](?!\.)(?=\s|$)")  # not an ellipsis: "32... no wait, 34" goes on
_MAX_FIELD_CHARS = 2_000


def _normalize(text: str) -> str:
    r"""The plain text of a clause: no special tokens, markdown emphasis, math delimiters, currency signs or LaTeX
    wrappers (``\text{}``, ``\frac{a}{b}`` → ``a/b``, ``\times`` → ``×``)."""
    text = _SPECIAL_TOKEN_RE.sub(" ", text)
    if "<" in text:
        text = _MARKUP_TAG_RE.sub(" ", text)
    if "\\" in text:
        for _ in range(3):  # nested wrappers, bounded
            text = _LATEX_WRAP_RE.sub(r" \1 ", text)
        text = _LATEX_THOUSANDS_RE.sub(",", text)
        text = _LATEX_FRAC_TEXT_RE.sub(r"(\1/\2)", text)
        text = _LATEX_FRAC_SHORT_RE.sub(r"(\1/\2)", text)
        text = _LATEX_SYMBOL_RE.sub(lambda m: _LATEX_SYMBOLS.get(m.group(1), " \\" + m.group(1) + " "), text)
    text = text.replace("{,}", ",").replace("--", " – ").translate(_UNICODE_PUNCT)
    text = text.replace("{", "(").replace("}", ")")  # LaTeX groups: "9^{12}" is a calculation
    return _MARKDOWN_RE.sub(" ", text)


class _Token(NamedTuple):
    kind: str  # "num", "word", "op", "punct", "clock"
    text: str
    value: Fraction | None = None


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        word = m.group(0)
        if kind == "num":
            tokens.append(_Token("num", word, _number_value(word)))
        elif kind == "clock":
            hours, minutes = word.split(":")
            tokens.append(_Token("num", word, Fraction(int(hours)) if minutes == "00" else None))
        elif kind == "word":
            word = word.lower()
            if word in _WORD_OPERATORS and tokens and (tokens[-1].kind == "num" or tokens[-1].text in (")", "%")):
                tokens.append(_Token("op", _WORD_OPERATORS[word]))  # "44 minus 3": a calculation, not units
            elif word == "by" and tokens and tokens[-1].text in ("÷", "×") and tokens[-1].kind == "op":
                continue  # "divided by", "multiplied by"
            else:
                tokens.append(_Token("word", word))
        else:
            tokens.append(_Token(kind, word))
    return tokens


def _number_value(token: str) -> Fraction | None:
    if token.isdigit():
        return Fraction(int(token)) if len(token) <= MAX_NUMBER_DIGITS else None
    if "/" in token:
        num, den = token.split("/")
        return _fraction(num, den)
    exponent = 0
    if "e" in token or "E" in token:
        token, _, exp = token.replace("E", "e").partition("e")
        exponent = int(exp)
    value = _to_fraction(token)
    return value if value is None or not exponent else value * Fraction(10) ** exponent


class _Reading(NamedTuple):
    """What a clause commits to: ``value`` (a number), or none with ``hedged`` (it names a number but commits to no
    single one: declared as nothing) or ``expression`` (an unfinished calculation: LaTeX for math-verify)."""

    value: Fraction | None
    hedged: bool = False
    expression: bool = False


_NOTHING = _Reading(None)
_HEDGED = _Reading(None, hedged=True)
_EXPRESSION = _Reading(None, expression=True)


def read_clause(text: str) -> Fraction | None:
    r"""The one number a declaration's clause commits to, by the grammar of this module; ``None`` if none.

    >>> read_clause("$18 apples in total, 9 in each box."), read_clause("negative 8"), read_clause("32... no wait, 34")
    (Fraction(18, 1), Fraction(-8, 1), Fraction(34, 1))
    >>> read_clause("18 or 19") is None, read_clause("at least 18") is None, read_clause("18 squared") is None
    (True, True, True)
    """
    return _read(_clause_tokens(text)).value


def _clause_tokens(text: str) -> list[_Token]:
    """The tokens of a clause's first sentence (what the reading rule looks at)."""
    text = _normalize(text[:_MAX_FIELD_CHARS])
    end = _SENTENCE_END_RE.search(text)
    return _tokenize(text[:end.end()] if end else text[:_MAX_CLAUSE_CHARS])


def _first_sentence(tokens: list[_Token]) -> list[_Token]:
    """The tokens up to the end of the first sentence (``.``, ``!``, ``?`` or a line break were removed before)."""
    for i, t in enumerate(tokens):
        if t.kind == "punct" and t.text in ".!" and i > 0:
            return tokens[:i]
        if t.kind == "punct" and t.text == "?":
            return tokens[:i + 1]  # the question mark stays: it hedges a number before it
    return tokens


def _read(tokens: list[_Token]) -> _Reading:
    """The grammar's one rule, on the tokens of a clause (see the module docstring)."""
    tokens = _first_sentence(tokens)
    first = next((i for i, t in enumerate(tokens) if t.kind == "num"), None)
    if first is None:
        return _NOTHING
    prefix = tokens[:first]
    while prefix and prefix[-1].text in ("(", "["):
        prefix = prefix[:-1]
    negative = False
    if prefix and prefix[-1].text == "-" and (len(prefix) == 1 or prefix[-2].kind != "num"):
        negative, prefix = True, prefix[:-1]
    elif prefix and prefix[-1].text in _SIGN_WORDS:
        negative, prefix = True, prefix[:-1]
    words = [t.text for t in prefix if t.kind == "word"]
    if any(w in _NEGATIONS or w.endswith("n't") for w in words):
        return _after_negation(tokens, first)
    if (any(w in _BOUND_WORDS for w in words) or any(w in _NEAR_BOUND_WORDS for w in words[-2:])
            or any(t.text in _BOUND_SIGNS for t in prefix)
            or ("up" in words and "to" in words) or any(w in _TRANSFORM_WORDS for w in words[-3:])
            or any(w in ("or", "and") for w in words) and any(t.kind == "num" for t in tokens[first + 1:])):
        return _HEDGED
    if any(t.kind == "num" for t in prefix):
        return _HEDGED
    reading = _read_after(tokens, first, negative)
    if words and reading.value is not None:
        # Words first: the clause is read as a field, holding the one number (repeated at most).
        values = {t.value for t in tokens[first:] if t.kind == "num"}
        if len(values) > 1 and not _has_correction(tokens, first):
            return _HEDGED
    return reading


def _after_negation(tokens: list[_Token], first: int) -> _Reading:
    """``not 15 but 8`` commits to 8; a negated number with nothing after it commits to nothing."""
    last = _last_number(tokens)
    for i in range(first + 1, last):
        if tokens[i].text in ("but", "rather", "instead", ",", ";", "it's"):
            return _read(tokens[i + 1:])
    return _HEDGED


def _last_number(tokens: list[_Token]) -> int:
    """The index of the last number in ``tokens``, -1 if none: "a number follows k" is ``k < _last_number``."""
    return next((i for i in range(len(tokens) - 1, -1, -1) if tokens[i].kind == "num"), -1)


def _has_correction(tokens: list[_Token], start: int) -> bool:
    return any(t.text in _CORRECTIONS for t in tokens[start:])


def _read_after(tokens: list[_Token], i: int, negative: bool) -> _Reading:
    """The number at ``tokens[i]`` and what follows it."""
    value = tokens[i].value
    if value is None:
        return _HEDGED
    if negative:
        value = -value
    j = i + 1
    n = len(tokens)
    if j < n and tokens[j].kind == "word" and tokens[j].text in _SCALES:
        value *= _SCALES[tokens[j].text]
        j += 1
    # A unit written onto the number ("18%", "18/day") belongs to it: what follows is read after it.
    if j < n and tokens[j].text == "%":
        j += 1
        if j < n and tokens[j].text == "of" and _number_follows(tokens, j + 1, fillers=False):
            return _HEDGED  # "25% of 80": a transformation of the number
    elif j + 1 < n and tokens[j].text == "/" and tokens[j + 1].kind == "word" and tokens[j + 1].text not in _SIGN_WORDS:
        j += 2
    last = _last_number(tokens)
    # A correction later in the clause replaces everything before it.
    for k in range(j, n):
        if tokens[k].text in _CORRECTIONS and not (tokens[k].text == "mean" and tokens[k - 1].text != "i"):
            if k < last:
                return _read(tokens[k + 1:])
            if tokens[k].text in _RETRACTIONS:
                return _HEDGED
    if j < n:
        t = tokens[j]
        if t.text == "?":
            return _HEDGED
        if t.text in _CHAIN_OPS and j + 1 < n and (tokens[j + 1].kind == "num" or tokens[j + 1].text in "(-"
                                                   or tokens[j + 1].text in _SIGN_WORDS):
            return _read_chain(tokens, i, value)
        if t.text == "+" or t.text in _DASHES and j + 1 < n and tokens[j + 1].kind == "num":
            return _HEDGED
        if t.kind == "word" and t.text == "e" and j + 1 < n and tokens[j + 1].kind == "num":
            return _HEDGED  # "1.8 e1": an exponent apart from its number
        if t.kind == "op" and t.text in _BOUND_SIGNS:
            return _HEDGED
    # Up to three words (units) after the number, then what they lead to.
    k, units = j, 0
    while k < n and tokens[k].kind == "word" and units < 3 and tokens[k].text not in _RANGE_WORDS \
            and tokens[k].text not in _ALTERNATIVE_WORDS and tokens[k].text not in ("and", "of") \
            and tokens[k].text not in _BOUND_AFTER and tokens[k].text not in _AFTER_TRANSFORMS \
            and tokens[k].text not in _WORD_OPERATORS:
        k, units = k + 1, units + 1
    if k < n:
        t = tokens[k]
        if t.text in _AFTER_TRANSFORMS or t.text in _BOUND_AFTER or t.text == "?":
            return _HEDGED
        if (t.text in _CHAIN_OPS - {"="} or t.text in _WORD_OPERATORS) and units \
                and _number_follows(tokens, k + 2 if k + 1 < n and tokens[k + 1].text == "by" else k + 1, fillers=False):
            return _HEDGED  # "18 apples + 19 apples", "6 hours / 12 hours": a calculation, not its result
        if t.text == "or" and k + 1 < n and tokens[k + 1].text in _OR_BOUNDS:
            return _HEDGED
        if t.text in ("at", "up") and k + 1 < n and tokens[k + 1].text in ("most", "least", "to"):
            return _HEDGED
        if t.text in _RANGE_WORDS | _DASHES and _number_follows(tokens, k + 1):
            return _HEDGED
        if t.text in (",", ";", "&", "and", "/", "|") and units <= (0 if t.text in ("and", "&") else 1) \
                and _number_follows(tokens, k + 1, fillers=False):
            return _HEDGED
    # An alternative anywhere later in the clause, naming another number, commits to neither.
    for k in range(j, last):
        if tokens[k].text in _ALTERNATIVE_WORDS:
            return _HEDGED
        if tokens[k].text == "(" and k + 1 < n and tokens[k + 1].text in _ALTERNATIVE_WORDS:
            return _HEDGED
    return _Reading(value)


def _number_follows(tokens: list[_Token], k: int, fillers: bool = True) -> bool:
    """Whether a number comes at ``tokens[k]``, after filler words ("or maybe even 19", "or x = 19") if allowed."""
    n = len(tokens)
    while k < n and (tokens[k].text in ("(", "[", "-", ":", "=") or tokens[k].text in _SIGN_WORDS
                     or fillers and tokens[k].text in _FILLERS):
        k += 1
    return k < n and tokens[k].kind == "num"


def _read_chain(tokens: list[_Token], i: int, value: Fraction) -> _Reading:
    """``20 - 2 = 18`` commits to its result, 18; a calculation without ``=`` (``2 × 9``) to nothing readable
    here: math-verify may read it in a box."""
    j, last_eq, n = i + 1, None, len(tokens)
    while j + 1 < n and tokens[j].text in _CHAIN_OPS | {"(", ")"}:
        k = j
        while k < n and (tokens[k].text in _CHAIN_OPS | {"(", ")"} or tokens[k].text in _SIGN_WORDS):
            if tokens[k].text == "=":
                last_eq = k
            k += 1
        if k >= n or tokens[k].kind != "num":
            break
        j = k + 1
    while j < n and tokens[j].text == ")":
        j += 1
    if last_eq is None:
        return _EXPRESSION
    result = next((k for k in range(last_eq + 1, j) if tokens[k].kind == "num"), None)
    if result is None or any(tokens[k].text in _CHAIN_OPS - {"="} for k in range(result + 1, j)):
        return _EXPRESSION
    negative = tokens[result - 1].text == "-" or tokens[result - 1].text in _SIGN_WORDS
    return _read_after(tokens, result, negative)


# --- declarations -----------------------------------------------------------------------------------------------------

_HASH_RE = re.compile(r"####")
_ANSWER_WORD_RE = re.compile(r"answer", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_TAG_RE = re.compile(r"<answer(?:\s[^<>]{0,200})?>((?:(?!<answer[\s>])[\s\S]){0,5000}?)</answer\s*>", re.IGNORECASE)
_JSON_KEY_RE = re.compile(r'"(?:final_answer|answer|final answer)"\s*:\s*', re.IGNORECASE)
_JSON_STRING_RE = re.compile(r'"((?:[^"\\]|\\.){0,2000})"', re.DOTALL)
_JSON_NUMBER_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,2})?(?![0-9])")
# "[the|final|correct] answer [to the question|for this problem|...] is|was|would be|=|:"; a qualifier holds no digit.
_PHRASE_RE = re.compile(
    r"(?<![A-Za-z])[Aa](?i:nswers?)(?![A-Za-z])"
    r"(?:\s+(?:to|for|of|in|we\s+are|here|then|therefore|thus)(?:\s+[A-Za-z'’]+){0,6}?)?(?:\s*,[^,.\n0-9]{1,60},)?"
    r"\s*(?:\*\*|__)?\s*(?:(?P<neg>isn['’]t|wasn['’]t|aren['’]t|cannot\s+be|can['’]t\s+be|can\s+not\s+be|is\s+not"
    r"|was\s+not|won['’]t\s+be|would\s+not\s+be|wouldn['’]t\s+be|is\s+never)"
    r"|is|was|are|would\s+be|will\s+be|should\s+be|must\s+be|comes\s+to|equals|=|:|：)"
    r"(?![A-Za-z])[ \t]*(?:\*\*|__)?[ \t]*:?",  # not past the line: "is\n$$ 18 $$" is the next line's
    re.IGNORECASE,
)
# A line that is only a label: "A:", "Ans:", "**Final Answer**", "## Final Answer", "Answer" (the value follows).
_LABEL_RE = re.compile(
    r"^[ \t>*_#-]*(?:the\s+)?(?:final\s+answer|answer|ans|a)(?:\s*(?:\*\*|__))?\s*(?:[:：]|(?=[ \t*_#]*$))"
    r"[ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
# Who else's answer, or a hypothesis: the sentence before the marker says so.
_ATTRIBUTION_RE = re.compile(
    r"(?<![A-Za-z])(?:mistake|mistaken|mistakenly|wrong|wrongly|incorrect|incorrectly|error|erroneous|erroneously"
    r"|tempting|tempted|trap|naive|naively|careless|misread|pretend|hypothetically)(?![A-Za-z])",
    re.IGNORECASE,
)
_CONDITIONAL_RE = re.compile(  # "If the answer is 84, ...": a hypothesis (the conditional right before the marker)
    r"(?<![A-Za-z])(?:if|suppose|supposing|assume|assuming|whether|unless|when)(?:\s+[A-Za-z'’]+){0,2}\s*$",
    re.IGNORECASE,
)
_SAYING_RE = re.compile(r"(?<![A-Za-z])(say|says|said|saying|claim|claims|claimed|think|thinks|thought|believe"
                        r"|believes|believed|guess|guesses|guessed|argue|argues|argued)(?![A-Za-z])", re.IGNORECASE)
_OWN_SUBJECTS = frozenset({"i", "we", "let's", "lets", "to", "so", "thus", "therefore", "hence", "us"})
_MODALS = frozenset({"would", "could", "can", "might", "may", "will", "should", "must", "also", "then", "now", "just",
                     "safely", "confidently", "therefore", "thus", "hence", "finally", "do", "did", "really", "still"})
_SENTENCE_START_RE = re.compile(r"(?:[.!?]\s|\n)(?=[^.!?\n]*\Z)")


def _attributed(text: str, pos: int) -> bool:
    """Whether the sentence before ``pos`` makes the declaration someone else's or a hypothesis."""
    start = max(0, pos - 200)
    before = text[start:pos]
    m = _SENTENCE_START_RE.search(before)
    sentence = before[m.end():] if m else before
    if _ATTRIBUTION_RE.search(sentence) or _CONDITIONAL_RE.search(sentence):
        return True
    for say in _SAYING_RE.finditer(sentence):
        words = re.findall(r"[A-Za-z'’]+", sentence[:say.start()].lower())
        while words and words[-1] in _MODALS:
            words.pop()
        if words and words[-1] not in _OWN_SUBJECTS:
            return True
    return False


def _clause_after(text: str, end: int) -> str:
    """The text a marker ending at ``end`` declares: the rest of its line, or, when that is empty, the next non-empty
    line (a display-math block whole)."""
    window = text[end:end + _MAX_CLAUSE_CHARS]
    line_end = window.find("\n")
    line = window if line_end < 0 else window[:line_end]
    if line.strip(" \t*_:#`") or line_end < 0:
        return line
    lines = text[end + line_end + 1:end + line_end + 1 + _MAX_CLAUSE_CHARS].split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        for opener, closer in (("$$", "$$"), ("\\[", "\\]")):
            if stripped.startswith(opener) and closer not in stripped[len(opener):]:
                block = [stripped]
                for more in lines[i + 1:i + 6]:
                    block.append(more.strip())
                    if closer in more:
                        break
                return " ".join(block)
        return line
    return ""


def _read_field(content: str) -> tuple[_Reading, str | None]:
    """The value of an answer tag's or a JSON field's content: a declaration inside it speaks for it, else the
    content is read as one clause. Returns the reading and, for a calculation, the LaTeX for math-verify."""
    content = content[:_MAX_FIELD_CHARS]
    inner = _last_reading(content, _INNER_KINDS)
    if inner is not None:
        return inner
    return _read(_clause_tokens(content.replace("\n", " "))), None


def _boxed_contents(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every ``\\boxed{...}`` with balanced braces (bounded nesting)."""
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
            found.append((m.start(), i, text[m.end():i - 1]))
    return found


def _json_fields(text: str) -> list[tuple[int, int, str | Fraction | None]]:
    """``(start, end, value)`` of each JSON ``"answer"`` / ``"final_answer"`` field: its string or number value;
    ``end`` is where the enclosing object ends (the other fields of that object declare nothing)."""
    found = []
    for m in _JSON_KEY_RE.finditer(text):
        s = _JSON_STRING_RE.match(text, m.end())
        if s:
            try:
                value: str | Fraction | None = json.loads(s.group(0))
            except ValueError:
                value = s.group(1)
            end = s.end()
        else:
            num = _JSON_NUMBER_RE.match(text, m.end())
            if num is None:
                continue
            value, end = _number_value(num.group(0).lstrip("-")), num.end()
            if value is not None and num.group(0).startswith("-"):
                value = -value
        close = text.find("}", end)
        found.append((m.start(), close + 1 if close >= 0 else end, value))
    return found


def _object_start(text: str, pos: int) -> int:
    start = text.rfind("{", 0, pos)
    return start if start >= 0 else pos


_Candidate = tuple[int, Callable[[], "tuple[_Reading, str | None] | None"]]


def _declarations(text: str, kinds: frozenset[str]) -> list[_Candidate]:
    """Every marker of ``kinds`` in ``text``: ``(position, read)``; ``read()`` gives ``(reading, latex for
    math-verify or None)``, or ``None`` when the marker turns out to declare nothing. Reading is deferred: the last
    declaration wins, so the reader goes from the end and stops at the first (a text of 10,000 markers costs one)."""
    found: list[_Candidate] = []
    covered: list[tuple[int, int]] = []  # fields read whole: declarations inside them are theirs
    if "json" in kinds and '"' in text and "nswer" in text:
        for start, end, value in _json_fields(text):
            if isinstance(value, str):
                found.append((start, functools.partial(_read_field, value)))
            else:
                found.append((start, functools.partial(tuple, (_Reading(value), None))))
            covered.append((_object_start(text, start), end))
    if "answer_tag" in kinds and "</" in text:
        inside = _Spans(covered)
        for m in _TAG_RE.finditer(text):
            if not inside(m.start()):
                found.append((m.start(), functools.partial(_read_field, m.group(1))))
                covered.append((m.start(), m.end()))
    if "boxed" in kinds and ("\\boxed" in text or "\\fbox" in text):
        inside = _Spans(covered)
        for start, end, content in _boxed_contents(text):
            if not inside(start):
                found.append((start, functools.partial(_read_boxed, content)))
                covered.append((start, end))
    inside = _Spans(covered)
    if "hash" in kinds and "####" in text:
        for m in _HASH_RE.finditer(text):
            if not inside(m.start()) and (m.start() == 0 or text[m.start() - 1] != "#"):
                found.append((m.start(), functools.partial(_read_marker, text, m, False)))
    if "phrase" in kinds:
        # The marker opens with the word "answer": match only where it stands (a scan from every position costs
        # as much as the rest of the reading).
        for word in _ANSWER_WORD_RE.finditer(text):
            m = _PHRASE_RE.match(text, word.start())
            if m and not inside(m.start()) and not inside(m.end()):
                found.append((m.start(), functools.partial(_read_marker, text, m, True)))
    if "label" in kinds and (":" in text or "：" in text or _ANSWER_WORD_RE.search(text)):
        for m in _LABEL_RE.finditer(text):
            if not inside(m.start()) and not inside(m.end()):
                found.append((m.start(), functools.partial(_read_marker, text, m, True)))
    return found


class _Spans:
    """Whether a position lies inside any of some spans, in O(log n)."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(spans):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [s for s, _ in merged]
        self.ends = [e for _, e in merged]

    def __call__(self, pos: int) -> bool:
        i = bisect.bisect_right(self.starts, pos) - 1
        return i >= 0 and pos < self.ends[i]


def _read_boxed(content: str) -> tuple[_Reading, str | None]:
    plain = _normalize(content)
    reading = _read(_tokenize(plain))
    if "\\" in plain:
        reading = _EXPRESSION  # LaTeX this grammar does not read (\binom, \prod): math-verify's
    return reading, (content if reading.expression and _math_verify_safe(content) else None)


def _read_marker(text: str, m: re.Match, sentence_marker: bool) -> tuple[_Reading, None] | None:
    """What ``####``, a phrase or a label declares; ``None`` for a marker that declares nothing: someone else's
    answer or a hypothesis, a box after it (the box speaks), or no number at all ("the answer is correct")."""
    if sentence_marker and _attributed(text, m.start()):
        return None
    clause = _clause_after(text, m.end())
    if sentence_marker and ("\\boxed" in clause or "\\fbox" in clause):
        return None
    tokens = _clause_tokens(clause)
    if m.re is _PHRASE_RE and m.group("neg"):
        tokens = [_Token("word", "not"), *tokens]  # "the answer isn't 18"
    reading = _read(tokens)
    if not sentence_marker:
        return reading, None
    return (reading, None) if reading.value is not None or reading.hedged or reading.expression else None


def _last_reading(text: str, kinds: frozenset[str]) -> tuple[_Reading, str | None] | None:
    """The reading of the last declaration in ``text``, ``None`` if it has none."""
    candidates = sorted(_declarations(text, kinds), key=lambda c: c[0], reverse=True)
    for _, read in candidates[:MAX_MARKERS_READ]:
        result = read()
        if result is not None:
            return result
    return None


def _last_declaration(text: str, kinds: frozenset[str]) -> tuple[Fraction | None, str | None]:
    """The last declaration in ``text``: ``(value, None)``, or ``(None, latex)`` for boxed LaTeX to verify."""
    result = _last_reading(text, kinds)
    if result is None:
        return None, None
    reading, latex = result
    return reading.value, latex


# --- internals ---------------------------------------------------------------------------------------------------


def _fast_match(completion: object, gold: object, kinds: frozenset[str]) -> bool | tuple[str, str]:
    """The verdict without math-verify, or ``(latex, gold)`` that it must settle (already screened)."""
    gold_value = gold if isinstance(gold, Fraction) else extract_gold(gold)
    if gold_value is None:
        return False
    text = _answer_region(completion)
    if text is None:
        return False
    value, latex = _last_declaration(text, kinds)
    if value is not None:
        return value == gold_value
    if latex is None or not _math_verify_safe(latex):
        return False
    return latex, str(gold_value)  # "18", "3/4"


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


def _answer_region(completion: object) -> str | None:
    """The text that may declare: after the last ``</think>`` (text before it is thinking, its opener may have been
    in the prompt) and before a ``<think>`` that never closes."""
    if not isinstance(completion, str) or not completion:
        return None
    close = completion.rfind("</think>")
    if close >= 0:
        completion = completion[close + len("</think>"):]
    opened = completion.find("<think>")
    if opened >= 0:
        completion = completion[:opened]
    return completion[-MAX_COMPLETION_CHARS:] or None


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
        except BaseException:
            # Interrupted between request and reply (KeyboardInterrupt in a notebook): the reply would stay in the
            # pipe and answer the next request. The child goes; the next input starts a fresh one.
            self.kills += 1
            self.close()
            raise
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
