# shopjobs: every command a developer needs. `make dev` to run it, `make test` to test it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install dev test test-unit faults screenshot bench bench-quick services services-stop db lint format clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Web + worker (+ local Postgres and Redis unless DATABASE_URL / REDIS_URL are set)
dev: install
	$(PY) -m tools.dev

## The whole test suite, against its own Postgres and Redis
test: install
	$(PY) -m pytest $(PYTEST_ARGS)

## The unit tests only (tests/unit): no Postgres or Redis started, done in seconds
test-unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

## Retake the docs' pictures (docs/demo.png, docs/dashboard.png, docs/dashboard-charts.png, docs/embedded-app.png) with the browser tests
screenshot: install
	UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/browser -q -k screenshot

## Benchmarks against raw arq, SAQ, Celery, Procrastinate, streaq and BullMQ (own Postgres + Redis); results in bench/results/
bench: install
	$(PY) -m bench $(BENCH_ARGS)

## The same, smaller (about 4 minutes)
bench-quick: install
	BENCH_QUICK=1 $(PY) -m bench $(BENCH_ARGS)

## The fault suite at full size (kills, restarts, 10,000 fuzzed requests); `make test` runs it small
faults: install
	FAULTS_SCALE=full $(PY) -m pytest tests/faults $(PYTEST_ARGS)

## Start local Postgres + Redis; prints export lines: eval "$$(make -s services)"
services: install
	@$(PY) -m tools.services start --dir .dev

services-stop: install
	@$(PY) -m tools.services stop --dir .dev

## Apply the schema migrations DATABASE_URL has not recorded yet (service/migrations; idempotent)
db: install
	$(PY) -m service db apply

## ruff, the one-way layers of service/ and jobs/ (pyproject.toml: importlinter), and mypy --strict
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean: services-stop
	rm -rf .dev
