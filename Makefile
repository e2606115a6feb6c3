# cloudclients — every developer and CI use these targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EMULATOR_PKG := $(wildcard emulator/pyproject.toml)
PYTEST_ARGS ?=

# One venv, two installs: the demo's (no compiler needed) and the dev tools' (uWSGI compiles from C),
# which includes the demo's. Each has its own stamp, so `make test` after `make demo` still installs
# the dev tools, and `make demo` after `make install` installs nothing.
DEMO_STAMP := $(VENV)/.installed-demo
STAMP      := $(VENV)/.installed-dev
PIP        := $(BIN)/python -m pip install --quiet

# `make test-lowest`: its own venv, with every declared lower bound installed exactly (.ci/lowest.py).
# uv resolves it (`--resolution lowest-direct`); uv reads UV_INDEX_URL, not pip's configuration.
LOWEST       := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed

.PHONY: help install install-demo node-deps load-tool test test-fast test-slow test-lowest lint typecheck check demo bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(DEMO_STAMP): pyproject.toml $(EMULATOR_PKG) | $(BIN)/python
	$(PIP) -e '.[demo]' $(if $(EMULATOR_PKG),-e ./emulator)
	touch $@

$(STAMP): pyproject.toml $(EMULATOR_PKG) | $(BIN)/python
	$(PIP) -e '.[dev]' $(if $(EMULATOR_PKG),-e ./emulator)
	touch $@ $(DEMO_STAMP)

install: $(STAMP) ## Create .venv and install cloudclients, the emulator and dev tools

install-demo: $(DEMO_STAMP) ## Create .venv with only what `make demo` needs (no compiler)

$(LOWEST_STAMP): pyproject.toml $(EMULATOR_PKG) .ci/lowest.py
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet 'uv>=0.9,<1'
	$(LOWEST)/bin/python .ci/lowest.py requirements > $(LOWEST)/requirements.txt
	$(LOWEST)/bin/python .ci/lowest.py constraints > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct \
	  -r $(LOWEST)/requirements.txt -c $(LOWEST)/constraints.txt -e . -e ./emulator
	touch $@

NODE_DEPS := emulator/node/node_modules/.package-lock.json

$(NODE_DEPS): emulator/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix emulator/node --no-audit --no-fund; \
	else \
		echo "note: npm not found; skipping emulator/node deps (the Node.js client test will skip)"; \
	fi

node-deps: $(NODE_DEPS) ## Install the pinned Node.js client used by tests/test_node_client.py (npm ci)

test: $(STAMP) $(NODE_DEPS) ## Run the whole test suite (slow tests included), as CI does
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) $(NODE_DEPS) ## Run only the slow tests (real servers, forks)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-lowest: $(LOWEST_STAMP) ## Run the fast tests on the lowest versions pyproject.toml allows (.venv-lowest)
	$(LOWEST)/bin/python .ci/lowest.py report
	$(LOWEST)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check cloudclients tests examples bench .ci $(if $(EMULATOR_PKG),emulator)

typecheck: $(STAMP) ## mypy --strict on the package (and the emulator)
	$(BIN)/mypy --strict cloudclients $(if $(EMULATOR_PKG),emulator/cloudclients_emulator) .ci/lowest.py

check: lint typecheck test ## lint + typecheck + tests

demo: $(DEMO_STAMP) ## Run the example app on local emulators and print a report
	$(BIN)/python -m examples.demo

# wrk (Debian package) generates the HTTP load for `make bench`; without it (not root, no apt)
# the benchmark falls back to its own Python load generator and says so in the results.
load-tool:
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } \
	      || echo "wrk could not be installed: make bench uses its Python load generator"; \
	  else echo "wrk is not installed (apt-get install wrk): make bench uses its Python load generator"; fi; }

bench: $(STAMP) load-tool ## Run the benchmarks (writes bench/results.md)
	$(BIN)/python -m bench.run

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache *.egg-info
