"""A Hub id where the Hub cannot be reached: a clear error in seconds (huggingface_hub alone retries for half a minute
or more first), or, for a model already in the HF cache, an offline load. The Hub is simulated unreachable with an
endpoint on a closed local port, whatever this machine's network."""

import shutil
import socket
import time

import pytest

from trl_gsm8k.train import cli

FAST_S = 10  # the Hub's retries alone took 28 s with this endpoint before the check (measured)


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """An endpoint nothing listens on, an empty HF cache, no proxy; online mode, restored afterwards."""
    from huggingface_hub import constants

    with socket.socket() as s:  # a port just freed: connections to it are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # go_offline() sets it; monkeypatch restores it
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hf_cache"


def test_an_unreachable_hub_fails_in_seconds_naming_the_id_and_the_fixes(unreachable_hub, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: trl-gsm8k-test/not-cached\nbf16: false\nuse_cpu: true\n")
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exited:
        cli(["--config", str(recipe), "--output_dir", str(tmp_path / "out")])
    took = time.perf_counter() - start
    assert took < FAST_S, f"{took:.0f} s to fail"
    message = str(exited.value)
    assert message.startswith("error: Model 'trl-gsm8k-test/not-cached' is not a local directory"), message
    assert "cannot be reached" in message and "\n" not in message
    for fix in ("local model directory", "smollm2-135m-instruct", "hf download trl-gsm8k-test/not-cached"):
        assert fix in message
    assert not (tmp_path / "out").exists()


def test_the_evaluator_reports_it_in_its_own_words(unreachable_hub):
    from trl_gsm8k.generation import EvalError, resolve_model

    with pytest.raises(EvalError, match=r"^--model trl-gsm8k-test/not-cached: Model .* cannot be reached"):
        resolve_model("trl-gsm8k-test/not-cached")


def test_a_model_in_the_hf_cache_loads_offline_when_the_hub_cannot_be_reached(unreachable_hub, tiny_model_dir):
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_gsm8k.checks import check_model_config
    from trl_gsm8k.models import resolve_model_path

    revision = "0" * 40  # the HF cache's layout: refs/main names the snapshot holding the files
    repo = unreachable_hub / "models--trl-gsm8k-test--tiny"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)

    start = time.perf_counter()
    path = resolve_model_path("trl-gsm8k-test/tiny")
    assert constants.HF_HUB_OFFLINE  # switched to offline mode rather than refused
    assert check_model_config(path).model_type == "llama"
    AutoTokenizer.from_pretrained(path)
    AutoModelForCausalLM.from_pretrained(path)
    took = time.perf_counter() - start
    assert took < FAST_S, f"{took:.0f} s to load from the cache"


def test_offline_mode_without_the_model_in_the_cache_says_so_at_once(unreachable_hub, monkeypatch):
    from trl_gsm8k.errors import LaunchError
    from trl_gsm8k.models import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LaunchError, match="but offline mode is on .HF_HUB_OFFLINE=1. and the HF cache"):
        resolve_model_path("trl-gsm8k-test/not-cached")
