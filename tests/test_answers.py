"""Answer extraction: formats, modes, reward-hacking guards, bad input, agreement with labelled real solutions."""

import gzip
import json
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from trl_gsm8k.answers import answers_match, extract_answer, extract_gold, parse_number, strip_annotations
from trl_gsm8k.data import read_rows

ASSETS = Path(__file__).parent / "assets"

DECLARATIONS = [
    ("#### 18", 18),
    ("####18", 18),
    ("#### $18", 18),
    ("#### 18.00", 18),
    ("#### 18%", 18),
    ("#### 18 dollars", 18),
    ("#### 18 apples.", 18),
    ("#### 1,234", 1234),
    ("#### $1,080.00", 1080),
    ("#### -5", -5),
    ("#### 18.5", Fraction(37, 2)),
    ("####\n18", 18),
    (r"\boxed{18}", 18),
    (r"$\boxed{\$18}$", 18),
    (r"\boxed{18 \text{ dollars}}", 18),
    (r"\boxed{\text{18}}", 18),
    (r"\boxed{18\%}", 18),
    (r"\(\boxed{18}\)", 18),
    ("\\[\n\\boxed{18}\n\\]", 18),
    (r"\boxed{\frac{36}{2}}", 18),
    (r"\boxed{\dfrac{1}{2}}", Fraction(1, 2)),
    (r"\boxed{1{,}234}", 1234),
    ("The answer is 18.", 18),
    ("So the answer is $18.", 18),
    ("Therefore, the final answer is 18 dollars.", 18),
    ("The final answer is $\\boxed{18}$. I hope it is correct.", 18),
    ("The answer is: 18", 18),
    ("Therefore, the answer is **18**.", 18),
    ("The answer is 3 * 6 = 18.", 18),
    ("Answer: 18", 18),
    ("A: 18", 18),
    ("**Answer:** 18", 18),
    ("**Final Answer:** $18", 18),
    ("**Final Answer**: 18", 18),
    ("- Final answer: 1,234 cookies", 1234),
    ("## Final Answer\n\n18", 18),
    ("## Final Answer\nThe final answer is $\\boxed{18}$", 18),
    ("### Final Answer\n\\[\n\\boxed{18}\n\\]", 18),
    ("Final answer: -$5", -5),
    ("The final answer is −7.", -7),
    ("#### 0.5", Fraction(1, 2)),
    ("<think>maybe #### 20? 16 - 3 - 4 = 9, 9 * 2 = 18</think>\nThe answer is 18.", 18),
    ("16 - 3 - 4 = 9 ... </think>\n\n#### 18", 18),
]


@pytest.mark.parametrize("text, expected", DECLARATIONS)
def test_flexible_reads_each_declaration(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [(t, e) for t, e in DECLARATIONS if t.lstrip().startswith("####")])
def test_strict_reads_hash_declarations(text, expected):
    assert extract_answer(text, mode="strict") == expected


@pytest.mark.parametrize(
    "text",
    [r"\boxed{18}", "The answer is 18.", "Answer: 18", "A: 18", "## Final Answer\n\n18", "**Answer:** 18"],
)
def test_strict_ignores_other_declarations(text):
    assert extract_answer(text, mode="strict") is None
    assert extract_answer(text, mode="flexible") == 18


def test_last_declaration_wins_and_later_text_does_not_change_it():
    assert extract_answer("#### 20\nWait, that's wrong: 3 * 7 = 21.\n#### 21") == 21
    assert extract_answer("The answer is 20. Hmm, no. Let me redo it: \\boxed{21}") == 21
    assert extract_answer("#### 18\nThis is because 9 * 2 = 18 and 3 + 4 = 7, then 100 more.") == 18
    assert extract_answer("\\boxed{18}\n\nCheck: 36 / 2 = 18, and 40 - 22 = 18; also 99.") == 18


def test_think_blocks_are_not_read():
    assert extract_answer("<think>#### 18</think>\nI am not sure.") is None
    assert extract_answer("<think>still thinking... #### 18") is None  # never closed: nothing declared


