"""GSM8K loading and the prompt, defined once for training and evaluation.

The original release (train 7,473 / test 1,319 rows, MIT, Cobbe et al. 2021) ships inside the package, so training,
evaluation and tests work offline. A local directory of the release files or the Hub dataset are one argument away.

``python -m trl_gsm8k.data export DIR`` writes a split as a dataset folder that plain TRL loads
(``trl grpo --dataset_name DIR``): see :func:`export_gsm8k`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Literal

from datasets import Dataset

from .answers import extract_gold, gold_steps, strip_annotations

SPLITS = ("train", "test")
HUB_DATASET = "openai/gsm8k"
BUNDLED = "bundled"

SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, showing each calculation. "
    "End your response with a last line of the form '#### <number>', where <number> is the final answer "
    "as a plain number with no units."
)
"""The instruction every prompt carries, in training and in evaluation."""

PromptFormat = Literal["chat", "plain"]


def build_prompt(question: str, prompt_format: PromptFormat = "chat", system_prompt: str = SYSTEM_PROMPT):
    """The prompt for one question: chat messages (system + user), or one plain-text string.

    >>> build_prompt("What is 2 + 3?")[1]
    {'role': 'user', 'content': 'What is 2 + 3?'}
    >>> print(build_prompt("What is 2 + 3?", "plain").splitlines()[-1])
    Answer:
    """
    if prompt_format == "chat":
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    if prompt_format == "plain":
        return f"{system_prompt}\n\nQuestion: {question}\nAnswer:"
    raise ValueError(f"prompt_format must be 'chat' or 'plain', got {prompt_format!r}")


def read_rows(split: str = "train", source: str = BUNDLED) -> list[dict]:
    """The raw ``{"question", "answer"}`` rows of one split.

    Args:
        split: ``"train"`` or ``"test"``.
        source: ``"bundled"`` (the copy shipped in this package), a local directory holding the release's
            ``train.jsonl``/``test.jsonl`` (optionally ``.gz``), or ``"openai/gsm8k"`` (the Hub, through ``datasets``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if source == BUNDLED:
        path = resources.files("trl_gsm8k") / "resources" / "gsm8k" / f"{split}.jsonl.gz"
        with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            return _read_jsonl(f, f"bundled {split}")
    if source == HUB_DATASET:
        from datasets import load_dataset

        return [dict(r) for r in load_dataset(HUB_DATASET, "main", split=split)]
    directory = Path(os.path.expanduser(source))
    if not directory.is_dir():
        raise FileNotFoundError(
            f"GSM8K source {source!r} is neither 'bundled', {HUB_DATASET!r}, nor an existing directory "
            f"holding {split}.jsonl (the grade-school-math release files)."
        )
    for name, opener in ((f"{split}.jsonl", open), (f"{split}.jsonl.gz", gzip.open)):
        if (directory / name).is_file():
            with opener(directory / name, "rt", encoding="utf-8") as f:
                return _read_jsonl(f, str(directory / name))
    raise FileNotFoundError(f"{directory} has no {split}.jsonl or {split}.jsonl.gz")


def load_gsm8k(
    split: str = "train",
    source: str = BUNDLED,
    prompt_format: PromptFormat = "chat",
    system_prompt: str = SYSTEM_PROMPT,
    limit: int | None = None,
    max_solution_steps: int | None = None,
) -> Dataset:
    """GSM8K as a `datasets.Dataset` ready for `GRPOTrainer` and the evaluator.

    Columns: ``prompt`` (chat messages or text, see :func:`build_prompt`), ``answer`` (the gold final number, as a
    string: ``"1234"``), ``question``, and ``solution`` (the worked solution without calculator annotations).

    ``max_solution_steps`` keeps only the problems whose gold solution takes at most that many distinct calculation
    results (:func:`trl_gsm8k.answers.gold_steps`; GSM8K's train solutions take 0-9): an easy-first curriculum for a model that
    solves too few problems to get a reward signal. ``limit`` then counts the problems kept.

    Raises:
        ValueError: naming split and row index, for a row without ``####`` or whose gold is not a number; or when
            ``max_solution_steps`` keeps no problem.

    >>> ds = load_gsm8k("test", limit=2)
    >>> ds.num_rows, ds[0]["answer"], ds[0]["prompt"][0]["role"]
    (2, '18', 'system')
    >>> load_gsm8k("train", max_solution_steps=2).num_rows
    2734
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    if max_solution_steps is not None and max_solution_steps < 0:
        raise ValueError(f"max_solution_steps must be 0 or more calculation steps, got {max_solution_steps}")
    records = {"prompt": [], "answer": [], "question": [], "solution": []}
    for i, row in enumerate(read_rows(split, source)):
        if limit is not None and len(records["answer"]) == limit:
            break
        question, answer = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            raise ValueError(f"GSM8K {split} row {i}: expected string 'question' and 'answer' fields, got {row!r:.200}")
        if "####" not in answer:
            raise ValueError(f"GSM8K {split} row {i}: answer has no '#### <number>' line: {answer[-120:]!r}")
        gold = extract_gold(answer)
        if gold is None:
            raise ValueError(f"GSM8K {split} row {i}: final answer is not a number: {answer.rsplit('####', 1)[1]!r}")
        work = answer.rsplit("####", 1)[0]
        if max_solution_steps is not None and len(gold_steps(work)) > max_solution_steps:
            continue
        records["prompt"].append(build_prompt(question, prompt_format, system_prompt))
        records["answer"].append(str(gold.numerator) if gold.denominator == 1 else str(float(gold)))
        records["question"].append(question)
        records["solution"].append(strip_annotations(work).strip())
    if max_solution_steps is not None and not records["answer"]:
        raise ValueError(f"max_solution_steps={max_solution_steps} keeps none of GSM8K {split}'s problems: raise it")
    return Dataset.from_dict(records)


def _read_jsonl(lines, where: str) -> list[dict]:
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}, line {n}: not valid JSON ({exc.msg})") from None
    return rows


EXPORT_COLUMNS = ("prompt", "answer")
"""What an exported row holds. Not ``solution``: TRL's own rewards (``accuracy_reward``) read ``solution`` as the gold,
and ours is the worked solution text, so a job mixing them would score against the wrong column."""


def export_gsm8k(
    directory: str | os.PathLike,
    split: str = "train",
    limit: int | None = None,
    prompt_format: PromptFormat = "chat",
    source: str = BUNDLED,
    system_prompt: str = SYSTEM_PROMPT,
) -> Path:
    """Write one split as ``DIR/<split>.jsonl`` (columns ``prompt``, ``answer``), a folder `datasets.load_dataset`
    and ``trl grpo --dataset_name DIR`` load; return the file's path.

    The prompt is :func:`build_prompt`'s, the one training uses. ``chat`` (the default, as in training) suits a model
    with a chat template: TRL applies it to the messages. ``plain`` is one text prompt, for a base model without one.

    Raises:
        ValueError: as :func:`load_gsm8k` does (split, limit, a bad row).
        OSError: when ``directory`` cannot be created or written (e.g. it is a file).

    >>> import tempfile
    >>> path = export_gsm8k(tempfile.mkdtemp(), "test", limit=2)
    >>> path.name, json.loads(path.read_text().splitlines()[0])["answer"]
    ('test.jsonl', '18')
    """
    dataset = load_gsm8k(split, source, prompt_format, system_prompt, limit=limit)
    directory = Path(os.path.expanduser(directory))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{split}.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for row in dataset.select_columns(list(EXPORT_COLUMNS)):
            # ASCII escapes: a raw U+2028 in a question would end the line for readers that split on Unicode breaks.
            f.write(json.dumps(row) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trl_gsm8k.data",
        description="The bundled GSM8K as a dataset folder for plain TRL: `trl grpo --dataset_name DIR`.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="write DIR/<split>.jsonl with the columns prompt and answer")
    export.add_argument("directory", metavar="DIR", help="the folder to write (created if missing)")
    export.add_argument("--split", default="train", choices=SPLITS)
    export.add_argument("--limit", type=int, default=None, help="the first N problems only")
    export.add_argument("--prompt-format", default="chat", choices=("chat", "plain"),
                        help="chat messages (default, as training uses; TRL applies the model's chat template) or one "
                             "plain-text prompt (a base model without a chat template)")
    export.add_argument("--source", default=BUNDLED,
                        help=f"'{BUNDLED}' (default), a directory of the release's jsonl files, or {HUB_DATASET!r}")
    args = parser.parse_args(argv)
    try:
        path = export_gsm8k(args.directory, args.split, args.limit, args.prompt_format, args.source)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = sum(1 for _ in open(path, encoding="utf-8"))
    print(f"Wrote {rows} {args.split} problems ({args.prompt_format} prompts) to {path}: "
          f"trl grpo --dataset_name {path.parent} loads it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
