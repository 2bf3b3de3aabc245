"""Merging a LoRA adapter gives a plain model with the adapter model's logits."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from trl_gsm8k.export import main


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
