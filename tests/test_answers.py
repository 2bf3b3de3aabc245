"""Answer extraction: formats, modes, reward-hacking guards, bad input, agreement with labelled real solutions."""

import gzip
import json
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import pytest

from trl_gsm8k import answers
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
    assert agree == total, f"agreement {agree}/{total}"


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


def test_words_after_a_number_cost_linear_time():
    # Unit words and connectors are matched after every number read; a regex that backtracks into a run of letters
    # takes hours on these (cubic in its length). A regex holds the GIL, so the guard is a process, not a thread.
    code = (
        "from trl_gsm8k.answers import parse_number\n"
        "texts = ['18 ' + 'a' * 20_000 + '!', '18 ' + 'or ' * 20_000 + 'x', '18, ' + ', ' * 20_000,"
        " '18 ' + 'or maybe ' * 5_000]\n"
        "assert [parse_number(t) for t in texts] == [18] * 4\n"
    )
    # Milliseconds when linear, plus the interpreter's start; the rest is room for a loaded CI machine.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=Path(__file__).parent.parent)


@pytest.mark.parametrize("gold", ["no number here", "#### ", "#### eighteen", None, "", "#### " + "9" * 5000])
def test_unreadable_gold(gold):
    assert extract_gold(gold) is None
    assert answers_match("#### 18", gold) is False


# --- a declared answer is one number ------------------------------------------------------------------------------
# Each hedge holds the gold (18) as its first or its last number, so a reader that takes either one credits it;
# `text` is how it is written after "####", "the answer is" or "Answer:", `latex` inside \boxed{}.
HEDGES = [
    # alternatives
    ("18 or 19", r"18 \text{ or } 19"),
    ("19 or 18", r"19 \text{ or } 18"),
    ("either 18 or 19", r"\text{either } 18 \text{ or } 19"),
    ("18 or maybe 19", r"18 \text{ or maybe } 19"),
    ("18 (or 19)", r"18 \ (\text{or } 19)"),
    ("18, or 19", r"18, \text{ or } 19"),
    ("18 and/or 19", r"18 \text{ and/or } 19"),
    ("18 apples or 19 apples", r"18 \text{ apples or } 19 \text{ apples}"),
    ("$18 or $19", r"\$18 \text{ or } \$19"),
    ("18.5 or 18", r"18.5 \text{ or } 18"),
    ("18 OR 19", r"18\,\text{OR}\,19"),
    # lists
    ("18, 19", "18, 19"),
    ("18,19", "18,19"),
    ("17, 18", "17, 18"),
    ("18, 19, 20", r"\{18, 19, 20\}"),
    ("18; 19", "18; 19"),
    ("1,234, 18", "1{,}234, 18"),
    ("18 and 19", r"18 \text{ and } 19"),
    ("18 & 19", r"18 \& 19"),
    ("18 apples, 19 pears", r"18 \text{ apples}, 19 \text{ pears}"),
    # ranges and bounds
    ("18 to 19", r"18 \text{ to } 19"),
    ("from 18 to 19", r"\text{from } 18 \text{ to } 19"),
    ("18 through 20", r"18 \text{ through } 20"),
    ("between 18 and 19", r"\text{between } 18 \text{ and } 19"),
    ("18 ~ 19", r"18 \sim 19"),
    ("18-19", r"18 \text{-} 19"),
    ("18 – 19", r"18 \text{ -- } 19"),
    ("at least 18", r"\geq 18"),
    ("more than 18", r"> 18"),
    ("18 ± 1", r"18 \pm 1"),
    # equations
    ("x = 18 or x = 19", r"x = 18 \text{ or } x = 19"),
    ("x = 18, y = 19", "x = 18, y = 19"),
    # negations
    ("not 18", r"\text{not } 18"),
    ("NOT 18", r"\neq 18"),
    ("definitely not $18", r"\text{definitely not } \$18"),
    ("never 18", r"\ne 18"),
]
HEDGE_TEMPLATES = [
    ("{work}\n#### {text}", "text"),
    ("{work}\nThe answer is {text}.", "text"),
    ("{work}\nAnswer: {text}", "text"),
    ("{work}\nSo the final answer is $\\boxed{{{latex}}}$.", "latex"),
]
NEGATED_PHRASES = [
    "The answer isn't 18.", "The answer is not 18.", "The final answer is NOT 18.", "The answer isn’t $18.",
    "#### 18\nWait, the answer is not 18.", "#### 18\nNo: the answer is 18 or 19.", "\\boxed{18}\nThe answer is 18, 19.",
    "The answer cannot be 18.", "The answer can't be 18.",
    "The answer is 18 or so I think.",  # an approximation commits to no exact number (module docstring's policy)
]
WORK = "She has 16 - 3 - 4 = 9 eggs and sells them at $2 each: 9 * 2 = 18."
HEDGED = [template.format(work=WORK, **{field: h[0] if field == "text" else h[1]})
          for h in HEDGES for template, field in HEDGE_TEMPLATES] + NEGATED_PHRASES

