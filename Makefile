# Two commands do all the set-up (see README): `make run` and `make test`.
# `make install` installs the gateway alone (runtime dependencies and EXTRAS, e.g.
# `make install EXTRAS=postgres,redis`), as deploy/Dockerfile does, without the dev tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

EXTRAS ?= postgres,redis
# The one install command of a deployment; deploy/Dockerfile runs the same line (tested).
INSTALL := python -m pip install --no-cache-dir ".[$(EXTRAS)]"

.PHONY: install run test lint typecheck pytest bench services browser clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing python3-venv (Debian ships venv separately)"; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	    rm -rf $(VENV); $(PYTHON) -m venv $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed; install python3-venv" >&2; exit 1; fi; }
	@$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: | $(BIN)/python
	$(BIN)/$(INSTALL)

run: $(STAMP)
	$(BIN)/gateway serve --dev

services:
	@bash scripts/services.sh

# Debian's chromium, for the console's browser test (tests/console/test_browser.py).
browser:
	@bash scripts/browser.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services browser
	$(BIN)/pytest

test: $(STAMP) services browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	$(BIN)/pytest

bench: $(STAMP) services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
