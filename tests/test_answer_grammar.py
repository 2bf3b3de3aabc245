r"""Tests generated from the answer grammar (the module docstring of :mod:`trl_gsm8k.answers`).

Declarations are composed from parts: a marker (every declaration kind) × a number rendering × a wrapper × a
decoration × trailing text that describes something else, after working text that holds other numbers and earlier
declarations of another number (the last declaration wins), before text that never changes it.

- Honest direction: the composed declaration reads the gold, and only the gold.
- Hedge direction: a hedge (alternative, range, bound, negation, list, transformation, question, unfinished
  calculation) × the same markers and renderings reads nothing, though the gold is written; a correction reads the
  corrected number, an attributed declaration ("A common mistake is to say the answer is N.") is not one.

Every generated input stays on the fast path: no math-verify request is made (``answers._worker.requests``).
The hand-written cases are in ``tests/test_answers.py``; the hypothesis profiles in ``tests/conftest.py``.
"""

from __future__ import annotations

import functools
import json

import pytest
from hypothesis import Phase, assume, given, settings
from hypothesis import strategies as st

from trl_gsm8k import answers
from trl_gsm8k.answers import answers_match, extract_answer

# --- parts ---------------------------------------------------------------------------------------------------------

# GSM8K golds are integers of at most 8 digits, 5 of them negative: small ones most often, then any.
GOLDS = st.one_of(st.integers(0, 120), st.integers(-10**8 + 1, 10**8 - 1), st.integers(-120, -1))
OTHER = st.integers(1, 999)  # numbers of the working and of trailing text
K = st.integers(-1000, 1000).filter(bool)  # gold + k is a wrong answer

# A number as written in text and in math (boxes, display blocks, `$…$`). The sign of a negative gold is "-",
# a sign word, or U+2212; thousands take commas (``{,}`` in math); money ``$`` (``\$`` in math).
RENDERINGS = ("plain", "commas", "dollar", "cents", "percent", "sign_word", "minus_word", "unicode_minus", "text_unit")


def render(value: int, style: str) -> tuple[str, str]:
    sign, a = ("-" if value < 0 else ""), abs(value)
    if style == "plain":
        return f"{sign}{a}", f"{sign}{a}"
    if style == "commas":
        return f"{sign}{a:,}", f"{sign}{a:,}".replace(",", "{,}")
    if style == "dollar":
        return f"{sign}${a:,}", f"{sign}\\${a:,}".replace(",", "{,}")
    if style == "cents":
        return f"{sign}{a}.00", f"{sign}{a}.00"
    if style == "percent":
        return f"{sign}{a}%", f"{sign}{a}\\%"
    if style == "sign_word":
        return (f"negative {a}" if sign else str(a)), f"{sign}{a}"
    if style == "minus_word":
        return (f"minus {a}" if sign else str(a)), f"{sign}{a}"
    if style == "unicode_minus":
        return (f"\u2212{a}" if sign else str(a)), f"{sign}{a}"
    if style == "text_unit":
        return f"{sign}{a} apples", f"{sign}{a} \\text{{ apples}}"
    raise ValueError(style)


WRAPPERS = ("none", "bold", "math", "paren_math", "bold_math")


def wrap(text: str, math: str, wrapper: str) -> str:
    return {"none": text, "bold": f"**{text}**", "math": f"${math}$", "paren_math": f"\\({math}\\)",
            "bold_math": f"**${math}$**"}[wrapper]


UNITS = ("", " apples", " dollars", " cookies per day", "/day", " miles/hour", " dollars each week")


def trailing_texts(x: int, y: int, z: int) -> list[str]:
    """Text after the number (and its unit) that describes something else: other numbers included."""
    return [
        "",
        f", since {x} + {y} = {x + y}",
        f" (= {x}+{y}+{z})",
        f" ({x} for each of the {y} days)",
        f"; she sells {x} eggs twice",
        ", which she earns every day",
        " in total",
    ]


# Trailing text that carries its own unit word (the number's unit is then not added).
def worded_trailing_texts(x: int, y: int) -> list[str]:
    return [f" cookies and {x} left over", f" apples in total, {y} in each box",
            f" apples in total and {y} in each box", f" dollars in all, {x} of them from eggs"]


PUNCTUATION = ("", ".", "!", "\u3002", "\uff01")  # 。 ！
SENTENCE_ENDS = (".", "!", "\u3002", "\uff01")
SPECIAL_TOKENS = ("", "</s>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<eos>")


def working(numbers: list[int]) -> str:
    """Working text: sentences with other numbers, no declaration."""
    a, b, c, d = numbers
    sentences = [
        f"She has {a} apples and buys {b} more, so {a} + {b} = {a + b}.",
        f"Each box holds {c} cookies; {d} boxes hold {c} * {d} = {c * d}.",
        f"Then {a + b} - {c} = {a + b - c} are left.",
        f"So far the total is ${d:,}.",
    ]
    return " ".join(sentences[: 1 + a % 4])


