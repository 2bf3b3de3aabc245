r"""Evaluate a model on GSM8K: ``python -m trl_gsm8k.evaluate --model MODEL [--limit N] [--num-samples K]``.

``--model`` is a Hub id, a local model directory, a training output directory (a LoRA adapter directory is applied
to the base named in its ``adapter_config.json``; a run directory without a final model uses its latest
``checkpoint-*``), or ``smollm2-135m-instruct`` (the offline model, see :mod:`trl_gsm8k.models`).

Reported (``eval.json``: summary + settings; ``eval.jsonl`` beside it: one line per item):

- pass@1 **strict** (only ``#### N`` counts) and **flexible** (any declared answer, :mod:`trl_gsm8k.answers`);
  with ``--num-samples K > 1`` (sampling) also maj@K and pass@K (unbiased estimator, Chen et al. 2021).
- the same pass@1 with **lm-evaluation-harness's own extraction**, for comparison with published numbers: its
  strict ``#### N`` and its flexible *last number anywhere* (which credits an answer that was never declared),
  scored as lm-eval does (string equality after its normalisation; the rules: :mod:`trl_gsm8k.scoring`).
  ``--prompt lm-eval-fewshot`` uses the plain-text format of lm-eval's ``gsm8k`` task (``Question: ...\nAnswer:``
  blocks ending ``#### N``, no chat template, stop at ``Question:``). Its exemplars are the first
  ``--num-fewshot`` (default 8) *train* rows with calculator annotations stripped. lm-eval's ``gsm8k`` task draws
  5 seeded-random train rows (annotations kept) and its 8-shot ``gsm8k_cot`` uses 8 fixed exemplars in another
  format (``Q: ... A: ... The answer is N.``): compare with ``--num-fewshot 5``; the numbers are close, not equal.
- declare rate (completions declaring any answer), truncation rate (no EOS within ``--max-new-tokens``), mean
  completion length in tokens, generated tokens/s and wall time.

Reasoning models (DeepSeek-R1-Distill and the like) think inside ``<think>`` for hundreds to thousands of tokens
and declare nothing until ``</think>`` closes: evaluate them with ``--max-new-tokens 2048`` to ``4096``, or their
score measures the budget, not the model. A warning is printed when more than 10% of completions are cut.

Resuming: items are appended to the JSONL as they finish. Rerunning the same command skips finished items (also
with a larger ``--limit``); a JSONL written with other settings is refused (``--overwrite`` starts afresh).

``--backend vllm`` generates with vLLM when it is installed (GPU machines); CI has neither, so the Transformers
backend is the tested one (both in :mod:`trl_gsm8k.generation`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from .answers import extract_gold, gold_steps, strip_annotations
from .data import BUNDLED, read_rows
from .generation import EvalError, TransformersGenerator, VLLMGenerator, _first_line, context_length, \
    generation_device, load_tokenizer, resolve_dtype, resolve_model
from .scoring import score_item, summarize

logger = logging.getLogger("trl_gsm8k.evaluate")

TRUNCATION_WARN_FRACTION = 0.10
FEWSHOT_N = 8  # as lm-eval's `gsm8k_cot` (8 shots); its `gsm8k` task, whose format this is, uses 5
FEWSHOT_STOP = "Question:"  # lm-eval's `until` for gsm8k; the model would go on to write the next question


# --- prompts -----------------------------------------------------------------------------------------------------


def fewshot_prefix(num_fewshot: int = FEWSHOT_N, source: str = BUNDLED) -> str:
    """lm-eval's gsm8k format from the first train rows: ``Question: ...\\nAnswer: ... #### N`` blocks.

    >>> print(fewshot_prefix()[:59])
    Question: Natalia sold clips to 48 of her friends in April,
    """
    blocks = []
    for row in read_rows("train", source)[:num_fewshot]:
        work, final = row["answer"].rsplit("####", 1)
        blocks.append(f"Question: {row['question']}\nAnswer: {strip_annotations(work).strip()}\n#### {final.strip()}")
    return "\n\n".join(blocks) + "\n\n"


def build_prompts(rows: Sequence[dict], prompt: str, tokenizer, source: str = BUNDLED,
                  num_fewshot: int = FEWSHOT_N, system_prompt: str | None = None) -> list[str]:
    """The text each question is generated from: the training chat prompt through the chat template, or 8-shot.

    ``system_prompt`` replaces the default instruction of the training prompt (as a recipe's ``system_prompt`` does).
    """
    from .data import SYSTEM_PROMPT, build_prompt

    system_prompt = system_prompt or SYSTEM_PROMPT

    if prompt == "lm-eval-fewshot":
        prefix = fewshot_prefix(num_fewshot, source)
        return [f"{prefix}Question: {row['question']}\nAnswer:" for row in rows]
    if getattr(tokenizer, "chat_template", None) is None:
        logger.warning("the tokenizer has no chat template: using the plain-text training prompt")
        return [build_prompt(row["question"], "plain", system_prompt) for row in rows]
    return [
        tokenizer.apply_chat_template(build_prompt(row["question"], "chat", system_prompt), tokenize=False,
                                      add_generation_prompt=True)
        for row in rows
    ]


# --- the run -----------------------------------------------------------------------------------------------------

DEFAULT_MAX_NEW_TOKENS = 256
"""The completion budget without a recipe: the README's baseline (benchmarks/eval.md) was generated with it."""
DEFAULT_BATCH_SIZE = 64
"""Questions per generate call: of 16, 32 and 64, the fastest on 2 CPU cores (SmolLM2-135M, 200 problems, 256 tokens:
733 s, 574 s, 470 s; benchmarks/eval.md), the bigger matrix products outweighing the steps a batch decodes for rows
already finished. Its KV cache grows with it: lower it when memory is short (greedy completions do not change)."""
SETTINGS_KEYS = ("model", "split", "prompt", "data_source", "num_samples", "temperature", "max_new_tokens", "seed",
                 "backend", "dtype", "num_fewshot", "system_prompt", "max_solution_steps")
"""What must match for a JSONL to be resumed (--limit and --batch-size may change)."""


def settings_of(args: argparse.Namespace) -> dict:
    settings = {key: getattr(args, key) for key in SETTINGS_KEYS}
    if args.prompt != "lm-eval-fewshot":
        del settings["num_fewshot"]  # no meaning for the chat prompt
    if args.system_prompt is None or args.prompt == "lm-eval-fewshot":
        del settings["system_prompt"]  # left out at its default: JSONL files written without it still resume
    if args.max_solution_steps is None:
        del settings["max_solution_steps"]  # left out at its default: JSONL files written without it still resume
    return settings


def settings_id(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_finished(jsonl: Path, expected_id: str) -> dict[int, dict]:
    """Finished items of an earlier run, by index; drops a torn last line; refuses other settings."""
    finished: dict[int, dict] = {}
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                break  # the write an interruption cut short
            raise EvalError(f"{jsonl}, line {n}: not valid JSON; delete it or pass --overwrite") from None
        if record.get("settings_id") != expected_id:
            raise EvalError(
                f"{jsonl} was written with other settings ({', '.join(SETTINGS_KEYS)} must match to "
                "resume): use another --output, or --overwrite to start afresh")
        finished[record["index"]] = record
    # Rewrite without a torn line so that appending continues a valid file.
    jsonl.write_text("".join(json.dumps(finished[i]) + "\n" for i in sorted(finished)), encoding="utf-8")
    return finished


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trl_gsm8k.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="Hub id, model dir, LoRA adapter / training output dir, or smollm2-135m-instruct")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--limit", type=int, help="evaluate the first N items only")
    parser.add_argument("--max-solution-steps", type=int,
                        help="only the items whose gold solution has at most N distinct calculation results "
                        "(as training's max_solution_steps; test: 71 items of 1 step, 456 of <= 2)")
    parser.add_argument("--num-samples", type=int, default=1, help="K samples per question (maj@K, pass@K)")
    parser.add_argument("--temperature", type=float,
                        help="sampling temperature (default: greedy when K=1, 1.0 when K>1; 0 means greedy)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"questions per generate call (default {DEFAULT_BATCH_SIZE}: the fastest on 2 CPU cores "
                        "of those timed in benchmarks/eval.md; lower it when memory is short)")
    parser.add_argument("--max-new-tokens", type=int,
                        help=f"completion budget (default: the --recipe's max_completion_length, else "
                        f"{DEFAULT_MAX_NEW_TOKENS}, the README's baseline; reasoning models: 2048-4096)")
    parser.add_argument("--prompt", choices=("train", "lm-eval-fewshot"), default="train",
                        help="train: the training chat prompt (data.py); lm-eval-fewshot: 8-shot plain text")
    parser.add_argument("--system-prompt", help="replace the training prompt's instruction (default: data.py's)")
    parser.add_argument("--recipe", help="evaluate as this training recipe trains: its system_prompt and, unless "
                        "--max-new-tokens is given, its max_completion_length")
    parser.add_argument("--num-fewshot", type=int, default=FEWSHOT_N,
                        help=f"exemplars for lm-eval-fewshot (default {FEWSHOT_N}; lm-eval's gsm8k task uses 5)")
    parser.add_argument("--output", default="eval.json", help="summary JSON; items go to the same stem .jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                        help="auto: bfloat16 on a GPU and on a CPU with native bf16 (AMX-BF16, AVX512-BF16), "
                        "float32 on other CPUs")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--threads", type=int,
                        help="torch CPU threads (on a busy shared CPU, 1 can be 10x faster than oversubscribing)")
    parser.add_argument("--data-source", default=BUNDLED, help="GSM8K source, as in data.read_rows")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="require an existing JSONL to continue from")
    group.add_argument("--overwrite", action="store_true", help="discard an existing JSONL")
    args = parser.parse_args(argv)
    if args.recipe:
        if args.system_prompt is not None:
            parser.error("give --system-prompt or --recipe, not both")
        args.system_prompt, budget = _recipe_prompt_and_budget(parser, args.recipe)
        if args.max_new_tokens is None:
            args.max_new_tokens = budget
    if args.max_new_tokens is None:
        args.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    for name in ("limit", "num_samples", "batch_size", "max_new_tokens", "threads", "num_fewshot", "max_solution_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.temperature is not None and args.temperature < 0:
        parser.error("--temperature must be >= 0")
    if args.num_samples > 1 and args.temperature == 0:
        parser.error("--num-samples > 1 needs sampling: a --temperature above 0")
    if args.temperature is None and args.num_samples > 1:
        args.temperature = 1.0
    if args.temperature == 0:
        args.temperature = None
    return args


def _recipe_prompt_and_budget(parser: argparse.ArgumentParser, recipe: str) -> tuple[str | None, int | None]:
    """The recipe's ``system_prompt`` and ``max_completion_length``, read as training reads them, so a recipe training
    would refuse is refused here."""
    from .errors import LaunchError
    from .config import read_recipe  # imports TRL: only when --recipe is given

    try:
        parsed = read_recipe(recipe)
        prompt = parsed.script_args.system_prompt
    except (LaunchError, OSError) as exc:  # OSError: a directory or unreadable file (a missing one is a LaunchError)
        parser.error(f"--recipe {recipe}: {_first_line(exc)}")
    # The recipe's value becomes the dataclass default as written: a YAML list stays a list.
    if prompt is not None and not isinstance(prompt, str):
        parser.error(f"--recipe {recipe}: system_prompt must be text, got {type(prompt).__name__}")
    return prompt, getattr(parsed.training_args, "max_completion_length", None)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        run(args)
    except (EvalError, FileNotFoundError) as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> dict:
    """Evaluate as ``args`` (from :func:`parse_args`) say; writes eval.json and eval.jsonl, returns the summary."""
    started = time.perf_counter()
    output = Path(args.output)
    jsonl = output.with_suffix(".jsonl")
    if args.backend == "transformers":  # the settings record the dtype generated with, not "auto"
        args.dtype = resolve_dtype(args.dtype, generation_device(args))
    settings = settings_of(args)
    sid = settings_id(settings)

    try:
        rows = read_rows(args.split, args.data_source)
        if args.max_solution_steps is not None:
            rows = [row for row in rows if len(gold_steps(row["answer"].rsplit("####", 1)[0])) <= args.max_solution_steps]
        rows = rows[:args.limit]
    except (ValueError, FileNotFoundError) as exc:
        raise EvalError(_first_line(exc)) from None
    if not rows:
        raise EvalError(f"the {args.split} split of {args.data_source} holds no items")
    if args.resume and not jsonl.is_file():
        raise EvalError(f"--resume: {jsonl} does not exist")
    finished = {} if args.overwrite or not jsonl.is_file() else read_finished(jsonl, sid)
    if args.overwrite and jsonl.exists():
        jsonl.unlink()
    todo = [i for i in range(len(rows)) if i not in finished]
    if finished:
        logger.info("resuming from %s: %d of %d items already done", jsonl, len(rows) - len(todo), len(rows))

    if todo:
        import torch

        threads = torch.get_num_threads()
        try:
            if args.threads:
                torch.set_num_threads(args.threads)
            _generate_missing(args, rows, todo, jsonl, sid)
        finally:
            torch.set_num_threads(threads)  # main() may run inside a longer process (tests, notebooks)
        finished = read_finished(jsonl, sid)
    items = [finished[i] for i in range(len(rows))]
    summary = summarize(items)
    summary["wall_seconds"] = time.perf_counter() - started  # this invocation only (generation_seconds: all)
    if summary["truncated_rate"] > TRUNCATION_WARN_FRACTION:
        logger.warning("%.0f%% of completions were cut by --max-new-tokens %d: raise it (reasoning models need "
                       "2048-4096) or the scores understate the model", 100 * summary["truncated_rate"],
                       args.max_new_tokens)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"summary": summary, "settings": {**settings, "limit": args.limit,
                                  "batch_size": args.batch_size, "items_file": jsonl.name}}, indent=2) + "\n")
    _print_summary(summary, output)
    return summary


