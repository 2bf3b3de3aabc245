"""Reward agreement and throughput: trl_gsm8k vs TRL's `accuracy_reward`, on real labelled GSM8K solutions.

Run by hand (not a test):  python benchmarks/rewards.py  [--output benchmarks/rewards.md]
                           python benchmarks/rewards.py --only real --output /tmp/real.md   (seconds: real outputs only)
                           python benchmarks/rewards.py --real-outputs ../shared/real_outputs/heldout.jsonl

- Agreement with the 5,276 GPT-3 solutions of the GSM8K release labelled `is_correct` by its authors.
- Agreement on a set of completions written in the declaration formats real models use (#### N, \\boxed{},
  "the answer is", Answer:, ## Final Answer, <think>), half of them wrong on purpose.
- Agreement on real model outputs (`../shared/real_outputs/dev.jsonl` by default, or any file of its format given
  by `--real-outputs`): raw responses of open models labelled with the one number each commits to (see that
  folder's README.md), per kind of answer marker and per model, with every disagreement of ours listed.
- Throughput of `correctness_reward` and `trl.rewards.accuracy_reward` on the same completions, same process.
- For reference, lm-evaluation-harness's strict/flexible GSM8K extraction (`trl_gsm8k.scoring.lm_eval_extract`).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

import trl
from trl.rewards import accuracy_reward

from trl_gsm8k import answers
from trl_gsm8k.answers import extract_answer, extract_gold
from trl_gsm8k.data import read_rows
from trl_gsm8k.rewards import correctness_reward, correctness_reward_strict
from trl_gsm8k.scoring import lm_eval_correct, lm_eval_extract

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "tests" / "assets" / "example_model_solutions.jsonl.gz"
REAL_OUTPUTS = ROOT.parent / "shared" / "real_outputs" / "dev.jsonl"
TARGET = 0.995  # agreement of ours (flexible) on the scored real outputs
SPEEDUP_TARGET = 10  # ours vs accuracy_reward, on each set
BARE = "bare_number_prompt_declared"
KIND_ORDER = ["answer_tag", "json_answer", "hash", "boxed", "answer_is", "none", BARE]
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def labelled_solutions() -> tuple[list[str], list[str], list[bool]]:
    golds = [r["answer"] for r in read_rows("test")]
    texts, answers_, labels = [], [], []
    with gzip.open(SOLUTIONS, "rt") as f:
        for gold, line in zip(golds, f):
            for value in json.loads(line).values():
                if isinstance(value, dict):
                    texts.append(value["solution"])
                    answers_.append(gold)
                    labels.append(bool(value["is_correct"]))
    return texts, answers_, labels


def format_set() -> tuple[list[str], list[str], list[bool]]:
    """Each test problem's gold written in one of the formats below; every other one carries a wrong answer."""
    templates = [
        "{work}\n#### {a}", "{work}\n####{a}", "{work}\n#### ${a}", "{work}\n#### {a}.00", "{work}\n#### {a} dollars",
        "{work}\nThe answer is {a}.", "{work}\nTherefore, the final answer is $\\boxed{{{a}}}$.",
        "{work}\n\\[\n\\boxed{{{a}}}\n\\]", "{work}\nAnswer: {a}", "{work}\n**Answer:** {a}",
        "{work}\n\n## Final Answer\n\n{a}", "<think>\n{work}\n</think>\n\nThe answer is \\boxed{{{a}}}.",
        "{work}\n#### 7\nWait, I made a mistake. Let me recompute.\n#### {a}", "{work}\nSo the answer is {a} dollars.",
    ]
    texts, answers_, labels = [], [], []
    for i, row in enumerate(read_rows("test")):
        gold = extract_gold(row["answer"])
        value = gold.numerator + (1 if i % 2 else 0)
        work = re.sub(r"<<[^>]*>>", "", row["answer"].rsplit("####", 1)[0]).strip()
        texts.append(templates[i % len(templates)].format(work=work, a=f"{value:,}" if i % 3 == 0 else value))
        answers_.append(row["answer"])
        labels.append(i % 2 == 0)
    return texts, answers_, labels