# Earlier declarations (of another number); each is followed by a retraction, then the final declaration.
EARLIER = ("#### {}", "The answer is {}.", "\\boxed{{{}}}", "Answer: {}", "<answer>{}</answer>",
           '{{"answer": "{}"}}', "**Final Answer**\n\n{}")

# Markers: ``kind`` is the name in answers.DECLARATIONS; each builds the final declaration from a text clause.
PHRASES = ("The answer is ", "So the answer is ", "The final answer is ", "The final answer is: ",
           "Therefore, the final answer is ", "The answer to the question is ", "The answer to this problem is ",
           "So, the correct answer is ", "The answer, as computed above, is ", "My answer would be ",
           "I think the answer is ", "We can say the answer is ", "the answer = ", "Thus the answer was ")
LABELS = ("Answer: ", "**Answer:** ", "A: ", "Final Answer: ", "**Final Answer:** ", "Ans: ", "- Final answer: ",
          "### Answer: ", "**Final Answer**: ")
NEXT_LINE_HEADERS = (("**Final Answer**", "label"), ("## Final Answer", "label"), ("### Final Answer:", "label"),
                     ("Answer:", "label"), ("The final answer is", "phrase"), ("The final answer is:", "phrase"),
                     ("####", "hash"))
DISPLAY_BLOCKS = ("$$\n{}\n$$", "\\[\n{}\n\\]", "$${}$$", "\\[{}\\]", "$$ {} $$")
BOX_LEADS = ("", "So ", "The answer is ", "The final answer is ", "Therefore, the final answer is: ", "Answer: ")
BOX_WRAPS = ("\\boxed{{{}}}", "$\\boxed{{{}}}$", "\\(\\boxed{{{}}}\\)", "\\[\\boxed{{{}}}\\]", "$$\\boxed{{{}}}$$",
             "\\fbox{{{}}}", "$\\boxed{{ {} }}$")
TAG_OPENERS = ("", "<think>\n{w}\n</think>\n", "<think>{w}</think> ", "<reasoning>\n{w}\n</reasoning>\n",
               "<reasoning>{w}</reasoning>\n")
TAG_NAMES = (("<answer>", "</answer>"), ("<ANSWER>", "</ANSWER>"), ("<Answer>", "</Answer>"))
TAG_INNER = ("{}", "The answer is {}", "#### {}")
JSON_FENCES = (("", ""), ("```json\n", "\n```"), ("```\n", "\n```"))
JSON_KEYS = ("answer", "final_answer")
MARKERS = ("hash", "phrase", "label", "next_line", "display", "boxed", "tag", "json_string", "json_number")
# Markers whose clause is text (the others are math: boxes and display blocks, or a JSON number).
TEXT_MARKERS = ("hash", "phrase", "label", "next_line", "tag", "json_string")


def text_declaration(draw, marker: str, clause: str, work: str) -> tuple[str, str]:
    """The final declaration of ``clause`` (text) by ``marker``: ``(text, kind)``."""
    if marker == "hash":
        return pick(draw, ("#### {}", "####{}", "#### **{}**")).format(clause), "hash"
    if marker == "phrase":
        return pick(draw, PHRASES) + clause, "phrase"
    if marker == "label":
        return pick(draw, LABELS) + clause, "label"
    if marker == "next_line":
        header, kind = pick(draw, NEXT_LINE_HEADERS)
        return header + pick(draw, ("\n", "\n\n")) + clause, kind
    if marker == "tag":
        opener = pick(draw, TAG_OPENERS).format(w=work)
        start, end = pick(draw, TAG_NAMES)
        sep = pick(draw, ("", "\n", " "))
        inner = pick(draw, TAG_INNER).format(clause)
        return f"{opener}{start}{sep}{inner}{sep}{end}", "answer_tag"
    if marker == "json_string":
        return json_object(draw, json.dumps(clause), work), "json"
    raise ValueError(marker)


def json_object(draw, value: str, work: str) -> str:
    key = pick(draw, JSON_KEYS)
    indent = pick(draw, (None, 2))
    body = json.dumps({"reasoning": work, key: "@VALUE@"}, indent=indent).replace('"@VALUE@"', value)
    fence_open, fence_close = pick(draw, JSON_FENCES)
    return fence_open + body + fence_close


def math_declaration(draw, marker: str, math: str, outside: str) -> tuple[str, str]:
    """The final declaration of ``math`` in a box or a display block; ``outside``: text after it (not read)."""
    if marker == "boxed":
        box = pick(draw, BOX_WRAPS).format(math)
        return pick(draw, BOX_LEADS) + box + outside, "boxed"
    if marker == "display":
        header, kind = pick(draw, NEXT_LINE_HEADERS[:-1])
        blocks = DISPLAY_BLOCKS
        if header.endswith(" is") and "display_after_a_line_break" in STILL_BROKEN:  # see KNOWN_BUGS
            blocks = tuple(b for b in DISPLAY_BLOCKS if "\n" not in b)
        return header + pick(draw, ("\n", "\n\n")) + pick(draw, blocks).format(math), kind
    raise ValueError(marker)


