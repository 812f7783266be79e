# Everything starts from a fresh machine with nothing but Python 3.11+: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test test-fast lint bench screenshots clean

install: $(VENV)/.installed

# compat editable mode: a path entry in a .pth file. The default (strict) mode installs an import hook that
# costs every start of this interpreter ~20 ms, and workers run Python jobs with it (see docs/BENCHMARKS.md,
# `startup`). The Makefile is a prerequisite so that a venv made by an older recipe is reinstalled.
$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

demo: install
	$(BIN)/titan demo pipelines/etl/etl.yaml

test: install  # three test files at a time: most tests wait on processes, not on the CPU
	$(BIN)/pytest -q -n 3 --dist loadfile

test-fast: install
	$(BIN)/pytest -q -n 3 --dist loadfile -m "not slow"

lint: install
	$(BIN)/ruff check titan_zmq client ui tests pipelines scripts benchmarks
	$(BIN)/mypy titan_zmq client benchmarks ui

screenshots: install  # refresh docs/screenshots/ from the UI tests (headless Chromium)
	TITAN_SCREENSHOTS=1 $(BIN)/pytest -q tests/ui

bench: install
	$(BIN)/titan bench

clean:
	rm -rf $(VENV) .titan .titan-demo .titan-data .titan-work *.egg-info
