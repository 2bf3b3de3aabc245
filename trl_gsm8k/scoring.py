r"""How evaluation samples are scored: pure functions, no torch, no model.

Each completion is read twice, once by this package's extraction (:mod:`trl_gsm8k.answers`: **strict**, only
``#### N`` counts; **flexible**, any declared answer, compared exactly as fractions) and once by
lm-evaluation-harness's rules for its ``gsm8k`` task, for comparison with published numbers: its strict regex
``#### (\-?[0-9\.\,]+)`` (first match) and its flexible *last number anywhere* (which credits an answer that was
never declared), scored as lm-eval does, by string equality after dropping ``,``, ``$`` and a trailing ``.``.
The two disagree where a completion never declares an answer but ends on the gold number:

>>> completion = "She has 9 * 2 = 18 apples"
>>> extract_answer(completion, "flexible"), lm_eval_extract(completion, "flexible")
(None, '18')

:func:`score_item` builds one evaluated item (one JSONL line of the evaluator) from its K completions;
:func:`summarize` turns the items into corpus metrics: pass@1 for each reading, and with K > 1 also pass@K
(:func:`pass_at_k`, the unbiased estimator of Chen et al. 2021) and maj@K (:func:`majority_answer`), plus the
declare and truncation rates and the token counts.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from fractions import Fraction
from typing import Iterable, Sequence

from .answers import answers_match_batch, extract_answer, extract_gold

# lm-evaluation-harness gsm8k task: filters and the exact-match normalisation (regexes_to_ignore).
LM_EVAL_STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")
LM_EVAL_FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_EVAL_IGNORE = [re.compile(p) for p in (r",", r"\$", r"(?s).*#### ", r"\.$")]


# --- lm-evaluation-harness's rules -------------------------------------------------------------------------------


def lm_eval_extract(text: str, mode: str = "strict") -> str | None:
    """lm-evaluation-harness's gsm8k answer filter: ``strict`` (first ``#### N``) or ``flexible`` (last number).

    >>> lm_eval_extract("so 3 + 4 = 7.\\n#### 7")
    '7'
    >>> lm_eval_extract("The total is 5 + 13 = $18.", "flexible"), lm_eval_extract("no number", "flexible")
    ('$18.', None)
    """
    if mode == "strict":
        m = LM_EVAL_STRICT_RE.search(text)
        return m.group(1).strip() if m else None
    if mode != "flexible":
        raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")
    matches = LM_EVAL_FLEXIBLE_RE.findall(text)
    if not matches:
        return None
    groups = [g for g in matches[-1] if g]
    return groups[0].strip() if groups else None


def lm_eval_normalize(text: str) -> str:
    """lm-eval's exact-match normalisation: drop ``,`` and ``$``, anything up to ``#### ``, one trailing ``.``.

    >>> lm_eval_normalize("$1,080."), lm_eval_normalize("18.00")
    ('1080', '18.00')
    """
    for regex in _LM_EVAL_IGNORE:
        text = regex.sub("", text)
    return text.strip().lower()


def lm_eval_correct(extracted: str | None, gold: str) -> bool:
    """String equality after :func:`lm_eval_normalize`, as lm-eval scores (``18.00`` does not match ``18``)."""
    return extracted is not None and lm_eval_normalize(extracted) == lm_eval_normalize(gold)


# --- K samples per question --------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    >>> pass_at_k(4, 1, 1), pass_at_k(4, 1, 4), pass_at_k(4, 0, 4), round(pass_at_k(4, 2, 2), 4)
    (0.25, 1.0, 0.0, 0.8333)
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_answer(answers: Sequence[str | None]) -> str | None:
    """The most frequent non-``None`` answer; a tie goes to the one seen first. ``None`` if none was declared.

    >>> majority_answer(["18", None, "17", "18", "17"]), majority_answer([None, None])
    ('18', None)
    """
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


# --- items and the summary ---------------------------------------------------------------------------------------


def score_item(
    index: int, question: str, gold: str, completions: list[str], num_tokens: list[int], truncated: list[bool],
    seconds: float, settings_id: str,
) -> dict:
    """One JSONL record: the completions, their extracted answers (ours and lm-eval's) and correctness."""
    record = {"index": index, "question": question, "gold": gold, "completions": completions,
              "extracted": {}, "correct": {}, "lm_eval": {"extracted": {}, "correct": {}}}
    for mode in ("strict", "flexible"):
        answers = [extract_answer(c, mode) for c in completions]
        record["extracted"][mode] = [None if a is None else str(a) for a in answers]
        # Also settles boxed LaTeX that the fast parser leaves to math-verify, within the batch bound per item.
        record["correct"][mode] = answers_match_batch(completions, [gold] * len(completions), mode)
        lm = [lm_eval_extract(c, mode) for c in completions]
        record["lm_eval"]["extracted"][mode] = lm
        record["lm_eval"]["correct"][mode] = [lm_eval_correct(a, gold) for a in lm]
    record.update(num_tokens=num_tokens, truncated=truncated, seconds=seconds, settings_id=settings_id)
    return record


def summarize(items: Sequence[dict]) -> dict:
    """Corpus metrics from the per-item records that :func:`score_item` builds (the JSONL lines)."""
    if not items:
        raise ValueError("no evaluated items to summarize")
    k = len(items[0]["completions"])
    completions = [n for item in items for n in item["num_tokens"]]
    total_tokens = sum(completions)
    seconds = sum(item["seconds"] for item in items)
    out: dict = {"num_items": len(items), "num_samples": k}
    for family, get in (("", lambda it: it), ("lm_eval_", lambda it: it["lm_eval"])):
        for mode in ("strict", "flexible"):
            correct = [get(it)["correct"][mode] for it in items]
            out[f"{family}{mode}_pass@1"] = _mean(sum(c) / len(c) for c in correct)
            if k > 1:
                out[f"{family}{mode}_pass@{k}"] = _mean(pass_at_k(k, sum(c), k) for c in correct)
                out[f"{family}{mode}_maj@{k}"] = _mean(
                    _majority_correct(get(it)["extracted"][mode], it["gold"], family == "lm_eval_") for it in items
                )
    flexible = [a for it in items for a in it["extracted"]["flexible"]]
    out["declare_rate"] = _mean(a is not None for a in flexible)
    out["truncated_rate"] = _mean(t for it in items for t in it["truncated"])
    out["mean_completion_tokens"] = total_tokens / len(completions)
    out["generated_tokens"] = total_tokens
    out["generation_seconds"] = seconds
    out["tokens_per_second"] = total_tokens / seconds if seconds > 0 else None
    return out


def _majority_correct(answers: Sequence[str | None], gold: str, lm_eval: bool) -> bool:
    if lm_eval:
        # Votes are counted on lm-eval's normalised strings, so "$18" and "18" vote together as lm-eval scores them.
        voted = majority_answer([None if a is None else lm_eval_normalize(a) for a in answers])
        return lm_eval_correct(voted, gold)
    voted = majority_answer(answers)  # our answers are canonical Fraction strings: "18", "3/4"
    return voted is not None and Fraction(voted) == extract_gold(gold)


def _mean(values: Iterable) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
