# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs the package, runs the main job on its embedded default
#   make test   -> creates .venv if needed, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch; GPU users install the CUDA build first (see README).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-compat lint clean

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

# The core tests (the fast ones) against transformers releases, each in its own venv (not run by CI; needs the
# package index). 5.17 is both the oldest supported release (setup.cfg says why 5.0 is not) and the GPU machine's;
# `make test` covers the newest (the venv's). Another list: make test-compat COMPAT_TRANSFORMERS="5.20.* 5.24.*".
COMPAT_TRANSFORMERS ?= 5.17.*
CORE_TESTS ?= tests/test_imports.py tests/test_patches.py tests/test_modeling.py tests/test_pipeline.py \
	tests/test_qa_features.py tests/test_metrics.py tests/test_fast_scan.py tests/test_run_qa.py
test-compat:
	set -e; for version in $(COMPAT_TRANSFORMERS); do \
		venv=.venv-transformers-$${version%.*}; \
		test -x $$venv/bin/python || $(PYTHON) -m venv $$venv; \
		$$venv/bin/python -c "import torch" 2>/dev/null || $$venv/bin/python -m pip install --quiet "$(TORCH_SPEC)"; \
		$$venv/bin/python -m pip install --quiet -e ".[dev]" "transformers==$$version"; \
		$$venv/bin/python -m pytest -q -p no:cacheprovider -m "not slow and not gpu" $(CORE_TESTS); \
	done

lint: install
	$(BIN)/ruff check biomamba_hf examples tests benchmarks
	$(BIN)/ruff format --check biomamba_hf examples tests benchmarks

clean:
	rm -rf $(VENV) .venv-transformers-* build dist *.egg-info .pytest_cache demo_output
