# The two commands of the README: `make run` (the embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench chaos clean promtool chromium screenshots wrk

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev,embedded]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/mkr run

lint: $(STAMP)
	$(BIN)/ruff check mkr shared services deploy tests
	$(BIN)/mypy mkr shared services deploy

# promtool (Debian's prometheus package) checks /metrics and deploy/monitoring in the tests: installed
# when missing, and a loud failure when it cannot be.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool missing: installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus; \
	} && command -v promtool >/dev/null 2>&1 || { \
	  echo "ERROR: make test needs promtool and could not install it (apt-get install prometheus)" >&2; exit 1; }

# The console's browser tests drive Debian's Chromium: installed here when missing (as root), else a clear failure.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  fi; \
	fi
	@test -x "$(CHROMIUM)" || { echo "ERROR: $(CHROMIUM) is missing and could not be installed: run 'apt-get install -y chromium' as root (the console's browser tests need it)" >&2; exit 1; }

test: lint promtool chromium
	$(BIN)/pytest

# Photographs of each role's home into docs/console/ (the browser tests take them; without MKR_SCREENSHOTS=1
# they write to a temporary folder, so `make test` leaves the work tree clean).
screenshots: $(STAMP) chromium
	MKR_SCREENSHOTS=1 $(BIN)/pytest tests/console/test_browser.py -q

# The intake bench drives its HTTP load with Debian's wrk (C, one thread) when it is there: installed here when
# missing (as root); without it the bench falls back to an httpx load generator in a process of its own.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing wrk (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  fi; \
	}; command -v wrk >/dev/null 2>&1 || echo "wrk is missing: the intake bench uses its httpx load generator"

bench: $(STAMP) wrk
	$(BIN)/python -m tests.bench

chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