@functools.lru_cache(maxsize=None)
def _index(n: int) -> st.SearchStrategy[int]:
    return st.integers(0, n - 1)


def pick(draw, options):
    """One of ``options``, drawn (a cached strategy per length: building one per draw doubles the run time)."""
    options = tuple(options)
    return options[draw(_index(len(options)))]


class Composed:
    def __init__(self, text: str, kind: str, marker: str):
        self.text, self.kind, self.marker = text, kind, marker

    def __repr__(self) -> str:
        return f"Composed({self.text!r}, kind={self.kind!r})"


@st.composite
def before(draw, avoid: int | None, earlier_forms=EARLIER) -> str:
    """Working text, maybe with an earlier declaration of another number (not ``avoid``), ending in a new line."""
    work = working(draw(st.lists(OTHER, min_size=4, max_size=4)))
    if draw(st.booleans()):
        other = draw(OTHER.filter(lambda v: v != avoid))
        earlier = pick(draw, earlier_forms).format(other)
        work += "\n" + earlier + "\nWait, that's not right. Let me redo it: " + working([other, 3, 4, 5])
    return work + pick(draw, ("\n", "\n\n"))


def after(x: int, y: int) -> list[str]:
    """Text after the final declaration, on later lines: never changes it."""
    return ["", "", "\nHope this helps!", f"\n\nCheck: {x} + {y} = {x + y}, and {y} more.", "\nHmm, that's wrong.",
            f"\nSo she has {x} apples left."]


@st.composite
def honest(draw, gold: int, markers=MARKERS, earlier_forms=EARLIER) -> Composed:
    """A completion whose last declaration is ``gold``, composed from the parts above."""
    marker = pick(draw, markers)
    style = pick(draw, RENDERINGS)
    text_form, math_form = render(gold, style)
    x, y, z = draw(OTHER), draw(OTHER), draw(OTHER)
    pre = draw(before(avoid=gold, earlier_forms=earlier_forms))
    work = working([x, y, z, 7])
    if marker == "json_number":
        number = pick(draw, (str(gold), f"{gold}.0", f"{gold}.00"))
        final, kind = json_object(draw, number, work), "json"
    elif marker in ("boxed", "display"):
        math = math_form
        if style not in ("percent", "text_unit", "dollar") and draw(st.booleans()):
            math += pick(draw, (" \\text{ apples}", "\\text{ dollars}", " \\mathrm{cm}"))
        outside = ""
        if marker == "boxed":
            outside = pick(draw, ["", ".", " dollars.", *trailing_texts(x, y, z)[1:]])
        final, kind = math_declaration(draw, marker, math, outside)
    else:
        number = wrap(text_form, math_form, pick(draw, WRAPPERS))
        if style in ("percent", "text_unit") or draw(st.booleans()):
            rest = pick(draw, trailing_texts(x, y, z))
        elif draw(st.booleans()):
            rest = pick(draw, worded_trailing_texts(x, y))
        else:
            rest = pick(draw, UNITS) + pick(draw, trailing_texts(x, y, z))
        punct = pick(draw, PUNCTUATION)
        clause = number + rest + punct
        if punct in SENTENCE_ENDS and draw(st.booleans()):  # a new sentence with other numbers
            clause += pick(draw, (" ", "")) + f"Then {x} more came, and {y} or {z} left."
        final, kind = text_declaration(draw, marker, clause, work)
    epilogue = pick(draw, after(x, y))
    token = pick(draw, SPECIAL_TOKENS)
    return Composed(pre + final + epilogue + token, kind, marker)