# Honest declarations that must keep their credit: thousands, units, currency, decimals, a trailing period, text
# after the declaration (numbers and commas included), an exponent that is the gold.
HONEST = [
    ("#### 18", 18), ("#### 1,234", 1234), ("#### 18 apples", 18), ("#### $18", 18), ("#### 18.00", 18),
    ("#### 18.", 18), ("#### 18. Then 19 more came.", 18), ("#### 18\nThen 19 more came.", 18),
    ("#### 1,234,567", 1234567), ("#### 1,234 apples, sold at 2 each", 1234), ("#### $1,080.00", 1080),
    ("The answer is 18, not 19.", 18), ("The answer is 18, since 9 + 9 = 18.", 18),
    ("The answer is 18 because 9 * 2 = 18 and 36 / 2 = 18.", 18), ("The answer is 3 * 6 = 18.", 18),
    ("The answer is 18 dollars, which she makes every day.", 18), ("The answer is 18; she sells 9 eggs twice.", 18),
    ("The answer is 18 (9 for each of the 2 days).", 18), ("The answer is 18 apples in total, 9 in each box.", 18),
    ("The answer is 18 and she is done.", 18),
    ("The answer is 18 apples. And 19 pears were left over.", 18),
    ("Answer: 18 apples", 18), ("Answer: $18.", 18), ("**Answer:** 18, as computed.", 18),
    ("A: 1,234", 1234), ("The final answer is 18. Or was it 19? No: 18 it is.", 18),
    (r"\boxed{18}", 18), (r"\boxed{1,234}", 1234), (r"\boxed{1{,}234}", 1234), (r"\boxed{\$18}", 18),
    (r"\boxed{18 \text{ apples}}", 18), (r"\boxed{18.00}", 18), (r"The answer is $\boxed{18}$, 9 from each.", 18),
    ("#### 1.8e1", 18), (r"\boxed{1.8e1}", 18), ("The answer is 1.8E+01.", 18), ("#### 20 - 2 = 18", 18),
]


def test_the_hedged_set_is_large_and_covers_every_declaration_kind():
    assert len(HEDGED) >= 150
    for kind in ("####", "The answer is", "Answer:", "\\boxed{"):
        assert sum(kind in t for t in HEDGED) >= 30, kind


@pytest.mark.parametrize("text", HEDGED)
def test_a_declaration_of_more_than_one_number_or_a_negated_one_declares_nothing(text):
    assert extract_answer(text) is None
    assert answers_match(text, "18") is False


@pytest.mark.parametrize("text", [t for t in HEDGED if t.startswith(WORK + "\n####")])
def test_strict_mode_rejects_hedged_hash_declarations(text):
    assert extract_answer(text, mode="strict") is None


@pytest.mark.parametrize("text, expected", HONEST)
def test_honest_declarations_keep_their_value(text, expected):
    assert extract_answer(text) == expected
    assert answers_match(text, str(expected))


def test_an_exponent_reads_its_value_or_nothing_never_another_number():
    assert extract_answer("#### 1.8e1") == 18 and not answers_match("#### 1.8e1", "1.8")
    assert extract_answer("#### 18e0") == 18 and extract_answer("#### 1.8e-1") == Fraction(18, 100)
    assert extract_answer("#### 1.8 e1") is None
    assert extract_answer("#### 1e999999999") is None  # not a number of a billion digits (and no hang)



# --- math-verify's time is bounded on every call and for a whole batch ----------------------------------------------
# LaTeX that passes the screen yet hangs sympy: math-verify must be stopped, and each kind goes through the worker.
def slow_latex(i: int) -> str:
    kinds = [r"9^{%d}", r"\binom{1000000000}{%d}", r"\prod_{k=1}^{%d} k", r"7^{%d}"]
    return kinds[i % 4] % (123456789 + i)


