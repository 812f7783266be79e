# Everything starts from a fresh machine with nothing but Python 3.11+: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: install demo test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/titan demo pipelines/etl/etl.yaml

test: install
	$(BIN)/pytest -q

test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check titan_zmq client ui tests pipelines scripts
	$(BIN)/mypy titan_zmq client

bench: install
	$(BIN)/titan bench

clean:
	rm -rf $(VENV) .titan .titan-demo .titan-data .titan-work *.egg-info