# --- hedges --------------------------------------------------------------------------------------------------------
# A hedge is a clause that names the gold N (and maybe another number M) but commits to no single number:
# (name, text template, LaTeX template for a box or None). {n}/{m}: the rendered numbers, {d}: a small number.
HEDGES = [
    # alternatives
    ("or", "{n} or {m}", r"{n} \text{ or } {m}"),
    ("or_reversed", "{m} or {n}", r"{m} \text{ or } {n}"),
    ("could_be", "{n} (could be {m})", r"{n} \text{ (could be } {m})"),
    ("maybe", "{n}, maybe {m}", r"{n}, \text{ maybe } {m}"),
    ("unless", "{n} unless it's {m}", r"{n} \text{ unless it's } {m}"),
    ("or_possibly", "{n}, or possibly {m}", None),
    ("either", "either {n} or {m}", r"\text{either } {n} \text{ or } {m}"),
    ("paren_or", "{n} (or {m})", None),
    ("and_or", "{n} and/or {m}", None),
    # ranges
    ("to", "{n} to {m}", r"{n} \text{ to } {m}"),
    ("from_to", "from {n} to {m}", None),
    ("through", "{n} through {m}", None),
    ("hyphen", "{n}-{m}", None),
    ("en_dash", "{n} \u2013 {m}", r"{n} \text{ -- } {m}"),
    ("between", "between {n} and {m}", r"\text{between } {n} \text{ and } {m}"),
    ("plus_minus", "{n} \u00b1 {d}", r"{n} \pm {d}"),
    ("plus_slash_minus", "{n} +/- {d}", None),
    ("tilde", "{n} ~ {m}", r"{n} \sim {m}"),
    # bounds and approximations
    ("at_least", "at least {n}", r"\geq {n}"),
    ("at_most", "at most {n}", r"\leq {n}"),
    ("more_than", "more than {n}", r"> {n}"),
    ("or_more", "{n} or more", r"{n} \text{ or more}"),
    ("or_fewer", "{n} or fewer", r"{n} \text{ or fewer}"),
    ("or_so", "{n} or so", None),
    ("almost", "almost {n}", r"\text{almost } {n}"),
    ("approximately", "approximately {n}", r"\approx {n}"),
    ("about", "about {n}", None),
    ("roughly", "roughly {n}", None),
    ("nearly", "nearly {n}", None),
    ("up_to", "up to {n}", r"\text{up to } {n}"),
    ("plus_sign", "{n}+", None),
    ("max", "{n} max", None),
    # negations
    ("not", "not {n}", r"\text{not } {n}"),
    ("never", "never {n}", r"\ne {n}"),
    ("definitely_not", "definitely not {n}", r"\neq {n}"),
    ("isnt", "it isn't {n}", None),
    # lists
    ("comma", "{n}, {m}", "{n}, {m}"),
    ("and", "{n} and {m}", r"{n} \text{ and } {m}"),
    ("semicolon", "{n}; {m}", "{n}; {m}"),
    ("ampersand", "{n} & {m}", r"{n} \& {m}"),
    # transformations
    ("squared", "{n} squared", r"{n} \text{ squared}"),
    ("half_of", "half of {n}", r"\text{half of } {n}"),
    ("twice", "twice {n}", r"\text{twice } {n}"),
    ("double", "double {n}", None),
    ("square_root", "the square root of {n}", None),
    # a question
    ("question", "{n}?", None),
    # unfinished calculations (in a box they would go to math-verify: not generated there)
    ("plus", "{n} + {m}", None),
    ("slash", "{n} / {m}", None),
    # a retraction with no new number
    ("retraction", "{n}, wait", None),
    # calculations in words (see KNOWN_BUGS)
    ("minus_op", "{n} minus {m}", None),
    ("times", "{n} times {m}", None),
    ("divided_by", "{n} divided by {m}", None),
    ("multiplied_by", "{n} multiplied by {m}", None),
]
HEDGES_BY_NAME = {h[0]: h for h in HEDGES}
HEDGE_NAMES = list(HEDGES_BY_NAME)


def fill(template: str, **parts: object) -> str:
    """``template`` with ``{n}``, ``{m}``, ``{d}`` replaced (LaTeX braces stay as they are)."""
    for key, value in parts.items():
        template = template.replace("{" + key + "}", str(value))
    return template


# Renderings of a hedge's numbers (``minus_word`` like ``sign_word``); text_unit writes a unit word between the
# number and what follows it.
HEDGE_RENDERINGS = ("plain", "commas", "dollar", "cents", "sign_word", "minus_word", "unicode_minus", "text_unit",
                    "percent")
# Not a hedge by the contract: "an 'and' after a word describes something else" ("18 apples and 19 pears" is 18);
# "18 apples-19 apples" and "18 apples+" are no way to write a range or a bound.
NOT_HEDGES = {("and", "text_unit"), ("ampersand", "text_unit"), ("hyphen", "text_unit"), ("plus_sign", "text_unit")}
# Disagreements of the grammar with the contract that these tests found, reported to the lead: the hedge ×
# rendering pairs where the hedge was missed (the clause read the gold). Pairs of a bug in STILL_BROKEN are left out
# of the general properties; each bug keeps its own tests (KNOWN_BUG_EXAMPLES and a property over its pairs), marked
# xfail(strict=True) while it stands: once fixed they pass, strict xfail fails them, and the name leaves STILL_BROKEN.
KNOWN_BUGS = {
    # "%" and "/day" are units by the contract ("18%", "18/day"), but what followed them was not read like what
    # follows a unit word: "18 apples or more" read nothing, "18% or more" read 18. (Fixed in 78b4c46.)
    "hedge_after_percent": {(h, "percent") for h in (
        "to", "through", "hyphen", "en_dash", "plus_minus", "plus_slash_minus", "tilde", "or_more", "or_fewer",
        "or_so", "plus_sign", "max", "comma", "and", "semicolon", "ampersand", "squared", "question", "plus", "slash")},
    # A sign word after a range or list separator was not read as the sign of a second number: "5 to -6" read
    # nothing, "5 to negative 6" read 5. (Fixed in 78b4c46.)
    "sign_word_after_separator": {(h, style) for style in ("sign_word", "minus_word") for h in (
        "to", "through", "en_dash", "comma", "and", "semicolon", "ampersand")},
    # The same after an ASCII hyphen or a slash: "44 - -147" reads nothing, "44-negative 147", "44 - negative 147"
    # and "44 / negative 147" read 44.
    "sign_word_after_hyphen_or_slash": {(h, r) for h in ("hyphen", "slash") for r in ("sign_word", "minus_word")},
    # After a unit word, a question mark, "max" and "+ 19" were missed: "18?" read nothing, "18 apples?" 18.
    # (Fixed in 78b4c46.)
    "hedge_after_unit_word": {("question", "text_unit"), ("max", "text_unit"), ("plus", "text_unit")},
    # A calculation in words after the number is read as the number: "44 + 3" reads nothing (unfinished), "44 minus
    # 3", "44 times 2", "44 divided by 2" read 44; "44 minus 3 = 41" reads 44, not its result.
    "word_operator_after_number": {(h, r) for h in ("minus_op", "times", "divided_by", "multiplied_by")
                                   for r in HEDGE_RENDERINGS},
    # "The final answer is" with the value in a display block on the next lines (no colon) read nothing: the
    # phrase's clause started past its line. (Fixed in 78b4c46.)
    "display_after_a_line_break": set(),
}
STILL_BROKEN: set[str] = set()  # the bugs the lead has not fixed yet: their tests are expected to fail
KNOWN_BUG_PAIRS = set().union(*(KNOWN_BUGS[b] for b in STILL_BROKEN))
HEDGE_PAIRS = [(h, r) for h in HEDGE_NAMES for r in HEDGE_RENDERINGS if (h, r) not in NOT_HEDGES | KNOWN_BUG_PAIRS]
HEDGE_MARKERS = ("hash", "phrase", "label", "next_line", "tag", "json_string", "boxed")
NEGATED_PHRASES = ("The answer isn't ", "The answer is not ", "The answer can't be ", "The answer cannot be ",
                   "The answer is never ", "The final answer is NOT ")


