"""Our rewards load by dotted path in a plain TRL job: the real `trl grpo` CLI, offline, on a tiny random model."""

import json
import os
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from trl_gsm8k.data import read_rows

TOKENIZER = Path(__file__).parent / "assets" / "tokenizer"


def test_trl_cli_trains_with_rewards_by_dotted_path(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )
    model_dir, data_dir, out_dir = tmp_path / "model", tmp_path / "data", tmp_path / "out"
    LlamaForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data_dir.mkdir()
    with open(data_dir / "train.jsonl", "w") as f:
        for row in read_rows("train")[:4]:  # plain-text prompts + the raw GSM8K answer text
            f.write(json.dumps({"prompt": row["question"], "answer": row["answer"]}) + "\n")

    cmd = [
        str(Path(sys.executable).with_name("trl")), "grpo",
        "--model_name_or_path", str(model_dir), "--dataset_name", str(data_dir), "--output_dir", str(out_dir),
        "--reward_funcs", "trl_gsm8k.rewards.correctness_reward", "trl_gsm8k.rewards.shaped_reward",
        "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
        "--max_completion_length", "8", "--bf16", "false", "--use_cpu", "true", "--report_to", "none",
        "--logging_steps", "1", "--save_strategy", "no",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = result.stdout + result.stderr
    assert "rewards/correctness_reward/mean" in logs and "rewards/shaped_reward/mean" in logs, logs[-3000:]
    assert (out_dir / "model.safetensors").is_file()
