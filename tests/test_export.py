"""Outputs: merging a LoRA adapter gives a plain model with the adapter model's logits; an adapter names a base that
resolves on another machine; a tied model is saved with its lm_head once."""

import json
import shutil
import sys

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from conftest import build_tiny_model_dir
from trl_gsm8k.export import main
from trl_gsm8k.models import SMOLLM2_NAME, realias_tied_weights


def test_merged_model_matches_adapter_model(tmp_path, tiny_model_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter: B is zero at init, which would make the test trivial
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert main(["--checkpoint", str(tmp_path / "adapter"), "--output", str(tmp_path / "merged")]) == 0

    ids = torch.randint(0, 1000, (2, 12))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tmp_path / "adapter")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(merged, "peft_config")
    with torch.no_grad():
        expected, got = adapter(ids).logits, merged(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(ids).logits
    assert (expected - plain).abs().max() > 1e-3  # the adapter changes the output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_not_an_adapter(tmp_path, tiny_model_dir):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", tiny_model_dir, "--output", str(tmp_path / "x")])
    assert exc.value.code == 2


# --- an adapter's base, on another machine -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """One LoRA step of `python -m trl_gsm8k.train` on the offline model's name; a tiny model stands in for the
    converted SmolLM2 in a private cache ($TRL_GSM8K_CACHE), which then moves (another machine's cache)."""
    from test_launch import run, write_recipe

    tmp = tmp_path_factory.mktemp("lora")
    build_tiny_model_dir(tmp / "cache" / SMOLLM2_NAME, seed=5)
    recipe = write_recipe(tmp / "recipe.yaml", SMOLLM2_NAME, max_steps=1, use_peft=True, lora_r=4,
                          lora_target_modules=["q_proj", "v_proj"])
    proc = run([sys.executable, "-m", "trl_gsm8k.train", "--config", str(recipe), "--use_cpu", "true",
                "--output_dir", str(tmp / "run")], extra_env={"TRL_GSM8K_CACHE": str(tmp / "cache")})
    assert proc.returncode == 0, proc.stderr[-4000:]
    shutil.move(tmp / "cache", tmp / "elsewhere")
    return tmp


def logits(model, seed=0):
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(ids).logits


def test_a_trained_adapter_names_the_offline_model_not_this_machines_cache(lora_run):
    for adapter in (lora_run / "run", lora_run / "run" / "checkpoint-1"):
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == SMOLLM2_NAME, adapter


def test_export_and_evaluate_resolve_the_recorded_base_elsewhere(lora_run, tmp_path, monkeypatch):
    from trl_gsm8k.generation import resolve_model

    moved = lora_run / "elsewhere" / SMOLLM2_NAME
    monkeypatch.setenv("TRL_GSM8K_CACHE", str(lora_run / "elsewhere"))
    resolved = resolve_model(str(lora_run / "run"))
    assert (resolved.path, resolved.adapter) == (str(moved), str(lora_run / "run"))

    assert main(["--checkpoint", str(lora_run / "run"), "--output", str(tmp_path / "merged")]) == 0
    base = AutoModelForCausalLM.from_pretrained(moved)
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(moved), lora_run / "run")
    expected = logits(trained)
    assert (expected - logits(base)).abs().max() > 1e-4  # the step moved the adapter: the merge is not a no-op
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")), expected,
                               atol=1e-5, rtol=1e-4)


def test_export_base_model_re_points_an_adapter(lora_run, tmp_path):
    """--base-model PATH merges onto another copy of the base (here a different model, to tell them apart)."""
    other = build_tiny_model_dir(tmp_path / "other", seed=6)
    assert main(["--checkpoint", str(lora_run / "run"), "--output", str(tmp_path / "merged"),
                 "--base-model", str(other)]) == 0
    expected = logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(other), lora_run / "run"))
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")), expected,
                               atol=1e-5, rtol=1e-4)


# --- tied weights --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_a_gathered_state_dict_saves_a_tied_lm_head_once(tmp_path, tied):
    """What Trainer.save_model saves under DeepSpeed ZeRO-1/2: Accelerate's get_state_dict, every tensor cloned (the
    design-card run: tests/test_launch.py). Tied: lm_head saved once; untied: both saved. Either reloads as trained."""
    from deepspeed.checkpoint.utils import clone_tensors_for_torch_save

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model_dir(tmp_path / "base", tie_word_embeddings=tied))
    with torch.no_grad():
        model.lm_head.weight.add_(0.01)  # trained: an untied lm_head differs from the embeddings
    gathered = clone_tensors_for_torch_save(model.state_dict())
    model.save_pretrained(tmp_path / "saved", state_dict=realias_tied_weights(model, gathered))
    with safe_open(tmp_path / "saved" / "model.safetensors", "pt") as f:
        assert ("lm_head.weight" in f.keys()) is not tied
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert reloaded.config.tie_word_embeddings is tied
    assert (reloaded.lm_head.weight is reloaded.model.embed_tokens.weight) is tied
    assert torch.equal(logits(reloaded), logits(model))
