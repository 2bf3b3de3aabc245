"""GSM8K loading: bundled copy, local directory, prompts, bad rows."""

import gzip
import json
from collections import Counter

import pytest

from trl_gsm8k.answers import gold_steps
from trl_gsm8k.data import SYSTEM_PROMPT, build_prompt, load_gsm8k, read_rows


def test_bundled_release_has_both_splits():
    train, test = load_gsm8k("train"), load_gsm8k("test")
    assert (train.num_rows, test.num_rows) == (7473, 1319)
    assert set(train.column_names) == {"prompt", "answer", "question", "solution"}
    row = test[0]
    assert row["answer"] == "18"
    assert row["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["question"]}]
    assert "<<" not in row["solution"] and "####" not in row["solution"]
    assert sum("<<" in s for s in train["solution"]) == 0
    assert "1080" in train["answer"] or "1080" in test["answer"]  # thousands commas removed


def test_plain_prompt_and_custom_system_prompt():
    ds = load_gsm8k("test", prompt_format="plain", system_prompt="Be brief.", limit=3)
    assert ds.num_rows == 3
    assert ds[0]["prompt"].startswith("Be brief.\n\nQuestion: ") and ds[0]["prompt"].endswith("Answer:")
    with pytest.raises(ValueError, match="prompt_format"):
        build_prompt("q", "xml")


def test_local_directory_source(tmp_path):
    rows = read_rows("test")[:5]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with gzip.open(tmp_path / "train.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert load_gsm8k("test", source=str(tmp_path))["answer"] == load_gsm8k("test", limit=5)["answer"]
    assert load_gsm8k("train", source=str(tmp_path)).num_rows == 1


@pytest.mark.parametrize(
    "row, message",
    [
        ({"question": "q", "answer": "no final line"}, r"test row 1: answer has no '#### <number>'"),
        ({"question": "q", "answer": "work\n#### lots"}, r"test row 1: final answer is not a number"),
        ({"question": None, "answer": "#### 3"}, r"test row 1: expected string"),
    ],
)
def test_bad_rows_name_split_and_index(tmp_path, row, message):
    good = {"question": "q", "answer": "1 + 1 = 2\n#### 2"}
    (tmp_path / "test.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message):
        load_gsm8k("test", source=str(tmp_path))


def test_bad_sources_and_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'bundled'"):
        load_gsm8k("test", source=str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no test.jsonl"):
        load_gsm8k("test", source=str(tmp_path))
    with pytest.raises(ValueError, match="split"):
        load_gsm8k("validation")
    with pytest.raises(ValueError, match="limit"):
        load_gsm8k("test", limit=0)
    (tmp_path / "test.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        load_gsm8k("test", source=str(tmp_path))


def test_max_solution_steps_keeps_the_easy_problems(tmp_path):
    easy = load_gsm8k("train", max_solution_steps=2)
    assert easy.num_rows == 2734  # of 7,473: 2 distinct intermediate results or fewer
    steps = {row["question"]: len(gold_steps(row["answer"])) for row in read_rows("train")}
    assert max(steps[q] for q in easy["question"]) == 2
    assert sum(n <= 2 for n in steps.values()) == 2734
    # The README's "0-9 distinct calculation results (2 have 0, 431 have 1)".
    counts = Counter(steps.values())
    assert (min(counts), max(counts), counts[0], counts[1]) == (0, 9, 2, 431)
    first = load_gsm8k("train", max_solution_steps=2, limit=3)
    assert first["question"] == easy["question"][:3]  # limit counts the problems kept
    assert load_gsm8k("train", limit=3)["question"] != first["question"]
    with pytest.raises(ValueError, match="0 or more"):
        load_gsm8k("test", max_solution_steps=-1)
    two_steps = {"question": "q", "answer": "2*3 = <<2*3=6>>6. 6+1 = <<6+1=7>>7\n#### 7"}
    (tmp_path / "test.jsonl").write_text(json.dumps(two_steps) + "\n")
    assert load_gsm8k("test", source=str(tmp_path), max_solution_steps=2).num_rows == 1
    with pytest.raises(ValueError, match="keeps none of GSM8K test's problems: raise it"):
        load_gsm8k("test", source=str(tmp_path), max_solution_steps=1)
