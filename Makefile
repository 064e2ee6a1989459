# The two commands of the quick start: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-web lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/homelab serve

# The web layer's tests under another interpreter, e.g. `make test-web PYTHON=python3.13 VENV=.venv313`
# (Quart 0.23 needs Python 3.13; on 3.11 pip picks Quart 0.22).
test-web: $(STAMP)
	$(BIN)/python -m pytest tests/test_web_*.py -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check homelab_core homelab_plugins tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest --cov --cov-report=term --cov-fail-under=85

# `make bench` runs every benchmark; `make bench QUICK=1` a shorter version of each (< 3 min).
bench: $(STAMP)
	$(BIN)/python -m bench $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) .venv313 .pytest_cache .mypy_cache .ruff_cache .coverage
