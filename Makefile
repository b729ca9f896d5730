# graphql-service: every entry point a developer or CI needs.
# `make run` starts the whole stack; `make test` sets up everything it needs and runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKERS ?= 2
PORT ?= 8080
# More than one worker fans subscription events out through Redis: the local one by default.
REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: venv system-deps run test check fmt lint types imports bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# From Debian: nginx (the front proxy), promtool (Prometheus checks), wrk (benchmarks),
# systemd-analyze (unit checks) and redis-server (the Redis-restart tests start their own).
system-deps:
	@if ! command -v nginx >/dev/null || ! command -v promtool >/dev/null || ! command -v wrk >/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v redis-server >/dev/null; then \
	  echo "installing nginx, prometheus (promtool), wrk, systemd and redis-server with apt"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    nginx-light prometheus wrk systemd redis-server >/dev/null; \
	fi

# The whole stack: migrations, the supervisor with $(WORKERS) workers, a private nginx on $(PORT).
run: venv system-deps
	WORKERS=$(WORKERS) PORT=$(PORT) REDIS_URL=$(REDIS_URL) \
	  $(VENV)/bin/graphql-service run --workers $(WORKERS) --port $(PORT)

# The import contracts (pyproject.toml, [tool.importlinter]) first, then every test.
# pytest's own exit status is kept: 5 ("no tests collected") fails the target.
test: venv system-deps imports
	$(PY) -m pytest -p no:cacheprovider -q $(PYTEST_ARGS)

imports: venv
	$(VENV)/bin/lint-imports

fmt: venv
	$(VENV)/bin/ruff format service tests bench support

lint: venv
	$(VENV)/bin/ruff format --check service tests bench support
	$(VENV)/bin/ruff check service tests bench support

types: venv
	$(VENV)/bin/mypy

check: lint types imports test

bench: venv system-deps
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