@pytest.mark.parametrize(
    "text",
    [
        "She has 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18",  # last number is the gold, but no declaration
        "18 18 18 18 18 18 18 18",  # number spam
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18",
        "The answer is not clear. First, 18 apples",  # the number is in a later sentence
        "the answer is 18 + 2",  # an unfinished expression is not a value
    ],
)
def test_no_credit_without_a_declared_value(text):
    assert not answers_match(text, "#### 18")


def test_gold_only_in_working_gets_no_credit():
    text = "16 - 3 - 4 = 9 eggs; 9 * 2 = 18 dollars. Then she pays 2 for the stall.\n#### 16"
    assert not answers_match(text, "#### 18")
    assert answers_match(text, "#### 16")


def test_numbers_compare_exactly():
    assert answers_match("#### 18.00", "18")
    assert not answers_match("#### 18.5", "18")
    assert not answers_match("#### 180", "18")
    assert answers_match("#### 1,080", "#### 1,080")
    assert answers_match("#### -5", "#### -5") and not answers_match("#### 5", "#### -5")


def test_math_verify_fallback_reads_latex_the_fast_path_cannot():
    assert answers_match(r"The answer is \boxed{2 \times 9}", "18")
    assert not answers_match(r"The answer is \boxed{2 \times 8}", "18")
    assert answers_match(r"\boxed{2 + 16}", "18")


def test_parse_number_rejects_expressions_and_words():
    assert parse_number("2 \\times 9") is None
    assert parse_number("5 + 13") is None
    assert parse_number("eighteen") is None
    assert parse_number("12 apples") == 12


def test_every_gold_in_the_release_parses():
    golds = [extract_gold(r["answer"]) for split in ("train", "test") for r in read_rows(split)]
    assert len(golds) == 8792
    assert all(g is not None and g.denominator == 1 for g in golds)
    assert sum(g < 0 for g in golds) == 5


def test_strip_annotations():
    assert strip_annotations("16 - 3 - 4 = <<16-3-4=9>>9 eggs") == "16 - 3 - 4 = 9 eggs"


def test_agreement_with_labelled_real_model_solutions():
    """5,276 real GPT-3 solutions to the test set, labelled by GSM8K's authors (answers end with 'A: N')."""
    golds = [r["answer"] for r in read_rows("test")]
    agree = total = 0
    with gzip.open(ASSETS / "example_model_solutions.jsonl.gz", "rt") as f:
        for gold, line in zip(golds, f):
            row = json.loads(line)
            for key, value in row.items():
                if isinstance(value, dict):
                    total += 1
                    agree += answers_match(value["solution"], gold) == value["is_correct"]
    assert total == 5276
    assert agree / total >= 0.998, f"agreement {agree}/{total}"


PATHOLOGICAL = [
    "",
    "7" * 1_000_000,
    r"\boxed{9^{9^{9^{9^{9}}}}}",
    r"The answer is \boxed{(10^{10})!}",
    r"\boxed{" + r"\frac{1}{" * 300 + "2" + "}" * 600,
    "#### " + "9" * 5000,
    "#### ١٢٣ and #### １８",
    "The answer is " + "(" * 10_000 + "1" + ")" * 10_000,
]


@pytest.mark.parametrize("text", PATHOLOGICAL + [None, 18, ["#### 18"]])
def test_bad_completions_score_no_credit(text):
    assert answers_match(text, "#### 18") is False


def test_pathological_inputs_return_quickly_from_a_worker_thread():
    results: list = []

    def score():
        results.extend(answers_match(t, "18") for t in PATHOLOGICAL)

    start = time.perf_counter()
    worker = threading.Thread(target=score, daemon=True)
    worker.start()
    # A hang guard, not a speed goal: unguarded, some of these run for hours. The bound leaves room for a loaded CI.
    worker.join(timeout=30)
    assert not worker.is_alive(), "scoring pathological completions off the main thread took over 30 s"
    assert results == [False] * len(PATHOLOGICAL)
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("gold", ["no number here", "#### ", "#### eighteen", None, "", "#### " + "9" * 5000])
def test_unreadable_gold(gold):
    assert extract_gold(gold) is None
    assert answers_match("#### 18", gold) is False
