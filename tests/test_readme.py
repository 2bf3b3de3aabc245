"""Every command and snippet of README.md and the docs/ pages it links runs as printed.

The blocks are read from the files, so an edited command is what runs. A block the test does not know fails it: it
must be a doctest, Python, a shell block of known commands, or marked where it stands (``<!-- not run: REASON -->``
for `make` and what needs a GPU; ``<!-- output: ... -->`` for a transcript). The additions the README states ("Try any
command quickly", and the sentence after it) are the only changes: a step or two, and a tiny random model standing in
for smollm2-135m-instruct through ``TRL_GSM8K_CACHE``.
"""

from __future__ import annotations

import doctest
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import build_tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The additions the README documents, by kind of command (its "Try any command quickly" and the sentence after).
TRAIN_ADD = " --max_steps 1 --max_completion_length 8"
ADDITIONS = [  # (pattern of the command, what is appended)
    (r"^accelerate launch .*-m trl_gsm8k\.train\b", TRAIN_ADD),
    (r"^python -m trl_gsm8k\.train\b", TRAIN_ADD),
    (r"^trl grpo\b", TRAIN_ADD),
    (r"^python -m trl_gsm8k\.evaluate\b", " --limit 2"),
    (r"^python -m trl_gsm8k\.probe\b", " --num-prompts 2"),
    (r"^python -m trl_gsm8k\.(memory|plot|export|data export)\b", ""),
    (r"^MODEL=\$\(python -c \"from trl_gsm8k\.models import resolve_model_path; .*\"\)$", ""),
]
PY_ADDITIONS = {r"\bmax_steps=\d+": "max_steps=1", r"\bmax_completion_length=\d+": "max_completion_length=8"}
EXEMPT = {"make": re.compile(r"make (test|demo)\b"), "needs a GPU": None}


class Block(NamedTuple):
    file: Path
    line: int
    lang: str
    text: str
    marker: str | None  # the HTML comment right above the fence, if any

    def __str__(self):
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def pages() -> list[Path]:
    """README.md and the docs/*.md pages it links, in that order."""
    linked = re.findall(r"\]\((docs/[\w-]+\.md)(?:#[\w-]*)?\)", README.read_text())
    return [README, *(ROOT / p for p in dict.fromkeys(linked))]


def blocks(path: Path) -> list[Block]:
    found, lines, i = [], path.read_text().split("\n"), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence:
            end = lines.index("```", i + 1)
            above = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = re.fullmatch(r"<!-- (.*) -->", above.strip())
            found.append(Block(path, i + 1, fence.group(1), "\n".join(lines[i + 1:end]),
                               marker.group(1) if marker else None))
            i = end
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in blocks(p)]


def commands(text: str) -> list[str]:
    """A shell block's commands: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", "", text)
    lines = (line for line in joined.split("\n") if not line.lstrip().startswith("#"))
    return [c for c in (re.sub(r"\s+#\s.*$", "", line).strip() for line in lines) if c]


def with_additions(command: str) -> str:
    # One command a line: a known command could otherwise carry an unknown one after `&&`, `;` or `|`.
    unquoted = re.sub(r"\"[^\"]*\"|'[^']*'", "", command)
    assert not re.search(r"[;&|`<>]", unquoted), f"one command a line, no shell operators: {command}"
    for pattern, addition in ADDITIONS:
        if re.search(pattern, command):
            return command + addition
    raise AssertionError(f"unknown command, neither run by a test nor marked <!-- not run: ... -->: {command}")


def kind(block: Block) -> str:
    if block.marker and block.marker.startswith("output"):
        return "output"
    if block.marker and block.marker.startswith("not run:"):
        return "exempt"
    if block.lang == "python":
        return "doctest" if block.text.lstrip().startswith(">>>") else "python"
    if block.lang == "bash":
        return "trl_cli" if any(c.startswith("trl grpo") for c in commands(block.text)) else "shell"
    raise AssertionError(f"{block}: a ```{block.lang} block the test does not know; mark it or make it a known kind")


def trl_cli_block() -> Block:
    """The README's `trl grpo` block: run by tests/test_trl_cli.py (its one TRL CLI run)."""
    (block,) = [b for b in all_blocks() if kind(b) == "trl_cli"]
    return block


