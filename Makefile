# The two commands: `make run` serves the studio on the embedded defaults, `make test` runs the
# whole suite against real PostgreSQL and Redis. Both set up everything they need themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format bench bench-batch-stream bench-browser bench-characters bench-sheet bench-gpu bench-lean bench-live-lean faults clean venv venv-dev

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv missing: installing it"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-pip >/dev/null; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); }
	@$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run
venv-dev: $(VENV)/.installed-dev

run: export DEBUG ?= 1
run: venv
	@mkdir -p var
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_models
	$(PY) manage.py ensure_demo_user --url http://$(HOST):$(PORT)/
	$(PY) manage.py rundev --addr $(HOST):$(PORT)

test: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; \
	  $(VENV)/bin/ruff check . || rc=$$?; \
	  if [ $$rc = 0 ]; then $(PY) -m pytest $(PYTEST_ARGS) || rc=$$?; fi; \
	  tests/infra/services.sh stop; \
	  exit $$rc

lint: venv-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/batch_latency.py || rc=$$?; tests/infra/services.sh stop; exit $$rc

# Batch Mode's results file: streamed with bounded memory (bench/batch_results_stream.py; no services).
bench-batch-stream: venv-dev
	$(PY) bench/batch_results_stream.py

# The browser's figures (not part of `make test`): the gallery page's render time and size, and
# click -> first image visible (live and polled) in chromium against the studio on ASGI.
bench-browser: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/browser.py $(BENCH_ARGS) || rc=$$?; tests/infra/services.sh stop; exit $$rc

# The GPU worker's throughput (not part of `make test`): images/s at batch 1-8 and x1 latency on
# whatever device it finds; on the CPU the tiny test pipeline at tiny sizes (a smoke test only).
bench-gpu: venv-dev
	$(PY) bench/gpu_worker.py $(BENCH_GPU_ARGS)

# Issue 9's worker rows: orchestration overhead, fal pick-up as L varies, connections per burst,
# the synchronous provider's wall and re-runs, image memory (bench/worker_lean.py).
bench-lean: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/worker_lean.py || rc=$$?; tests/infra/services.sh stop; exit $$rc

# Issue 9's whole table in one run: the worker rows (bench-lean), then the browser's (bench-browser).
bench-live-lean: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/worker_lean.py || rc=$$?; $(PY) bench/browser.py $(BENCH_ARGS) || rc=$$?; \
	  tests/infra/services.sh stop; exit $$rc

# A character's base images and profile set against one provider round trip (issue 10's targets).
bench-characters: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/character_jobs.py || rc=$$?; tests/infra/services.sh stop; exit $$rc

# A character sheet of 12 against one x4 job at L = 2 s on the simulator (bench/character_sheet.py).
bench-sheet: venv-dev
	@tests/infra/services.sh start
	@set -a; eval "$$(tests/infra/services.sh env)"; set +a; \
	  rc=0; $(PY) bench/character_sheet.py || rc=$$?; tests/infra/services.sh stop; exit $$rc

# The fault suite (not part of `make test`): kills workers, Redis and database connections under
# load and prints lost / duplicate / double-charge / double-submit / recovery figures per fault.
# Its services run on ports of their own; bench/faults.py starts and stops them itself.
faults: export SERVICES_DIR := /tmp/cs-faults
faults: export TEST_PG_PORT := 54349
faults: export TEST_REDIS_PORT := 63819
faults: venv-dev
	$(PY) bench/faults.py $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache test-artifacts
