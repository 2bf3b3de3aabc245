r"""Answer extraction for GSM8K: the gold `#### N` and the final answer a completion declares.

All parsing of the package lives here. Pure functions, no torch, no model: they test in milliseconds.

Two modes read a completion:

- ``strict``: only ``#### N`` counts, the format the training prompt asks for.
- ``flexible``: any *declaration* counts: ``#### N``, ``\boxed{N}``, "the answer is N", "final answer is N",
  ``Answer: N`` / ``A: N`` / ``**Answer:** N`` at the start of a line, a ``## Final Answer`` heading followed
  by the value.

In both modes the **last** declaration wins ("#### 20 ... wait, that's wrong ... #### 21" → 21), and text after it
(other numbers included) does not change it. A ``<think>...</think>`` block is never read: the answer comes after
the last ``</think>``; a think block that never closed has declared nothing.

Difference with lm-evaluation-harness and verl: their "flexible" modes take the *last number anywhere in the
text*, which credits number spam and answers left in the working. Ours requires a declaration: a completion
that never declares an answer gets none, even when its last number equals the gold.

Numbers are compared exactly as fractions: ``18.00 == 18``, ``18.5 != 18``, ``1,234 == 1234``, ``$18 == 18``.
Inputs are bounded (length, digits, LaTeX nesting), and the math-verify fallback for LaTeX the fast path cannot
read runs in a separate process with a hard timeout, so no input can hang the caller, on any thread.
"""

from __future__ import annotations

import atexit
import functools
import logging
import re
import select
import subprocess
import sys
import threading
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
    read (``\boxed{2 \times 9}``) is checked with math-verify in a separate process under a hard timeout.

    >>> answers_match("... so 9 * 2 = 18.\n#### $18.00", "#### 18")
    True
    >>> answers_match("The answer is \\boxed{\\frac{36}{2}}", "18")
    True
    >>> answers_match("18", "18")  # a bare number is not a declaration
    False
    """
    gold_value = gold if isinstance(gold, Fraction) else extract_gold(gold)
    if gold_value is None:
        return False
    text = _answer_region(completion)
    if text is None:
        return False
    value, latex = _last_declaration(text, mode)
    if value is not None:
        return value == gold_value
    if latex is not None:
        return _math_verify_equal(latex, gold_value)
    return False


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
    return _read_value(last[4:]) is not None


# --- internals ---------------------------------------------------------------------------------------------------


def _standalone_number(text: str, m: re.Match | None) -> Fraction | None:
    """The number matched by ``m`` unless it is part of an expression (``2 \\times 9``, ``5 + 13``)."""
    if m is None or not _ALLOWED_AFTER_NUMBER.match(text[m.end():].lstrip()):
        return None
    return _to_fraction(m.group(0))


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


def _read_value(segment: str) -> Fraction | None:
    """The value right after a declaration: the first number, or the result of a short ``a op b = c`` chain."""
    segment = _clean_latex(segment.split("\n", 1)[0][:300])
    boxed = _boxed_contents(segment)
    if boxed:
        return parse_number(boxed[-1][1])
    segment = _SENTENCE_END_RE.split(segment, 1)[0]
    # "The answer is 3 * 6 = 18." reads the result after the last "=".
    if "=" in segment:
        tail = segment.rsplit("=", 1)[1].strip()
        return _standalone_number(tail, _NUMBER_RE.match(tail))
    m = _NUMBER_RE.search(segment)
    # A few words may stand before the value ("is a total of $18"); a later sentence may not.
    if m is None or m.start() > 40:
        return None
    return _standalone_number(segment, m)


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
            candidates.append((m.start(), _read_value(text[m.end():]), None))
    if mode == "flexible":
        if "\\boxed" in text or "\\fbox" in text:
            for pos, content in _boxed_contents(text):
                value = parse_number(content)
                candidates.append((pos, value, content if value is None else None))
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
                value = _read_value(rest)
                if value is not None:
                    candidates.append((m.start(), value, None))
    if not candidates:
        return None, None
    _, value, latex = max(candidates, key=lambda c: c[0])
    return value, latex


# --- math-verify fallback, in a child process so its sympy work can always be stopped ----------------------------
# A plain subprocess rather than multiprocessing: spawn/forkserver would re-import the user's __main__ script, and
# fork is unsafe in a process that already runs torch threads.

_WORKER_CODE = """
import sys
from math_verify import parse, verify
for line in sys.stdin:
    latex, _, gold = line.rstrip("\\n").partition("\\t")
    try:
        ok = bool(verify(parse(gold), parse("$" + latex + "$", parsing_timeout=None), timeout_seconds=None))
    except Exception:
        ok = False
    sys.stdout.write("1\\n" if ok else "0\\n")
    sys.stdout.flush()
"""


class _MathVerifyWorker:
    """One long-lived ``python -c`` child answering ``latex<TAB>gold`` lines with ``1``/``0``; killed on timeout."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._calls = 0

    def equal(self, latex: str, gold: str, timeout: float) -> bool:
        with self._lock:
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._proc = subprocess.Popen(
                        [sys.executable, "-c", _WORKER_CODE],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    )
                self._proc.stdin.write(latex.replace("\n", " ").replace("\t", " ") + "\t" + gold + "\n")
                self._proc.stdin.flush()
                # The first call also pays for importing sympy in the child.
                ready, _, _ = select.select([self._proc.stdout], [], [], timeout + 10 * (self._calls == 0))
                if not ready:
                    logger.warning("math-verify took too long on %r: scored as wrong", latex[:80])
                    self.close()
                    return False
                self._calls += 1
                return self._proc.stdout.readline().strip() == "1"
            except (OSError, ValueError) as exc:
                logger.warning("math-verify worker failed on %r (%s): scored as wrong", latex[:80], exc)
                self.close()
                return False

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
            self._calls = 0


_worker = _MathVerifyWorker()
atexit.register(_worker.close)


def _math_verify_safe(latex: str) -> bool:
    r"""Cheap screen: GSM8K answers never need towers of powers, factorials or deep nesting."""
    if len(latex) > MAX_LATEX_CHARS or "!" in latex or latex.count("^") > 1:
        return False
    if latex.count("{") > 12 or len(re.findall(r"[0-9]", latex)) > MAX_NUMBER_DIGITS:
        return False
    return True


def _math_verify_equal(latex: str, gold: Fraction) -> bool:
    if not _math_verify_safe(latex):
        return False
    gold_text = str(gold.numerator) if gold.denominator == 1 else f"{gold.numerator}/{gold.denominator}"
    return _worker.equal(latex, gold_text, MATH_VERIFY_TIMEOUT_S)
