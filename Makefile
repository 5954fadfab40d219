# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs the package, runs the main job on its embedded default
#   make test   -> creates .venv if needed, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch; GPU users install the CUDA build first (see README).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/run_clm.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check biomamba_hf examples tests benchmarks
	$(BIN)/ruff format --check biomamba_hf examples tests benchmarks

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo_output
