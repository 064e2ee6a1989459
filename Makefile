# The two commands of the quick start: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/homelab plugins
	$(BIN)/homelab run system --once

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check homelab_core homelab_plugins tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
