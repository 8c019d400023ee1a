# The project's verbs. Every target that needs the Python environment depends on
# `setup`, which installs uv when it is missing and syncs the locked environment.
# CI (.ci/run) calls these same targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Never let uv fetch a Python interpreter: use the machine's Python >= 3.11.
export UV_PYTHON_DOWNLOADS := never

# uv on PATH, else the copy pip installed (which may live outside PATH, e.g. ~/.local/bin).
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
# --frozen: run exactly what uv.lock pins, as `setup` installed it; never re-lock on the fly
# (after changing dependencies, run `uv lock` and commit uv.lock).
UV_RUN := $(UV) run --frozen

# Extra arguments: `make test ARGS="-k consumer -x"`, `make run ARGS=--check`.
ARGS ?=

.PHONY: help setup run test test-cluster chaos lint format bench bench-peers contracts clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## install uv if missing, then the locked environment (uv sync --frozen)
	@if ! command -v uv >/dev/null 2>&1 && ! python3 -m uv --version >/dev/null 2>&1; then \
		echo "uv not found; installing it with pip"; \
		python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv; \
	fi
	$(UV) sync --frozen

run: setup ## Redis (unless REDIS_URL is set) and every service, on 127.0.0.1:8000-8003
	$(UV_RUN) python deploy/local/run.py $(ARGS)

test: setup ## the whole test suite on a real Redis
	$(UV_RUN) pytest $(ARGS)

# the Redis-facing tests again, against a throwaway local Redis Cluster (needs redis-server)
CLUSTER_TESTS ?= contracts riverbed/tests services

test-cluster: setup ## the runtime's, contracts' and services' tests on a local Redis Cluster
	$(UV_RUN) python deploy/local/with_redis_cluster.py -- $(UV_RUN) pytest $(CLUSTER_TESTS) $(ARGS)

# Options of the chaos run: `make chaos CHAOS_ARGS=--short` is the CI-sized one (< 3 min).
CHAOS_ARGS ?=

chaos: setup ## the whole stack under faults (kills, Redis restarts, outages), judged; not in test
	$(UV_RUN) python tests/chaos/run.py $(CHAOS_ARGS)

lint: setup ## ruff check, ruff format --check, mypy --strict on src/, lint-imports (layers)
	@status=0; \
	$(UV_RUN) ruff check . || status=1; \
	$(UV_RUN) ruff format --check . || status=1; \
	$(UV_RUN) mypy contracts/src riverbed/src services/*/src || status=1; \
	$(UV_RUN) lint-imports || status=1; \
	exit $$status

format: setup ## rewrite the code in place: ruff format and safe ruff fixes
	$(UV_RUN) ruff check --fix .
	$(UV_RUN) ruff format .

bench: setup ## benchmarks, each printing its figures and its ratio to a baseline
	$(UV_RUN) python bench/run_all.py $(ARGS)

# Installs BullMQ (npm) and FastStream (a virtualenv) under var/bench-peers/ at pinned versions.
bench-peers: setup ## Riverbed vs BullMQ and FastStream, one protocol; writes bench/results/peers.md
	$(UV_RUN) python bench/peers/run.py $(ARGS)

contracts: setup ## regenerate the committed JSON Schemas and AsyncAPI document
	$(UV_RUN) python contracts/generate.py generate

clean: ## remove local state (var/) and caches; keeps .venv
	rm -rf var/ .mypy_cache/ .ruff_cache/ .pytest_cache/ dist/ build/
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