def shell_script(block: Block) -> str:
    return "set -euo pipefail\n" + "\n".join(with_additions(c) for c in commands(block.text)) + "\n"


def python_script(block: Block) -> str:
    code = block.text
    for pattern, value in PY_ADDITIONS.items():
        code, n = re.subn(pattern, value, code)
        assert n <= 1, f"{block}: {pattern} appears {n} times"
    return code


def scratch(tmp: Path) -> dict:
    """The scratch folder the commands run in, and their environment (offline, the tiny model as smollm2)."""
    for name in ("recipes", "accelerate_configs"):
        (tmp / name).symlink_to(ROOT / name)
    build_tiny_model_dir(tmp / "cache" / "smollm2-135m-instruct")
    return {**os.environ, "TRL_GSM8K_CACHE": str(tmp / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # PATH: the venv's first (conftest.py)


# --- fast: every block is known, every exemption is allowed, every link resolves ----------------------------------

def test_every_block_is_run_or_marked_exempt():
    found = all_blocks()
    assert len(pages()) >= 4, "the README links its docs/ pages"
    for block in found:
        k = kind(block)
        if k == "exempt":
            reason = block.marker.removeprefix("not run:").strip()
            allowed = next((v for key, v in EXEMPT.items() if reason.startswith(key)), False)
            assert allowed is not False, f"{block}: exempt for {reason!r}; only make and GPU commands may be"
            if allowed is not None:
                assert all(allowed.match(c) for c in commands(block.text)), f"{block}: only `make test/demo` here"
        elif k in ("shell", "trl_cli"):
            shell_script(block)  # raises on a command no test knows
    kinds = [kind(b) for b in found]
    assert kinds.count("python") >= 2 and kinds.count("doctest") >= 1 and kinds.count("shell") >= 5, kinds


def test_unknown_blocks_fail(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nrm -rf outputs\npython -m trl_gsm8k.plot out && rm -rf out\n```\n\n```text\nhi\n```\n")
    shell, text = blocks(page)
    with pytest.raises(AssertionError, match="unknown command"):
        shell_script(shell._replace(file=README))
    with pytest.raises(AssertionError, match="no shell operators"):
        with_additions(commands(shell.text)[1])
    with pytest.raises(AssertionError, match="does not know"):
        kind(text._replace(file=README))


def test_links_resolve():
    for page in pages():
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links {target}, which is missing"


def test_doctests():
    for block in (b for b in all_blocks() if kind(b) == "doctest"):
        runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
        runner.run(doctest.DocTestParser().get_doctest(block.text, {}, str(block), str(block.file), block.line))
        failed, attempted = runner.summarize(verbose=False)
        assert attempted and not failed, f"{block}: {failed} of {attempted} examples failed"


# --- slow: the commands and snippets, in the page's order (training, then resume, evaluate, plot, export) -------

def test_commands_and_snippets_run_as_printed(tmp_path):
    env = scratch(tmp_path)
    for block in all_blocks():
        k = kind(block)
        if k == "shell":
            cmd = ["bash", "-c", shell_script(block)]
        elif k == "python":
            cmd = [sys.executable, "-c", python_script(block)]
        else:  # exempt, output, doctests (above), the trl grpo block (tests/test_trl_cli.py)
            continue
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{block} failed:\n{cmd[-1]}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    out = tmp_path / "outputs"
    demo = out / "smollm2-135m_cpu_demo"
    assert (demo / "checkpoint-1").is_dir() and (demo / "training_curves.png").is_file()  # launched, then resumed
    assert (out / "r1-distill-qwen-1.5b_lora" / "adapter_config.json").is_file()  # the GPU recipe's CPU smoke test
    assert (out / "r1-distill-qwen-1.5b_lora-merged" / "config.json").is_file()  # its export
    assert (out / "my-grpo" / "checkpoint-1" / "model.safetensors").is_file()  # the Python snippet trained a step
    assert (tmp_path / "before.json").is_file() and (tmp_path / "after.json").is_file()
    assert (tmp_path / "probe.json").is_file()
