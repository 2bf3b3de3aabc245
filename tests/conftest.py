"""Shared fixtures: a tiny random Llama with the real SmolLM2 tokenizer, saved once per session."""

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests (tests/test_answer_grammar.py): derandomized in CI (the same examples on every run, so a failure
# reproduces), random locally (new examples each run). No example database; .hypothesis/ (Hypothesis's own cache of
# constants) is git-ignored.
# HYPOTHESIS_PROFILE overrides the choice, e.g. HYPOTHESIS_PROFILE=thorough for a long local search.
_PROFILE = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, max_examples=100, print_blob=True, **_PROFILE)
settings.register_profile("dev", max_examples=100, **_PROFILE)
settings.register_profile("thorough", max_examples=5_000, **_PROFILE)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

TOKENIZER_DIR = Path(__file__).parent / "assets" / "tokenizer"

# Every command the tests start finds this environment's tools first, as in an activated venv (and as `make` runs
# them): above all its `ninja`, which builds DeepSpeed's ops. A system ninja of another version alternating with it
# makes each switch rebuild CPU Adam from scratch (~80 s on 2 cores; seen twice per CI run before this).
_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


def build_tiny_model_dir(path: Path, seed: int = 0, tie_word_embeddings: bool = False) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model_dir(tmp_path_factory.mktemp("tiny_llama")))
