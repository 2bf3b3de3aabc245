"""Reward functions: TRL's contract, both completion shapes, weights, bad input, pickling."""

import gzip
import json
import logging
import pickle
from pathlib import Path

import pytest

from trl_gsm8k import rewards
from trl_gsm8k.rewards import (
    REWARDS,
    CorrectnessReward,
    LengthReward,
    ShapedReward,
    TagFormatReward,
    correctness_reward,
    correctness_reward_strict,
    format_reward,
    length_reward,
    shaped_reward,
    steps_reward,
    tag_format_reward,
)

ASSETS = Path(__file__).parent / "assets"

GOOD = "She has 16 - 3 - 4 = 9 eggs and sells them at $2 each: 9 * 2 = 18.\n#### 18"


def chat(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize("wrap", [lambda t: t, chat])
def test_correctness_accepts_strings_and_chat_messages(wrap):
    completions = [wrap(GOOD), wrap("The answer is \\boxed{18}."), wrap("9 * 2 = 18"), wrap("#### 17")]
    assert correctness_reward(completions, answer=["#### 18"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert correctness_reward_strict(completions, answer=["18"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_answer_column_may_be_full_text_or_bare_number():
    gsm8k_answer = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 18"
    assert correctness_reward([GOOD, GOOD, GOOD], answer=[gsm8k_answer, "18", 18]) == [1.0, 1.0, 1.0]


def test_trainer_keyword_arguments_are_accepted():
    out = correctness_reward(
        prompts=["q"], completions=[GOOD], completion_ids=[[1, 2]], answer=["18"], question=["q"],
        trainer_state=None, log_extra=None, log_metric=None,
    )
    assert out == [1.0]


def test_correctness_logs_accuracy_over_graded_completions():
    logged = []
    log_metric = lambda name, value: logged.append((name, value))  # noqa: E731 - TRL's log_metric signature
    completions = [GOOD, "#### 17", GOOD, "9 * 2 = 18"]
    out = correctness_reward(completions, answer=["18", "18", "#### eighteen", "18"], log_metric=log_metric)
    assert out == [1.0, 0.0, None, 0.0]
    accuracy = [m for m in logged if m[0] == "accuracy"]
    assert accuracy == [("accuracy", 1.0), ("accuracy", 0.0), ("accuracy", 0.0)]  # TRL averages: 1 of 3 graded
    # declared, right or wrong, over every completion (the gold does not matter): 3 of 4
    assert [m for m in logged if m[0] != "accuracy"] == [("declare_rate", v) for v in (1.0, 1.0, 1.0, 0.0)]
    logged.clear()
    correctness_reward_strict(["The answer is 18.", GOOD], answer=["18", "18"], log_metric=log_metric)
    assert logged == [("accuracy_strict", 0.0), ("accuracy_strict", 1.0),
                      ("declare_rate_strict", 0.0), ("declare_rate_strict", 1.0)]
    logged.clear()
    ShapedReward(correctness_weight=3.0)([GOOD, "#### 17"], answer=["18", "18"], log_metric=log_metric)
    assert logged == [("accuracy", 1.0), ("accuracy", 0.0), ("declare_rate", 1.0), ("declare_rate", 1.0)]


def test_format_reward_wants_a_last_hash_line():
    assert format_reward([GOOD, "#### 18\nHope this helps!", "\\boxed{18}", "####", chat(GOOD + "\n\n")]) == [
        1.0, 0.0, 0.0, 0.0, 1.0,
    ]


def test_length_reward_window():
    assert length_reward(["x" * 50, "x" * 51, "x" * 499, "x" * 500]) == [0.0, 1.0, 1.0, 0.0]
    assert LengthReward(0, 10)(["abc", "x" * 20]) == [1.0, 0.0]
    with pytest.raises(ValueError):
        LengthReward(100, 10)


def test_shaped_reward_uses_the_tutorial_weights():
    out = shaped_reward([GOOD, "#### 18", "#### 17", "nothing"], answer=["18"] * 4)
    assert out == pytest.approx([1.15, 1.1, 0.1, 0.0])
    custom = ShapedReward(correctness_weight=2.0, format_weight=0.5, length_weight=0.0)
    assert custom([GOOD], answer=["18"]) == pytest.approx([2.5])


def test_rewards_pickle_and_keep_their_names():
    for fn in (ShapedReward(format_weight=0.3), CorrectnessReward("strict"), LengthReward(1, 2),
               TagFormatReward(think_opened_in_prompt=True)):
        clone = pickle.loads(pickle.dumps(fn))
        assert clone.__name__ == fn.__name__ and repr(clone) == repr(fn)
    for fn in (correctness_reward, correctness_reward_strict, length_reward, shaped_reward, format_reward,
               tag_format_reward):
        clone = pickle.loads(pickle.dumps(fn))
        assert clone.__name__ == fn.__name__ and clone([GOOD], answer=["18"]) == fn([GOOD], answer=["18"])
    assert set(REWARDS) == {"correctness", "correctness_strict", "format", "length", "shaped", "steps", "tag_format"}


@pytest.mark.parametrize("fn", [correctness_reward, correctness_reward_strict, format_reward, length_reward, shaped_reward,
                                steps_reward, tag_format_reward])
def test_bad_completions_get_zero_never_an_exception(fn):
    bad = ["", None, "7" * 1_000_000, r"\boxed{9^{9^{9^{9^{9}}}}}", "#### " + "9" * 5000, 42, [], [{"content": None}]]
    out = fn(bad, answer=["18"] * len(bad))
    assert len(out) == len(bad)
    assert all(r is not None and r >= 0.0 for r in out)
    assert all(r == 0.0 for r in out[:2])


def test_unreadable_gold_gives_none_and_warns_once(caplog):
    rewards._warned_golds.clear()
    with caplog.at_level(logging.WARNING, logger="trl_gsm8k.rewards"):
        out = correctness_reward([GOOD, GOOD, GOOD], answer=["#### eighteen", "#### eighteen", "18"])
        shaped = shaped_reward([GOOD], answer=["#### eighteen"])
    assert out == [None, None, 1.0]
    assert shaped == [None]
    assert sum("eighteen" in r.message for r in caplog.records) == 1


def test_missing_or_mismatched_answer_column_is_a_clear_error():
    with pytest.raises(ValueError, match="answer` column"):
        correctness_reward([GOOD])
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        correctness_reward([GOOD, GOOD], answer=["18"])
    with pytest.raises(ValueError, match="mode"):
        CorrectnessReward("lenient")


def test_steps_reward_separates_right_from_wrong_real_solutions():
    """On 5,276 labelled GPT-3 solutions, correct ones reach most gold steps, wrong ones few (annotations stripped:
    a model writes `16 - 3 - 4 = 9`, not the calculator's `<<16-3-4=9>>`)."""
    from trl_gsm8k.answers import strip_annotations
    from trl_gsm8k.data import read_rows

    golds = [r["answer"] for r in read_rows("test")]
    scores: dict[bool, list[float]] = {True: [], False: []}
    with gzip.open(ASSETS / "example_model_solutions.jsonl.gz", "rt") as f:
        for gold, line in zip(golds, f):
            for value in json.loads(line).values():
                if isinstance(value, dict):
                    scores[value["is_correct"]] += steps_reward([strip_annotations(value["solution"])], answer=[gold])
    right, wrong = (sum(s) / len(s) for s in (scores[True], scores[False]))
    assert len(scores[True]) + len(scores[False]) == 5276
    assert right > 0.85 and wrong < 0.3, (right, wrong)
    assert all(0.0 <= s <= 1.0 for s in scores[True] + scores[False])


@pytest.mark.parametrize("completion, expected", [
    ("16 - 3 - 4 = 9 eggs, 9 * 2 = $18\n#### 18", 1.0),
    ([{"role": "assistant", "content": "16 - 3 - 4 = 9 eggs, 9 * 2 = 18"}], 1.0),
    ("16 - 3 - 4 = 9 eggs.\n#### 9", 2 / 3),          # one of two steps, nothing wrong: F1 of (1, 1/2)
    ("16 - 3 = 13, 13 - 4 = 9, 9 * 2 = 18", 0.8),     # both steps and one extra: F1 of (2/3, 1)
    ("#### 18", 0.0),                                  # a declared answer is not a worked step
    ("<think>16 - 3 - 4 = 9, 9 * 2 = 18", 0.0),        # an unclosed think block declares nothing
    (" ".join(f"x = {i}" for i in range(200)), 0.0),   # number spam: more than MAX_STEPS results
    ("= 9 = 18 " * 40, 0.0),                           # 80 results, beyond MAX_STEPS
    (None, 0.0), ("", 0.0), (42, 0.0),
])
def test_steps_reward_cases(completion, expected):
    gold = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"
    assert steps_reward([completion], answer=[gold]) == [pytest.approx(expected)]


def test_steps_reward_reads_the_solution_column_of_load_gsm8k():
    # In training, `answer` is the bare final number; the steps come from the `solution` column (annotations stripped).
    from trl_gsm8k.data import load_gsm8k

    row = load_gsm8k("train", limit=1)[0]
    assert row["answer"] == "72" and "<<" not in row["solution"]
    completions = ["48 / 2 = 24 in May, 48 + 24 = 72.\n#### 72", "48 + 24 = 72.\n#### 72"]
    assert steps_reward(completions, answer=[row["answer"]] * 2, solution=[row["solution"]] * 2) == \
        [1.0, pytest.approx(2 / 3)]
    assert steps_reward(completions[1:], answer=[row["answer"]]) == [1.0]  # without it: the final answer is the step


def test_steps_reward_gold_without_annotations_and_unreadable_gold():
    assert steps_reward(["2 + 3 = 5\n#### 5", "#### 5"], answer=["5", "#### 5"]) == [1.0, 0.0]
    assert steps_reward(["1 + 1 = 2"], answer=["no number"]) == [None]
    with pytest.raises(ValueError, match="answer"):
        steps_reward(["1 + 1 = 2"])
    with pytest.raises(ValueError, match="1 completions but 2 solutions"):
        steps_reward(["1 + 1 = 2"], answer=["2"], solution=["1 + 1 = 2", "x"])


def test_correctness_gives_no_credit_to_a_hedged_or_negated_declaration():
    completions = ["#### 18 or 19", chat("\\boxed{18, 19}"), "The answer is either 18 or 19.", "The answer is not 18.",
                   "Answer: 18 to 19", "#### 1.8e1", "#### 1,234 apples", "#### 18. Then 19 more came."]
    answer = ["18"] * 6 + ["1234", "18"]
    assert correctness_reward(completions, answer=answer) == [0.0] * 5 + [1.0, 1.0, 1.0]
    assert correctness_reward_strict(completions, answer=answer) == [0.0] * 5 + [1.0, 1.0, 1.0]


def test_correctness_scores_a_batch_in_order_with_unreadable_golds_and_math_verify_mixed():
    from trl_gsm8k import answers

    requests = answers._worker.requests
    completions = ["\\boxed{2 \\times 9}", GOOD, "\\boxed{2 \\times 8}", "\\boxed{2 \\times 9}", "So \\boxed{2 \\times 9}"]
    out = correctness_reward(completions, answer=["18", "#### eighteen", "18", "19", "18"])
    assert out == [1.0, None, 0.0, 0.0, 1.0]
    assert answers._worker.requests == requests + 3  # through the worker, each distinct (LaTeX, gold) pair once
    with pytest.raises(ValueError, match="2 completions but 1 golds"):
        answers.answers_match_batch(["#### 1", "#### 2"], ["1"])


def test_reward_names():
    from trl_gsm8k.rewards import get_reward_funcs

    assert get_reward_funcs(["correctness", "trl_gsm8k.rewards.correctness_reward"]) == [correctness_reward] * 2
    for bad in (["corectness"], ["no.such.module.f"], ["trl_gsm8k.rewards.nope"], ["trl_gsm8k.rewards.REWARDS"]):
        with pytest.raises(ValueError, match="Unknown reward function"):
            get_reward_funcs(bad)
    with pytest.raises(ValueError, match="empty"):
        get_reward_funcs([])


# --- the gold: `answer`, else `solution` (TRL's and open-r1's name) -----------------------------------------------

GOLD_REWARDS = [correctness_reward, correctness_reward_strict, shaped_reward, steps_reward]
RIGHT, WRONG = "48 / 2 = 24 in May, 48 + 24 = 72.\n#### 72", "48 / 2 = 24 in May, 48 + 25 = 73.\n#### 73"


@pytest.mark.parametrize("fn", GOLD_REWARDS)
@pytest.mark.parametrize("column, gold", [
    ("answer", "72"), ("answer", "In all: 48+24 = <<48+24=72>>72 clips.\n#### 72"),
    ("solution", "72"), ("solution", "#### 72"), ("solution", "\\boxed{72}"), ("solution", "$72$"),
    ("solution", "In all, $48 + 24 = \\boxed{72}$ clips."),
])
def test_gold_is_read_from_answer_or_solution(fn, column, gold):
    scores = fn([RIGHT, WRONG], **{column: [gold] * 2})
    assert scores == fn([RIGHT, WRONG], answer=["72"] * 2) and scores[0] > scores[1]


@pytest.mark.parametrize("fn", GOLD_REWARDS)
def test_answer_is_the_gold_when_both_columns_are_there(fn):
    # load_gsm8k has both: its `solution` is the worked solution; here it even holds another number
    for solution in ("#### 73", "\\boxed{73}", "73"):
        scores = fn([RIGHT, WRONG], answer=["72"] * 2, solution=[solution] * 2)
        assert scores == fn([RIGHT, WRONG], answer=["72"] * 2) and scores[0] > scores[1], solution


@pytest.mark.parametrize("fn", GOLD_REWARDS)
def test_no_gold_column_names_both(fn):
    with pytest.raises(ValueError, match="`answer` column .* `solution` column"):
        fn([RIGHT], question=["How many clips?"])
    with pytest.raises(ValueError, match="2 completions but 1 solutions"):
        fn([RIGHT, RIGHT], solution=["72"])


def test_unreadable_solution_gold_gives_none():
    assert correctness_reward([RIGHT, RIGHT], solution=["\\boxed{72 or 73}", "\\boxed{72"]) == [None, None]


# --- the tag template: <think>...</think> <answer>N</answer> ----------------------------------------------------------

@pytest.mark.parametrize("completion", [
    "<think>48+24</think> <answer>72</answer>",
    "<reasoning>48+24=72</reasoning>\n<answer>\n72\n</answer>",
    "<think>48+24</think><answer>$72</answer>",
    "<think>48+24</think> <answer>72</answer></s>",
    " \n<think>\n48 / 2 = 24\n48 + 24 = 72\n</think>\n\n<answer>72</answer>\n<|im_end|>\n",
    "<think>48+24</think> <answer>72</answer><|eot_id|>",
    "<think>48+24</think> <answer>72</answer> <|endoftext|>",
    "<think></think> <answer>72</answer>",  # format only: an empty think block is still the template
    "<think>Is the answer 71? No: 48+24 = 72.</think> <answer>72</answer>",  # numbers in the think block are fine
    chat("<think>48+24</think> <answer>72</answer>"),
])
def test_tag_format_credits_the_template(completion):
    assert tag_format_reward([completion]) == [1.0]


@pytest.mark.parametrize("completion", [
    "<answer>72</answer>",                                            # no think block
    "<think>48+24</think> <answer>72",                                # answer never closed
    "<think>48+24 <answer>72</answer>",                               # think never closed
    "<think>48+24</think> <answer>72</answer> Hope that helps!",      # text after the answer
    "<think>48+24</think> <answer>72</answer></s> more",              # text after the end of turn
    "Sure! <think>48+24</think> <answer>72</answer>",                 # text before the think block
    "<think>48+24</think> So: <answer>72</answer>",                   # text between the blocks
    "<think>48+24</think> <answer>72</answer> <answer>73</answer>",   # two answers
    "<think>48+24</think> <answer>72</answer> <answer>72</answer>",   # two answers, even equal
    "<think><think>48+24</think></think> <answer>72</answer>",        # nested think
    "<think>a</think> <think>b</think> <answer>72</answer>",          # two think blocks
    "<think>48+24</think> <answer><answer>72</answer></answer>",      # nested answer
    "<think>48+24</reasoning> <answer>72</answer>",                   # mismatched tags
    "<answer>72</answer> <think>48+24</think>",                       # wrong order
    "<THINK>48+24</THINK> <ANSWER>72</ANSWER>",                       # tags are lower case
    "<think>48+24</think> <answer>72 or 73</answer>",                 # not one number
    "<think>48+24</think> <answer>seventy-two</answer>",              # not a number
    "<think>48+24</think> <answer></answer>",                         # empty answer
    "48+24</think> <answer>72</answer>",                              # think opened by the prompt: see below
    "48 + 24 = 72\n#### 72",                                          # the other template
    "", None, 42, [], [{"content": None}], [{"role": "assistant", "content": "<answer>72</answer>"}],
])
def test_tag_format_refuses_anything_else(completion):
    assert tag_format_reward([completion]) == [0.0]


@pytest.mark.parametrize("completion, expected", [
    ("48+24</think> <answer>72</answer>", 1.0),
    ("\n48 / 2 = 24, 48 + 24 = 72\n</think>\n<answer>72</answer><|im_end|>", 1.0),
    (chat("48+24</think> <answer>72</answer>"), 1.0),
    ("<think>48+24</think> <answer>72</answer>", 0.0),             # a second think block
    ("<reasoning>48+24</reasoning> <answer>72</answer>", 0.0),     # the prompt opened <think>
    ("48+24 <answer>72</answer>", 0.0),                            # the think block never closed
    ("48+24</think> <answer>72</answer> Hope that helps!", 0.0),
])
def test_tag_format_when_the_prompt_opens_the_think_block(completion, expected):
    # R1-Zero's prompt ends with "Assistant: <think>": the completion starts inside the block
    assert TagFormatReward(think_opened_in_prompt=True)([completion]) == [expected]


def test_tag_format_is_a_recipe_name_and_keeps_its_metric_name():
    from trl_gsm8k.rewards import get_reward_funcs

    assert get_reward_funcs(["correctness", "tag_format"]) == [correctness_reward, tag_format_reward]
    assert tag_format_reward.__name__ == TagFormatReward(True).__name__ == "tag_format_reward"
    assert repr(tag_format_reward) == "TagFormatReward(think_opened_in_prompt=False)"


# --- declarations: which templates the correctness reward credits -------------------------------------------------

def test_correctness_with_declarations_credits_only_those():
    from trl_gsm8k.answers import DECLARATIONS

    assert len(DECLARATIONS) == 6 and {"hash", "boxed", "answer_tag", "json", "phrase", "label"} == set(DECLARATIONS)
    tags_only = CorrectnessReward(declarations=("answer_tag",))
    completions = ["<think>48+24</think> <answer>72</answer>", "48 + 24 = 72\n#### 72", "So \\boxed{72}.",
                   "<think>48+24</think> <answer>73</answer>"]
    logged = []
    assert tags_only(completions, answer=["72"] * 4, log_metric=lambda *m: logged.append(m)) == [1.0, 0.0, 0.0, 0.0]
    assert logged[:4] == [("accuracy", 1.0), ("accuracy", 0.0), ("accuracy", 0.0), ("accuracy", 0.0)]
    assert logged[4:] == [("declare_rate", v) for v in (1.0, 0.0, 0.0, 1.0)]  # only <answer> declares here
    assert tags_only.__name__ == "correctness_reward"
    assert CorrectnessReward(declarations=["hash", "boxed"])(completions, answer=["72"] * 4) == [0.0, 1.0, 1.0, 0.0]
    shaped = ShapedReward(format_weight=0.0, length_weight=0.0, declarations=("answer_tag",))
    assert shaped(completions, answer=["72"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_declarations_are_checked_when_the_reward_is_made_and_shown():
    for bad in (("answer-tag",), (), ("answer_tag", "tags")):
        with pytest.raises(ValueError, match="answer_tag"):  # the message lists the valid names
            CorrectnessReward(declarations=bad)
    with pytest.raises(ValueError, match="answer_tag"):
        ShapedReward(declarations=("tags",))
    with pytest.raises(ValueError, match="strict"):
        CorrectnessReward("strict", declarations=("boxed",))
    with pytest.raises(ValueError, match="mode"):
        CorrectnessReward("lenient", declarations=("hash",))
    assert CorrectnessReward("strict", declarations=("hash",))(["#### 72"], answer=["72"]) == [1.0]
    assert CorrectnessReward(declarations="answer_tag").declarations == ("answer_tag",)  # one name, as answers reads it
    reward = CorrectnessReward(declarations=["answer_tag"])
    assert repr(reward) == "CorrectnessReward(mode='flexible', declarations=('answer_tag',))"
    assert repr(pickle.loads(pickle.dumps(reward))) == repr(reward)
    assert repr(correctness_reward) == "CorrectnessReward(mode='flexible', declarations=None)"
    assert "declarations=('answer_tag',)" in repr(ShapedReward(declarations=("answer_tag",)))


def test_readme_snippet_runs():
    """The README's "Other templates" example, run as the doctest it is."""
    import doctest

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Other templates: tags, JSON, boxed", 1)[1].split("\n#", 1)[0]
    snippet = section.split("```python", 1)[1].split("\n```\n", 1)[0]
    runner = doctest.DocTestRunner()
    runner.run(doctest.DocTestParser().get_doctest(snippet, {}, "README", "README.md", 0))
    assert runner.summarize(verbose=False) == (0, 5)  # failed, attempted