def _generate_missing(args: argparse.Namespace, rows: list[dict], todo: list[int], jsonl: Path, sid: str) -> None:
    from tqdm.auto import tqdm

    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EvalError("--backend vllm needs vLLM: `pip install vllm` (GPU machines only)")
    model = resolve_model(args.model)
    tokenizer = load_tokenizer(model)
    stop = FEWSHOT_STOP if args.prompt == "lm-eval-fewshot" else None
    prompts = build_prompts([rows[i] for i in todo], args.prompt, tokenizer, args.data_source, args.num_fewshot,
                            args.system_prompt)
    longest = max(len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"])
    limit = context_length(model.path)
    if limit is not None and longest + args.max_new_tokens > limit:
        raise EvalError(f"the longest prompt ({longest} tokens) + --max-new-tokens {args.max_new_tokens} "
                         f"exceeds the model's context of {limit} tokens")
    backend = VLLMGenerator if args.backend == "vllm" else TransformersGenerator
    generate = backend(model, tokenizer, args, stop)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    blocks = _blocks(todo, args.batch_size)
    # Questions done, moving a fraction of the batch per generated token (a batch of 32 x 256 tokens takes about a
    # minute on 2 CPU cores): the bar and its time estimate move from the first seconds, not once per batch. The
    # estimate is an upper bound where completions end before the token budget.
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} questions [{elapsed}<{remaining}{postfix}]"
    with open(jsonl, "a", encoding="utf-8") as f, tqdm(total=len(rows), initial=len(rows) - len(todo),
                                                       desc="GSM8K", bar_format=bar_format) as bar:
        position = {index: n for n, index in enumerate(todo)}
        for number, batch in enumerate(blocks, start=1):
            t0 = time.perf_counter()
            done, tokens = bar.n, 0
            per_token = len(batch) / args.max_new_tokens

            def on_token() -> None:
                nonlocal tokens
                tokens += 1
                if tokens < args.max_new_tokens:
                    bar.update(per_token)
                bar.set_postfix_str(f"batch {number}/{len(blocks)}, token {tokens}/{args.max_new_tokens}",
                                    refresh=False)

            # Seeded by the block's place in the split, so a resumed run samples what an uninterrupted one would.
            results = generate([prompts[position[i]] for i in batch],
                               seed=args.seed + batch[0] // args.batch_size, on_token=on_token)
            seconds = (time.perf_counter() - t0) / len(batch)
            for index, samples in zip(batch, results):
                row = rows[index]
                gold = str(extract_gold(row["answer"]))
                record = score_item(index, row["question"], gold, [s.text for s in samples],
                                    [s.num_tokens for s in samples], [s.truncated for s in samples], seconds, sid)
                f.write(json.dumps(record) + "\n")
            f.flush()
            bar.update(done + len(batch) - bar.n)


def _blocks(indices: list[int], size: int) -> list[list[int]]:
    """Group indices by ``index // size``: batches stay aligned to the split when some items are already done.

    >>> _blocks([0, 1, 2, 5, 6, 9], 4)
    [[0, 1, 2], [5, 6], [9]]
    """
    blocks: dict[int, list[int]] = {}
    for i in indices:
        blocks.setdefault(i // size, []).append(i)
    return list(blocks.values())


def _print_summary(summary: dict, output: Path) -> None:
    width = max(len(key) for key in summary)
    for key, value in summary.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    print(f"wrote {output} and {output.with_suffix('.jsonl')}")


if __name__ == "__main__":
    sys.exit(main())