HONEST_LATEX = [r"\boxed{2 \times 9}", r"The answer is $\boxed{3 \cdot 6}$.", r"\boxed{36 / 2 + 0}", r"\boxed{2 \times 8}"]
# Room on top of a bound, for a loaded 2-core CI machine (fork, pipes, scheduling); the bounds themselves are
# answers.MATH_VERIFY_TIMEOUT_S per input and the 10 s per batch of 64.
ROOM_S = 1.5


def test_slow_latex_costs_at_most_the_timeout_on_every_call_not_only_the_first():
    assert answers._worker.start()
    before = vars(answers._worker).copy()
    for i in range(3):
        start = time.perf_counter()
        assert answers_match(r"So: \boxed{" + slow_latex(i) + "}", "18") is False
        took = time.perf_counter() - start
        assert took < answers.MATH_VERIFY_TIMEOUT_S + ROOM_S, f"call {i + 1} took {took:.1f} s"
        assert answers._worker.timeouts == before["timeouts"] + i + 1  # it went through the worker and was stopped
    assert answers._worker.requests == before["requests"] + 3
    # A timeout costs no restart: the same child answers the next input.
    assert answers_match(HONEST_LATEX[0], "18") is True
    assert answers._worker.starts == before["starts"] and answers._worker.kills == before["kills"]


