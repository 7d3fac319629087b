# Litmus — every command sets itself up: a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint bench load simulate browser clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	# The reference the risk and CUPED tests compare against (pyproject.toml, extra `reference`):
	# without its pins (numpy<2, pandas<2), which the modules the tests use do not need.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps 'gbstats>=0.8'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install Litmus with its dev tools

run: install ## serve on 127.0.0.1:8000 with the embedded PostgreSQL; prints the admin token
	$(PY) -m litmus serve

browser: ## make sure Debian's Chromium is there for the browser tests
	@bash scripts/ensure_chromium.sh

test: install browser ## the whole suite (embedded PostgreSQL; LITMUS_TEST_DATABASE_URL to use a server)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install ## the suite without the slow and browser tests
	$(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: install ## ruff and mypy --strict
	$(PY) -m ruff check litmus tests scripts loadtests
	$(PY) -m mypy --strict litmus

bench: install ## benchmarks, each printed as a ratio against a baseline measured in the same run
	$(PY) loadtests/bench_assign.py
	$(PY) loadtests/bench_fastlane.py
	$(PY) loadtests/bench_ingest.py
	$(PY) loadtests/bench_recompute.py
	$(PY) loadtests/bench_counterfactual.py
	$(PY) loadtests/bench_covariates.py

load: install ## locust, headless and bounded, against a local server
	$(PY) loadtests/run_load.py

simulate: install ## the live 5-model bandit simulation against a running `make run`
	$(PY) scripts/live_bandit_simulation.py --base-url http://127.0.0.1:$${LITMUS_PORT:-8000} $(ARGS)

clean: ## remove the venv and the local data directory
	rm -rf $(VENV) .litmus
