"""Our rewards load by dotted path in a plain TRL job: the README's `trl grpo` block (bundled GSM8K exported with
`python -m trl_gsm8k.data export`, the offline model's folder by name), run as printed, offline, on a tiny model."""

import json
import subprocess

import pytest

from test_readme import scratch, shell_script, trl_cli_block
from trl_gsm8k.data import SYSTEM_PROMPT, build_prompt, export_gsm8k, load_gsm8k, main, read_rows


def test_readme_trl_grpo_block_trains_with_rewards_by_dotted_path(tmp_path):
    block = trl_cli_block()
    result = subprocess.run(["bash", "-c", shell_script(block)], cwd=tmp_path, env=scratch(tmp_path),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{block}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    logs = result.stdout + result.stderr
    assert "rewards/correctness_reward/mean" in logs and "rewards/format_reward/mean" in logs, logs[-3000:]
    assert (tmp_path / "outputs" / "trl-grpo" / "model.safetensors").is_file()
    # What TRL trained on: the whole bundled train split, with the prompt training uses and the gold number.
    rows = [json.loads(line) for line in (tmp_path / "gsm8k" / "train.jsonl").read_text().splitlines()]
    first = read_rows("train")[0]
    assert len(rows) == 7473 and set(rows[0]) == {"prompt", "answer"}
    assert rows[0] == {"prompt": build_prompt(first["question"]), "answer": first["answer"].rsplit("#### ", 1)[1]}


def test_export_writes_what_load_gsm8k_gives(tmp_path):
    path = export_gsm8k(tmp_path / "d", "test", limit=3, prompt_format="plain")
    expected = load_gsm8k("test", prompt_format="plain", limit=3)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert path == tmp_path / "d" / "test.jsonl"
    assert rows == [{"prompt": p, "answer": a} for p, a in zip(expected["prompt"], expected["answer"])]
    assert rows[0]["prompt"].startswith(SYSTEM_PROMPT)

    from datasets import load_dataset  # the folder loads as `trl grpo --dataset_name DIR` loads it

    assert load_dataset(str(tmp_path / "d"), split="test")[0] == rows[0]


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["export", str(tmp_path / "file")]) == 1
    assert main(["export", str(tmp_path / "d"), "--limit", "0"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err), err
    assert "limit must be a positive number" in err[1]
    assert main(["export", str(tmp_path / "d"), "--limit", "2"]) == 0
    assert "Wrote 2 train problems (chat prompts)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "d"), "--split", "dev"])