def test_a_batch_of_64_slow_completions_scores_in_bounded_time_from_a_worker_thread():
    from trl_gsm8k.rewards import correctness_reward

    completions, expected = [], []
    for i in range(64):
        if i % 4 == 0:  # 16 honest completions: 8 need math-verify (2 of those wrong), 8 do not (4 wrong)
            text = HONEST_LATEX[i // 8 % 4] if i % 8 == 0 else ["#### 18", "The answer is 17."][i // 8 % 2]
        else:  # 48 distinct slow ones, of four kinds
            text = "The total is 9 * 2. So the answer is $\\boxed{" + slow_latex(i) + "}$."
        completions.append([{"role": "assistant", "content": text}])
        expected.append(float(answers_match(text, "18")) if i % 4 == 0 else 0.0)  # honest: as scored alone
    assert expected.count(1.0) == 10
    assert answers._worker.start()  # start-up is bounded apart (MATH_VERIFY_STARTUP_S); tested below
    before = vars(answers._worker).copy()
    out: dict = {}

    def score():
        start = time.perf_counter()
        out["rewards"] = correctness_reward(completions, answer=["#### 18"] * 64)
        out["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=score, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "scoring 64 slow completions took over 120 s"
    assert out["rewards"] == expected
    # The requirement: a batch of 64 in at most 10 s. Its bound is MATH_VERIFY_BATCH_S (6 s) of math-verify plus
    # the fast path (milliseconds); the other 4 s are room for a loaded 2-core CI machine.
    assert answers.MATH_VERIFY_BATCH_S + ROOM_S < 10
    assert out["seconds"] < 10, f"{out['seconds']:.1f} s"
    w = answers._worker
    assert w.requests - before["requests"] >= 3 + 1  # the honest LaTeX (3 distinct) and at least one slow one
    assert w.timeouts > before["timeouts"]  # a slow one went through the worker and was stopped there
    assert w.skipped > before["skipped"]  # the rest were cut by the batch budget
    assert w.kills == before["kills"] and w.starts == before["starts"]


def test_math_verify_startup_is_bounded_and_not_charged_to_the_first_input(monkeypatch):
    # A child slower to start than an input's whole timeout (as on a loaded machine): the first input still gets its
    # own MATH_VERIFY_TIMEOUT_S once the child is up, and the wait is bounded by MATH_VERIFY_STARTUP_S.
    slow_start = "import time; time.sleep(%s)\n" % (answers.MATH_VERIFY_TIMEOUT_S + 0.5)
    monkeypatch.setattr(answers, "_WORKER_CODE", slow_start + answers._WORKER_CODE)
    answers._worker.close()
    starts, timeouts = answers._worker.starts, answers._worker.timeouts
    start = time.perf_counter()
    try:
        assert answers_match(HONEST_LATEX[1], "18") is True
    finally:
        answers._worker.close()  # the next test starts the unpatched child
    took = time.perf_counter() - start
    assert answers.MATH_VERIFY_TIMEOUT_S + 0.5 < took < answers.MATH_VERIFY_STARTUP_S + answers.MATH_VERIFY_TIMEOUT_S
    assert answers._worker.starts == starts + 1 and answers._worker.timeouts == timeouts


@pytest.mark.parametrize("sig", ["SIGSTOP", "SIGKILL"])
def test_a_stuck_or_dead_child_is_killed_and_restarted_cleanly(sig):
    import os
    import signal

    assert answers._worker.start()
    child = answers._worker._proc
    before = vars(answers._worker).copy()
    os.kill(child.pid, getattr(signal, sig))
    if sig == "SIGKILL":
        child.wait(timeout=10)  # it died between two inputs
    start = time.perf_counter()
    assert answers_match(HONEST_LATEX[0], "18") is (sig == "SIGKILL")  # a dead child is restarted at once
    assert time.perf_counter() - start < answers.MATH_VERIFY_TIMEOUT_S + 1 + answers.MATH_VERIFY_STARTUP_S
    assert child.poll() is not None  # the old child is gone (reaped, no zombie)
    if sig == "SIGSTOP":  # a child that stops answering is killed, and the next input starts a new one
        assert answers._worker.kills == before["kills"] + 1
        assert answers_match(HONEST_LATEX[0], "18") is True
    assert answers._worker.starts == before["starts"] + 1
    assert answers._worker._proc.pid != child.pid


def test_a_child_that_does_not_start_in_time_costs_the_startup_bound_then_is_tried_again(monkeypatch):
    monkeypatch.setattr(answers, "MATH_VERIFY_STARTUP_S", 1.0)
    monkeypatch.setattr(answers, "_WORKER_CODE", "import time; time.sleep(30)\n" + answers._WORKER_CODE)
    answers._worker.close()
    starts = answers._worker.starts
    try:
        for _ in range(2):
            start = time.perf_counter()
            assert answers_match(HONEST_LATEX[0], "18") is False
            assert time.perf_counter() - start < 1.0 + ROOM_S
    finally:
        answers._worker.close()
    assert answers._worker.starts == starts + 2 and answers._worker._proc is None
    monkeypatch.undo()
    assert answers_match(HONEST_LATEX[0], "18") is True  # the real child starts again


def test_an_interrupt_between_request_and_reply_does_not_shift_later_replies():
    """A KeyboardInterrupt while the child works on an input (a notebook's stop button) must not leave that reply in
    the pipe, where it would answer the next input: the child is dropped and the next inputs are judged right."""
    import _thread
    import signal

    assert answers._worker.start()
    kills = answers._worker.kills
    # Python's own SIGINT handler, whatever an earlier test installed: interrupt_main() runs the handler in place.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.5, _thread.interrupt_main)  # raises KeyboardInterrupt in this (the main) thread
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            answers_match(r"So: \boxed{" + slow_latex(0) + "}", "18")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert answers._worker.kills == kills + 1
    # Each verdict differs from the one before it: a reply shifted by one input would get at least one wrong.
    assert answers_match(r"\boxed{2 \times 8}", "18") is False
    assert answers_match(r"\boxed{2 \times 9}", "18") is True
    assert answers_match(r"\boxed{3 \times 5}", "18") is False


def test_thousands_of_markers_cost_milliseconds_not_seconds():
    """A completion of markers (spam, or a loop) is read in bounded time: a clause within a bounded window, and at
    most answers.MAX_MARKERS_READ markers, from the end."""
    code = (
        "from trl_gsm8k.answers import extract_answer\n"
        "texts = ['answer is ' * 20_000, 'A:\\n' * 30_000, '#### x\\n' * 20_000, '<answer>x</answer>' * 5_000,"
        " '{\"answer\": \"x\"}' * 5_000, '\\\\boxed{1}' * 5_000 + 'answer is x ' * 5_000]\n"
        "assert [extract_answer(t) for t in texts] == [None] * 6\n"
        "assert extract_answer('The answer is 7. ' + 'Hmm. ' * 15_000) == 7\n"
    )
    # About 0.5 s when each marker costs at most a bounded read, plus the interpreter's start; reading every marker
    # fully took over 5 s for the first text alone.
    subprocess.run([sys.executable, "-c", code], check=True, timeout=20, cwd=Path(__file__).parent.parent)


def test_markers_are_read_from_the_end_up_to_the_bound():
    silent = "#### x\n"  # a marker that declares nothing, and still comes last
    for n in (1, answers.MAX_MARKERS_READ - 1):
        assert extract_answer("The answer is 7.\n" + "Answer: none\n" * n + silent) is None
    remarks = "The answer is correct.\n"  # markers that are no declaration: the reader goes on past them
    assert extract_answer("The answer is 7.\n" + remarks * (answers.MAX_MARKERS_READ - 1)) == 7
    assert extract_answer("The answer is 7.\n" + remarks * answers.MAX_MARKERS_READ) is None  # spam: no answer