@st.composite
def hedged(draw, gold: int, other: int, pairs=HEDGE_PAIRS) -> Composed:
    """A completion whose last declaration hedges between ``gold`` and ``other`` (or bounds, negates, transforms the
    gold); ``pairs``: the (hedge, rendering) pairs to draw from."""
    name, style = pick(draw, sorted(pairs))
    _, text_template, latex_template = HEDGES_BY_NAME[name]
    marker = pick(draw, HEDGE_MARKERS if latex_template is not None else HEDGE_MARKERS[:-1])
    d = draw(st.integers(1, 9))
    x, y, z = draw(OTHER), draw(OTHER), draw(OTHER)
    # An earlier declaration, of the gold itself or another number: a hedge still counts as the last declaration.
    pre = draw(before(avoid=None))
    if draw(st.booleans()):
        pre += pick(draw, EARLIER).format(render(gold, "plain")[0]) + "\n"
    work = working([x, y, z, 7])
    (n_text, n_math), (m_text, m_math) = render(gold, style), render(other, style)
    if marker == "boxed":
        math = fill(latex_template, n=n_math, m=m_math, d=d)
        final, kind = math_declaration(draw, "boxed", math, pick(draw, ("", ".", " dollars.")))
    else:
        wrapper = pick(draw, ("none", "none", "bold", "math"))
        n, m = wrap(n_text, n_math, wrapper), wrap(m_text, m_math, wrapper)
        clause = fill(text_template, n=n, m=m, d=d)
        punct = pick(draw, PUNCTUATION if name not in ("question", "retraction") else ("",))
        clause += punct
        if punct in SENTENCE_ENDS and draw(st.booleans()):
            clause += f" Then {x} more came."
        final, kind = text_declaration(draw, marker, clause, work)
    epilogue = pick(draw, after(x, y))
    token = pick(draw, SPECIAL_TOKENS)
    return Composed(pre + final + epilogue + token, kind, marker)


def examples(share: float, **kwargs) -> settings:
    """This test's examples: ``share`` × the profile's ``max_examples`` (``tests/conftest.py``: 100 in CI and by
    default; HYPOTHESIS_PROFILE=thorough for 50 times as many)."""
    return settings(max_examples=max(5, round(share * settings.default.max_examples)), **kwargs)


def fast_path_only(test):
    """The wrapped checks make no math-verify request: generated LaTeX stays on the fast path."""
    @functools.wraps(test)
    def check(*args, **kwargs):
        before_requests = answers._worker.requests
        test(*args, **kwargs)
        assert answers._worker.requests == before_requests, "an input went to math-verify"

    return check


# --- honest direction ----------------------------------------------------------------------------------------------


@examples(5)
@given(data=st.data(), gold=GOLDS, k=K)
@fast_path_only
def test_an_honest_declaration_reads_the_gold_and_only_the_gold(data, gold, k):
    c = data.draw(honest(gold), label="completion")
    assert extract_answer(c.text) == gold
    assert answers_match(c.text, gold)
    assert answers_match(c.text, f"Working.\n#### {gold}")
    assert not answers_match(c.text, gold + k)


@examples(1)
@given(data=st.data(), gold=GOLDS)
@fast_path_only
def test_the_declaration_kind_alone_reads_it(data, gold):
    c = data.draw(honest(gold), label="completion")
    assert extract_answer(c.text, declarations=(c.kind,)) == gold
    if c.kind == "hash" and c.marker == "hash":
        assert extract_answer(c.text, mode="strict") == gold


