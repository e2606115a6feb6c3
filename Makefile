# cloudclients — every developer and CI use these targets. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EMULATOR_PKG := $(wildcard emulator/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: help install node-deps load-tool test test-fast test-slow lint typecheck check demo bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml $(EMULATOR_PKG)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' $(if $(EMULATOR_PKG),-e ./emulator)
	touch $@

install: $(STAMP) ## Create .venv and install cloudclients, the emulator and dev tools

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

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check cloudclients tests examples bench $(if $(EMULATOR_PKG),emulator)

typecheck: $(STAMP) ## mypy --strict on the package (and the emulator)
	$(BIN)/mypy --strict cloudclients $(if $(EMULATOR_PKG),emulator/cloudclients_emulator)

check: lint typecheck test ## lint + typecheck + tests

demo: $(STAMP) ## Run the example app on local emulators and print a report
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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
