"""Scoring of evaluation samples on hand-written strings: lm-eval's rules, pass@k, majority vote, the summary."""

import pytest

from trl_gsm8k.scoring import lm_eval_correct, lm_eval_extract, majority_answer, pass_at_k, score_item, summarize


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 2, 8) == 1.0 and pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - 6 / 10)  # 1 - C(4,2)/C(5,2)
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_majority_answer_ignores_undeclared_and_breaks_ties_by_first_seen():
    assert majority_answer([None, None, "3"]) == "3"
    assert majority_answer(["5", "7", "7", "5"]) == "5"
    assert majority_answer([]) is None


@pytest.mark.parametrize("text, strict, flexible", [
    ("3 + 4 = 7\n#### 7", "7", "7"),
    ("#### 1,080.", "1,080.", "1,080."),
    ("She pays $18.", None, "$18."),
    ("First 12, then 5 + 13 = 18 apples", None, "18"),
    ("#### 5\n#### 6", "5", "6"),  # lm-eval strict takes the first match; flexible the last number
    ("The answer is -3", None, "-3"),
    ("no digits at all", None, None),
])
def test_lm_eval_extraction(text, strict, flexible):
    assert lm_eval_extract(text, "strict") == strict
    assert lm_eval_extract(text, "flexible") == flexible


def test_lm_eval_scoring_is_string_equality_after_its_normalisation():
    assert lm_eval_correct("$1,080.", "1080")
    assert lm_eval_correct("18", "18")
    assert not lm_eval_correct("18.00", "18")  # lm-eval does not compare numerically
    assert not lm_eval_correct(None, "18")


def test_score_item_and_summarize():
    completions = ["So 9 * 2 = 18.\n#### 18", "The answer is 18.", "I get 17, no wait, 18"]
    a = score_item(0, "q", "18", completions, [10, 20, 30], [False, False, True], 2.0, "id")
    assert a["extracted"] == {"strict": ["18", None, None], "flexible": ["18", "18", None]}
    assert a["correct"]["strict"] == [True, False, False]
    assert a["lm_eval"]["correct"] == {"strict": [True, False, False], "flexible": [True, True, True]}
    b = score_item(1, "q", "5", ["#### 4", "#### 4", "#### 5"], [5, 5, 5], [False] * 3, 1.0, "id")
    s = summarize([a, b])
    assert s["num_items"] == 2 and s["num_samples"] == 3
    assert s["strict_pass@1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert s["flexible_pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert s["strict_pass@3"] == 1.0
    assert s["flexible_maj@3"] == 0.5  # item a votes 18 (right), item b votes 4 (wrong)
    assert s["lm_eval_flexible_pass@1"] == pytest.approx((1 + 1 / 3) / 2)
    assert s["declare_rate"] == pytest.approx(5 / 6)
    assert s["truncated_rate"] == pytest.approx(1 / 6)
    assert s["mean_completion_tokens"] == pytest.approx(75 / 6)
    assert s["tokens_per_second"] == pytest.approx(75 / 3)