@pytest.mark.parametrize("marker", MARKERS)
@examples(0.3)
@given(data=st.data(), gold=GOLDS)
@fast_path_only
def test_each_marker_reads_the_gold(marker, data, gold):
    """Every marker, each with its own examples: no kind is left to chance."""
    c = data.draw(honest(gold, markers=(marker,)), label="completion")
    assert extract_answer(c.text) == gold


@examples(1)
@given(gold=GOLDS, other=GOLDS, data=st.data())
@fast_path_only
def test_the_last_of_two_declarations_wins(gold, other, data):
    assume(other != gold)
    first = data.draw(honest(other), label="first")
    second = data.draw(honest(gold), label="second")
    assume("<think>" not in second.text)  # a think block would make the first one thinking: nothing to test
    text = first.text + "\n" + second.text
    # A special token or an unclosed construct at the end of the first can only end it; the second is read.
    assert extract_answer(text) == gold
    assert not answers_match(text, other)


# --- hedge direction -----------------------------------------------------------------------------------------------

@examples(5)
@given(data=st.data(), gold=GOLDS, other=GOLDS)
@fast_path_only
def test_a_hedged_declaration_reads_nothing_though_the_gold_is_written(data, gold, other):
    assume(other != gold)
    c = data.draw(hedged(gold, other), label="completion")
    assert extract_answer(c.text) is None
    assert not answers_match(c.text, gold)
    assert not answers_match(c.text, other)


@pytest.mark.parametrize("name", sorted({h for h, _ in HEDGE_PAIRS}, key=HEDGE_NAMES.index))
@examples(0.15)
@given(data=st.data(), gold=GOLDS, other=GOLDS)
@fast_path_only
def test_each_hedge_reads_nothing(name, data, gold, other):
    """Every hedge, each with its own examples: no hedge is left to chance."""
    assume(other != gold)
    c = data.draw(hedged(gold, other, pairs=[p for p in HEDGE_PAIRS if p[0] == name]), label="completion")
    assert extract_answer(c.text) is None
    assert not answers_match(c.text, gold)


@examples(0.5)
@given(data=st.data(), gold=GOLDS)
@fast_path_only
def test_a_negated_phrase_declares_nothing(data, gold):
    style = pick(data.draw, RENDERINGS)
    n_text, n_math = render(gold, style)
    text = (data.draw(before(avoid=None)) + pick(data.draw, NEGATED_PHRASES)
            + wrap(n_text, n_math, pick(data.draw, WRAPPERS)) + pick(data.draw, PUNCTUATION))
    assert extract_answer(text) is None
    assert not answers_match(text, gold)


CORRECTIONS = ("{n}... no wait, {m}", "not {n} but {m}", "{n}, no wait, {m}", "{n}, actually {m}",
               "{n}, I mean {m}", "not {n}, but {m}")


@examples(1.5)
@given(data=st.data(), gold=GOLDS, other=GOLDS)
@fast_path_only
def test_a_correction_credits_the_corrected_number_not_the_rejected_gold(data, gold, other):
    assume(other != gold)
    style = pick(data.draw, RENDERINGS)
    wrapper = pick(data.draw, ("none", "bold", "math"))
    n, m = (wrap(*render(v, style), wrapper) for v in (gold, other))
    clause = fill(pick(data.draw, CORRECTIONS), n=n, m=m) + pick(data.draw, PUNCTUATION)
    marker = pick(data.draw, TEXT_MARKERS)
    final, _ = text_declaration(data.draw, marker, clause, working([3, 4, 5, 6]))
    text = data.draw(before(avoid=None)) + final + pick(data.draw, SPECIAL_TOKENS)
    assert extract_answer(text) == other
    assert not answers_match(text, gold)
    assert answers_match(text, other)


ATTRIBUTIONS = ("A common mistake is to say the answer is {}.", "Some might think the answer is {}.",
                "It is tempting to say the answer is {}.", "Many students wrongly think the answer is {}.",
                "Some say the answer is {}.", "Others believe the answer is {}.",
                "If the answer is {}, she would have nothing left.", "A naive reading gives the answer: {}.")


@examples(1)
@given(data=st.data(), gold=GOLDS, honest_value=GOLDS)
@fast_path_only
def test_an_attributed_last_sentence_is_not_a_declaration(data, gold, honest_value):
    """The gold is named in the last sentence, as someone else's answer: the honest earlier declaration is read."""
    assume(honest_value != gold)
    first = data.draw(honest(honest_value), label="honest")
    style = pick(data.draw, ("plain", "commas", "dollar", "sign_word"))
    attribution = pick(data.draw, ATTRIBUTIONS).format(render(gold, style)[0])
    text = first.text + pick(data.draw, ("\n", "\n\n")) + attribution
    assert extract_answer(text) == honest_value
    assert not answers_match(text, gold)