def gold_number(gold_text: str) -> str:
    """The gold's final number as a bare string (``#### 1,234`` → ``1234``): what TRL's `accuracy_reward` is given."""
    return gold_text.rsplit("####", 1)[-1].strip().replace(",", "")


def lm_eval_agreement(texts: list[str], golds: list[str], labels: list[bool], mode: str) -> float:
    """lm-evaluation-harness's extraction and exact match (as `trl_gsm8k.evaluate` implements it)."""
    hits = (lm_eval_correct(lm_eval_extract(t, mode), g) == lab for t, g, lab in zip(texts, golds, labels))
    return sum(hits) / len(texts)


def agreement(scores: list[float | None], labels: list[bool]) -> float:
    return sum((s == 1.0) == lab for s, lab in zip(scores, labels)) / len(labels)


def clear_caches() -> None:
    """Clear our gold-parsing cache (if the current `answers` module has one), so each timed run parses afresh."""
    cached = getattr(answers, "_gold_from_text", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


def timed(fn, *args, repeats: int = 5) -> tuple[list, float]:
    """Best of ``repeats`` runs (the least disturbed by other work on the machine); gold cache cleared each time."""
    best = float("inf")
    for _ in range(repeats):
        clear_caches()
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return out, best


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (95 % for z = 1.96)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown CPU"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def show_path(path: Path) -> str:
    """The path as the lead would type it from the repository root (``../shared/...``), else absolute."""
    path = path.resolve()
    for base, prefix in ((ROOT, ""), (ROOT.parent, "../")):
        try:
            return prefix + str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def fmt_value(value: Fraction | None) -> str:
    if value is None:
        return "None"
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    return f"{value.numerator}/{value.denominator}" if Fraction(repr(as_float)) != value else repr(as_float)


# --- the first two sets --------------------------------------------------------------------------------------------


def labelled_rows() -> list[dict]:
    rows = []
    for name, (texts, answers_, labels) in {
        "GSM8K release, 5,276 labelled GPT-3 solutions (`A: N`)": labelled_solutions(),
        "Declaration formats, 1,319 completions (half wrong)": format_set(),
    }.items():
        chats = [[{"role": "assistant", "content": t}] for t in texts]
        golds = [gold_number(a) for a in answers_]
        ours, t_ours = timed(correctness_reward, chats, answers_)
        strict, _ = timed(correctness_reward_strict, chats, answers_)
        theirs, t_theirs = timed(accuracy_reward, chats, golds)
        rows.append({
            "set": name, "n": len(texts),
            "ours": agreement(ours, labels), "ours_strict": agreement(strict, labels),
            "trl": agreement(theirs, labels),
            "lm_strict": lm_eval_agreement(texts, golds, labels, "strict"),
            "lm_flex": lm_eval_agreement(texts, golds, labels, "flexible"),
            "rate_ours": len(texts) / t_ours, "rate_trl": len(texts) / t_theirs,
        })
        print({k: v for k, v in rows[-1].items()}, flush=True)
    return rows


def labelled_section(rows: list[dict]) -> list[str]:
    lines = [
        "## GSM8K release solutions and declaration formats",
        "",
        "Agreement = fraction of completions where the reward (1.0 = correct) matches the label.",
        "",
        "| set | n | ours (flexible) | ours (strict) | TRL `accuracy_reward` | lm-eval strict | lm-eval flexible |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['n']:,} | {r['ours']:.2%} | {r['ours_strict']:.2%} | {r['trl']:.2%} | "
            f"{r['lm_strict']:.2%} | {r['lm_flex']:.2%} |"
        )
    lines += [
        "",
        "Notes:",
        "- The labelled GPT-3 solutions end with `A: N`, which our flexible mode reads as a declaration; strict mode",
        "  reads only `#### N` (the training format), so it credits none of them: its agreement equals the share of",
        "  wrong solutions. TRL's `accuracy_reward` parses LaTeX only (boxed first, no anchor-less extraction).",
        "- lm-eval flexible takes the last number in the text; it credits answers that are never declared.",
        "- The format set is built from the test problems' own solutions with the gold (or gold + 1) declared in",
        "  14 formats; see `format_set()` in the script.",
        "",
    ]
    return lines


# --- real model outputs --------------------------------------------------------------------------------------------


def load_real(path: Path) -> list[dict]:
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            missing = {"gold", "response", "model", "kind", "declared", "label"} - set(rec)
            if missing:
                raise ValueError(f"{path}:{n}: record lacks {sorted(missing)}")
            records.append(rec)
    return records


def answer_tag_exact(text: str, gold: str) -> bool:
    """The anchor: the last ``<answer>…</answer>`` content, whitespace-stripped, equals the gold number string."""
    found = _ANSWER_TAG_RE.findall(text)
    return bool(found) and found[-1].strip() == gold


def per_item(reward, chats: list, golds: list[str]) -> list[float | None]:
    """One call per completion: each gets math-verify's whole per-call budget, so the batch budget decides nothing."""
    return [reward([chat], answer=[gold])[0] for chat, gold in zip(chats, golds)]


def real_outputs(path: Path) -> dict:
    records = load_real(path)
    texts = [r["response"] for r in records]
    chats = [[{"role": "assistant", "content": t}] for t in texts]
    gold_texts = [r["gold"] for r in records]
    golds = [gold_number(g) for g in gold_texts]

    clear_caches()
    ours = per_item(correctness_reward, chats, gold_texts)
    strict = per_item(correctness_reward_strict, chats, gold_texts)
    # Throughput: one batch call each, as a trainer makes (ours then under its default math-verify batch budget).
    ours_batch, t_ours = timed(correctness_reward, chats, gold_texts)
    theirs, t_theirs = timed(accuracy_reward, chats, golds)
    last = [float(lm_eval_correct(lm_eval_extract(t, "flexible"), g)) for t, g in zip(texts, golds)]
    tag = [float(answer_tag_exact(t, g)) for t, g in zip(texts, golds)]
    read = [extract_answer(t) for t in texts]
    return {
        "path": path, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "records": records,
        "scores": {"ours": ours, "strict": strict, "trl": theirs, "last": last, "tag": tag},
        "read": read, "batch_differs": sum((a == 1.0) != (b == 1.0) for a, b in zip(ours, ours_batch)),
        "rate_ours": len(texts) / t_ours, "rate_trl": len(texts) / t_theirs,
    }


def escape_tail(text: str, n: int = 160) -> str:
    tail = text[-n:]
    return ("…" if len(text) > n else "") + json.dumps(tail, ensure_ascii=False)[1:-1]


def real_section(res: dict) -> list[str]:
    records, scores = res["records"], res["scores"]
    ambiguous = [i for i, r in enumerate(records) if r.get("ambiguous")]
    bare = [i for i, r in enumerate(records) if r["kind"] == BARE and not r.get("ambiguous")]
    scored = [i for i, r in enumerate(records) if not r.get("ambiguous") and r["kind"] != BARE]
    labels = [bool(r["label"]) for r in records]

    def agree(key: str, idx: list[int]) -> int:
        return sum((scores[key][i] == 1.0) == labels[i] for i in idx)

    def row(name: str, idx: list[int]) -> str:
        n = len(idx)
        k = agree("ours", idx)
        lo, hi = wilson(k, n)
        credits = sum(scores["ours"][i] == 1.0 and not labels[i] for i in idx)
        misses = sum(scores["ours"][i] != 1.0 and labels[i] for i in idx)
        pos = sum(labels[i] for i in idx)
        cells = [f"{agree(key, idx) / n:.1%}" for key in ("strict", "trl", "last", "tag")]
        return (f"| {name} | {n:,} | {pos:,} | **{k / n:.1%}** ({k:,}) | {lo:.1%} – {hi:.1%} | "
                f"{credits} / {misses} | "
                + " | ".join(cells) + " |")

    kinds = Counter(records[i]["kind"] for i in scored)
    kind_names = [k for k in KIND_ORDER if k in kinds] + sorted(set(kinds) - set(KIND_ORDER))
    models = sorted(Counter(records[i]["model"] for i in scored))
    n_ok = agree("ours", scored)
    overall = n_ok / len(scored) if scored else 0.0
    lo, hi = wilson(n_ok, len(scored))
    header = ("| rows | n | label 1 | ours flexible (`correctness_reward`) | Wilson 95 % | "
              "ours wrong: credits / misses | "
              "ours strict | TRL `accuracy_reward` | last number (lm-eval flexible) | `<answer>` exact |")
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    lines = [
        "## Real model outputs",
        "",
        f"File: `{show_path(res['path'])}` (sha256 `{res['sha256'][:16]}`): {len(records):,} raw responses of "
        f"{len(set(r['model'] for r in records))} models, labelled with the one number each commits to (see the "
        "README.md next to it).",
        f"Scored: {len(scored):,} responses = all but the {len(ambiguous)} marked `ambiguous` (careful graders differ) "
        f"and the {len(bare)} of kind `{BARE}` (their declaration was in the prompt; reported below).",
        "Agreement = the reward (1.0 / 0.0) equals `label`.",
        "",
        f"**Target: ≥ {TARGET:.1%} agreement of ours (flexible) on the scored cases: "
        f"{'met' if overall >= TARGET else 'MISSED'}** ({overall:.1%}, {n_ok:,} of {len(scored):,}; "
        f"Wilson 95 % {lo:.1%} – {hi:.1%}).",
        "",
        header, rule,
        row("**all scored**", scored),
    ]
    lines += [row(f"kind `{k}`", [i for i in scored if records[i]["kind"] == k]) for k in kind_names]
    lines += [row(m, [i for i in scored if records[i]["model"] == m]) for m in models]
    lines += [
        "",
        "Columns:",
        "- ours flexible / strict: `trl_gsm8k.rewards.correctness_reward` / `correctness_reward_strict`, given the "
        "`gold` text, called once per response, so that math-verify's budget per call (`answers.MATH_VERIFY_BATCH_S`) "
        "never binds and only its per-input limit applies (the timed batch call below gave "
        f"{res['batch_differs']} different verdict(s)). "
        "*credits / misses*: ours 1 where the label is 0 / ours 0 where the label is 1.",
        "- TRL `accuracy_reward`: called as TRL calls it, `accuracy_reward(completions=[[{\"role\": \"assistant\", "
        "\"content\": response}]], solution=[gold])`, with the gold's final number as a bare string (`#### 1,234` → "
        "`\"1234\"`), which math-verify parses as a number.",
        "- last number: lm-evaluation-harness's flexible GSM8K filter (`trl_gsm8k.scoring.lm_eval_extract(text, "
        "\"flexible\")`, the last number anywhere) scored by its exact match (`lm_eval_correct`: drop `,` `$` and a "
        "trailing `.`, so `18.00` ≠ `18`).",
        "- `<answer>` exact: the last `<answer>…</answer>` content (any case), whitespace-stripped, equals the gold "
        "number string; 0 when there is no closed tag. An anchor, not a grader.",
        "",
    ]

    # Every disagreement of ours (flexible), for finding the forms it fails on.
    wrong = [i for i in scored if (scores["ours"][i] == 1.0) != labels[i]]
    wrong.sort(key=lambda i: (kind_names.index(records[i]["kind"]), records[i]["model"], labels[i]))
    lines += [
        f"<details><summary>All {len(wrong)} disagreements of ours (flexible) on the scored cases: kind, model, "
        "label, declared, what ours read (<code>extract_answer(response)</code>), the response's last 160 characters "
        "(JSON-escaped)</summary>",
        "",
    ]
    by_kind = Counter(records[i]["kind"] for i in wrong)
    lines += listing(res, wrong)
    if wrong:
        lines += ["Disagreements by kind: " + ", ".join(f"`{k}` {by_kind[k]}" for k in kind_names if by_kind[k]) + ".",
                  ""]

    # The responses left out.
    def credited(key: str, idx: list[int]) -> int:
        return sum(scores[key][i] == 1.0 for i in idx)

    lines += [
        "Left out of the score (credited = reward 1.0; all of these have label 0 by the README's rule):",
        "",
        "| responses | n | first number = gold* | ours flexible credits | ours strict | TRL `accuracy_reward` | "
        "last number | `<answer>` exact |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, idx in ((f"kind `{BARE}`", bare), ("`ambiguous`", ambiguous)):
        if not idx:
            continue
        cells = " | ".join(str(credited(k, idx)) for k in ("ours", "strict", "trl", "last", "tag"))
        first = sum(_opens_with_gold(records[i]) for i in idx) if name.endswith(f"`{BARE}`") else "—"
        lines.append(f"| {name} | {len(idx)} | {first} | {cells} |")
    lines += [
        "",
        f"\\* responses of kind `{BARE}` whose first number equals the gold's: the answer they gave after the "
        "prompt's `Answer:` was right, but that declaration was in the prompt, which a reward function never sees; "
        "a response-only grader should credit none of them.",
        "",
    ]
    for name, idx in ((f"`{BARE}`", bare), ("`ambiguous`", ambiguous)):
        credited_idx = [i for i in idx if scores["ours"][i] == 1.0]
        if credited_idx:
            lines += [f"<details><summary>The {len(credited_idx)} {name} responses ours (flexible) credits</summary>",
                      "", *listing(res, credited_idx)]
    return lines


def listing(res: dict, idx: list[int]) -> list[str]:
    """One line per response (kind, model, label, declared, what ours read, the escaped tail), closing a details."""
    if not idx:
        return ["(none)", "", "</details>", ""]
    lines = ["```text"]
    for i in idx:
        r = res["records"][i]
        verdict = "ours credits" if res["scores"]["ours"][i] == 1.0 else "ours misses"
        lines.append(f"[{r['kind']}] {r['model']} | label {r['label']} ({verdict}) | declared {r['declared']} | "
                     f"ours read {fmt_value(res['read'][i])} | {escape_tail(r['response'])}")
    return lines + ["```", "", "</details>", ""]


def _opens_with_gold(record: dict) -> bool:
    m = re.search(r"-?[0-9][0-9,]*(?:\.[0-9]+)?", record["response"])
    if not m:
        return False
    try:
        return Fraction(m.group(0).replace(",", "")) == extract_gold(record["gold"])
    except (ValueError, ZeroDivisionError):
        return False


# --- the report ----------------------------------------------------------------------------------------------------


def throughput_section(rows: list[dict], real: dict | None) -> list[str]:
    table = [(r["set"], r["rate_ours"], r["rate_trl"]) for r in rows]
    if real is not None:
        name = f"Real model outputs, {len(real['records']):,} responses (`{show_path(real['path'])}`, all kinds)"
        table.append((name,
                      real["rate_ours"], real["rate_trl"]))
    lines = [
        "## Throughput",
        "",
        "Same completions, same process, best of 5 runs each (completions scored per second; one batch call per run,",
        "as a trainer makes; our gold-parsing cache is cleared before each run):",
        "",
        "| set | `correctness_reward` | TRL `accuracy_reward` | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, ours, theirs in table:
        lines.append(f"| {name} | {ours:,.0f}/s | {theirs:,.0f}/s | {ours / theirs:.0f}× |")
    slow = [name for name, ours, theirs in table if ours / theirs < SPEEDUP_TARGET]
    lines += [
        "",
        f"**Target: ≥ {SPEEDUP_TARGET}× `accuracy_reward` on each set: "
        + ("met**." if not slow else f"MISSED** on {len(slow)} set(s): " + "; ".join(slow) + "."),
        "",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "rewards.md"))
    parser.add_argument("--real-outputs", type=Path, default=REAL_OUTPUTS,
                        help="labelled real model outputs, JSONL in the format of ../shared/real_outputs/dev.jsonl")
    parser.add_argument("--only", choices=["real", "labelled"],
                        help="run one part: the real model outputs, or the two labelled sets (default: both)")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    load = os.getloadavg()

    rows = labelled_rows() if args.only != "real" else []
    real = None
    if args.only != "labelled":
        start = time.perf_counter()
        real = real_outputs(args.real_outputs)
        print(f"real outputs: {time.perf_counter() - start:.1f} s", flush=True)

    lines = [
        "# Reward benchmark: trl_gsm8k vs TRL's `accuracy_reward`",
        "",
        f"Command: `{command}` · {time.strftime('%Y-%m-%d %H:%M %Z')} · machine: {cpu_model()}, {os.cpu_count()} CPU "
        f"cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min, at start), "
        f"{platform.platform()}, Python {platform.python_version()}, trl {trl.__version__}",
        "",
    ]
    if real is not None:
        lines += real_section(real)
    if rows:
        lines += labelled_section(rows)
    lines += throughput_section(rows, real)
    Path(args.output).write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