SIGN_MARKERS = ("#### {}", "The answer is {}.", "Answer: {}", "<answer>{}</answer>", '{{"answer": "{}"}}',
                "**Final Answer**\n\n{}", "The final answer is **{}**.")


@examples(0.5)
@given(magnitude=st.integers(1, 10**8 - 1), data=st.data())
@fast_path_only
def test_a_sign_word_makes_the_number_negative(magnitude, data):
    word = pick(data.draw, ("negative", "minus", "Negative"))
    text = pick(data.draw, SIGN_MARKERS).format(f"{word} {magnitude:,}")
    assert extract_answer(text) == -magnitude
    assert not answers_match(text, magnitude)
    assert answers_match(text, -magnitude)


# --- named examples: one per category of issue 18 ------------------------------------------------------------------
WORK = "In April she sold 48 clips, and half as many in May: 48 / 2 = 24.\n"
NAMED_HONEST = [
    ("latex_money", r"The answer is $\$12$.", 12),
    ("final_answer_label_blank_line", "**Final Answer**\n\n18", 18),
    ("final_answer_is_then_display_math", "The final answer is:\n$$\n18\n$$", 18),
    ("answer_to_the_question", "The answer to the question is 18.", 18),
    ("special_token_after_the_number", "#### 18</s>", 18),
    ("im_end_after_the_number", "The answer is 18<|im_end|>", 18),
    ("non_ascii_full_stop", "The answer is 18\u3002", 18),
    ("non_ascii_exclamation", "Answer: 18\uff01", 18),
    ("rate_unit", "The answer is 18/day.", 18),
    ("parenthetical_calculation", "The answer is 105 (= 25+10+70).", 105),
    ("left_over", "#### 18 cookies and 2 left over", 18),
    ("not_but", "The answer is not 15 but 8.", 8),
    ("correction", "The answer is 32... no wait, 34.", 34),
    ("in_total_comma", "The answer is 18 apples in total, 9 in each box.", 18),
    ("in_total_and", "The answer is 18 apples in total and 9 in each box.", 18),
    ("attribution_after_an_honest_declaration", "#### 72\nA common mistake is to say the answer is 84.", 72),
    ("negative_word", "The answer is negative 8.", -8),
]
NAMED_NOTHING = [
    ("or_fewer", "The answer is 18 or fewer.", 18),
    ("almost", "The answer is almost 18.", 18),
    ("could_be", "The answer is 3 (could be 4).", 3),
    ("could_be_other", "The answer is 3 (could be 4).", 4),
    ("unless", "The answer is 12 unless it's 13.", 12),
    ("squared", "The answer is 18 squared.", 18),
    ("half_of", "The answer is half of 18.", 18),
    ("attribution_only", "A common mistake is to say the answer is 84.", 84),
    ("rejected_gold", "The answer is 32... no wait, 34.", 32),
    ("not_but_rejected", "The answer is not 15 but 8.", 15),
    ("negative_word_positive_gold", "The answer is negative 8.", 8),
]


@pytest.mark.parametrize("name, text, gold", NAMED_HONEST, ids=[n[0] for n in NAMED_HONEST])
def test_named_honest_example(name, text, gold):
    before_requests = answers._worker.requests
    for completion in (text, WORK + text):
        assert extract_answer(completion) == gold
        assert answers_match(completion, f"#### {gold}")
        assert not answers_match(completion, f"#### {gold + 1}")
    assert answers._worker.requests == before_requests


@pytest.mark.parametrize("name, text, gold", NAMED_NOTHING, ids=[n[0] for n in NAMED_NOTHING])
def test_named_example_that_does_not_credit_the_gold(name, text, gold):
    for completion in (text, WORK + text):
        assert not answers_match(completion, f"#### {gold}")


ISSUE_COMPLETIONS = [
    "<think>48+24</think> <answer>72</answer>",
    "<reasoning>48+24=72</reasoning>\n<answer>\n72\n</answer>",
    '```json\n{"reasoning": "48+24", "answer": "72"}\n```',
]


@pytest.mark.parametrize("text", ISSUE_COMPLETIONS)
def test_the_issue_completions_score_one_and_a_wrong_number_zero(text):
    from trl_gsm8k.rewards import correctness_reward

    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether: 48+24 = <<48+24=72>>72 clips.\n#### 72"
    wrong = text.replace("72", "73")
    chats = [[{"role": "assistant", "content": t}] for t in (text, wrong)]
    assert correctness_reward([text, wrong], answer=[gold, gold]) == [1.0, 0.0]
    assert correctness_reward(chats, answer=[gold, gold]) == [1.0, 0.0]


# --- declarations= ---------------------------------------------------------------------------------------------------
MIXED = "#### 10\nThe answer is 11.\n\\boxed{12}\nA: 13\n<answer>14</answer>\n" + '{"answer": "15"}\n'


@pytest.mark.parametrize("kinds, expected", [
    (("hash",), 10), (("phrase",), 11), (("boxed",), 12), (("label",), 13), (("answer_tag",), 14), (("json",), 15),
    (("hash", "boxed"), 12), (("answer_tag", "hash"), 14), (None, 15), ("answer_tag", 14),
])
def test_declarations_names_the_ones_that_count(kinds, expected):
    assert extract_answer(MIXED, declarations=kinds) == expected


def test_only_answer_tags_are_read_when_named():
    text = "<think>48+24</think>\n#### 99\n<answer>72</answer>\nThe answer is 98."
    assert extract_answer(text, declarations=("answer_tag",)) == 72
    assert extract_answer(text) == 98  # flexible: the last declaration
    assert extract_answer("#### 72", declarations=("answer_tag",)) is None
    assert answers_match(text, "72", declarations=("answer_tag",))
    assert not answers_match("The answer is 72.", "72", declarations=("answer_tag",))


@examples(0.5)
@given(data=st.data(), gold=GOLDS, other=GOLDS)
@fast_path_only
def test_named_tags_ignore_any_other_declaration_after_them(data, gold, other):
    assume(other != gold)
    tag = data.draw(honest(gold, markers=("tag",)), label="tag")
    no_tags = tuple(e for e in EARLIER if "<answer>" not in e)
    later = data.draw(honest(other, markers=("hash", "phrase", "label", "boxed", "json_string"), earlier_forms=no_tags),
                      label="later")
    text = tag.text + "\n" + later.text
    assert extract_answer(text, declarations=("answer_tag",)) == gold
    assert extract_answer(text) == other


@pytest.mark.parametrize("bad", [("tags",), ("hash", "nope"), (), ("",), ("HASH",)])
def test_invalid_declaration_names_raise(bad):
    with pytest.raises(ValueError):
        extract_answer("#### 18", declarations=bad)
    with pytest.raises(ValueError):
        answers_match("#### 18", "18", declarations=bad)


def test_strict_mode_reads_hash_only():
    text = "#### 18\n<answer>19</answer>\nThe answer is 20."
    assert extract_answer(text, mode="strict") == 18
    assert extract_answer(text, mode="strict", declarations=("hash",)) == 18
    assert extract_answer("<answer>19</answer>", mode="strict") is None
    assert extract_answer('{"answer": "19"}', mode="strict") is None
    with pytest.raises(ValueError):
        extract_answer(text, mode="strict", declarations=("answer_tag",))
    with pytest.raises(ValueError):
        extract_answer(text, mode="lenient")


# --- bugs these tests found (KNOWN_BUGS above) ------------------------------------------------------------------------
# Minimal examples: (text, what it must read).
KNOWN_BUG_EXAMPLES = {
    "hedge_after_percent": [(t, None) for t in (
        "#### 18% or more", "#### 18%?", "#### 18%+", "#### 18% to 19%", "#### 18%, 19%", "#### 18% squared",
        "#### 18% max", "The answer is 18% or fewer.", r"\boxed{18\% \text{ to } 19\%}", "#### 18/day or more",
        "#### 18/day, 19/day")],
    "sign_word_after_separator": [(t, None) for t in (
        "#### 5 to negative 6", "#### 5, negative 6", "#### 5 and negative 6", "#### negative 5 \u2013 negative 6",
        "The answer is 5; minus 6.")],
    "sign_word_after_hyphen_or_slash": [(t, None) for t in ("#### 44-negative 147", "#### 44 - negative 147",
                                                            "The answer is 5 - minus 6.", "#### 5 / negative 6")],
    "hedge_after_unit_word": [(t, None) for t in (
        "#### 18 apples?", "The answer is 18 dollars?", "#### 18 apples max", "#### 18 apples + 19 apples")],
    "word_operator_after_number": [("#### 44 minus 3", None), ("#### 44 times 2", None),
                                   ("The answer is 44 divided by 2.", None), ("Answer: 44 multiplied by 2", None),
                                   ("The answer is 44 minus 3 = 41.", 41)],
    "display_after_a_line_break": [("The final answer is\n$$\n18\n$$", 18), ("The final answer is\n\\[\n18\n\\]", 18),
                                   ("The answer is\n$$\n18\n$$", 18), (WORK + "The final answer is\n\n$$\n18\n$$", 18)],
}


def known_bug(name: str):
    return pytest.mark.xfail(name in STILL_BROKEN, strict=True, reason=f"known grammar bug {name!r}, reported")


@pytest.mark.parametrize("text, expected", [
    pytest.param(text, expected, marks=known_bug(name), id=f"{name}:{text!r}")
    for name, cases in KNOWN_BUG_EXAMPLES.items() for text, expected in cases
])
def test_known_bug_example(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("bug", [pytest.param(b, marks=known_bug(b)) for b in KNOWN_BUGS if KNOWN_BUGS[b]])
@examples(0.2, phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking: an expected failure is cheap
@given(data=st.data(), gold=GOLDS, other=GOLDS)
@fast_path_only
def test_known_bug_hedges_read_nothing(bug, data, gold, other):
    assume(other != gold)
    c = data.draw(hedged(gold, other, pairs=KNOWN_BUGS[bug]), label="completion")
    assert extract_answer(c.text) is None
    assert not answers_match(c.text, gold)
