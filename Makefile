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

.PHONY: venv system-deps run test check fmt lint types imports bench clean \
	multihost multihost-up systemd-nspawn

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# From Debian: nginx (the front proxy), promtool (Prometheus checks), wrk (benchmarks),
# systemd-analyze (unit checks), redis-server (the Redis-restart tests start their own),
# chromium (the GraphiQL browser test drives it with playwright-core; that test also needs node),
# systemd-container and debootstrap (the systemd unit run for real under systemd-nspawn), socat
# and iproute2 (the multi-host test's network namespaces and forwarders).
system-deps:
	@if ! command -v nginx >/dev/null || ! command -v promtool >/dev/null || ! command -v wrk >/dev/null \
	    || ! command -v systemd-analyze >/dev/null || ! command -v redis-server >/dev/null \
	    || ! command -v chromium >/dev/null || ! command -v systemd-nspawn >/dev/null \
	    || ! command -v debootstrap >/dev/null || ! command -v socat >/dev/null \
	    || ! command -v ip >/dev/null; then \
	  echo "installing nginx, prometheus (promtool), wrk, systemd, redis-server, chromium," \
	    "systemd-container, debootstrap, socat and iproute2 with apt"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    nginx-light prometheus wrk systemd redis-server chromium \
	    systemd-container debootstrap socat iproute2 >/dev/null; \
	fi

# The whole stack: migrations, the supervisor with $(WORKERS) workers, a private nginx on $(PORT).
run: venv system-deps
	WORKERS=$(WORKERS) PORT=$(PORT) REDIS_URL=$(REDIS_URL) \
	  $(VENV)/bin/graphql-service run --workers $(WORKERS) --port $(PORT)

# The import contracts (pyproject.toml, [tool.importlinter]) first, then every test.
# pytest's own exit status is kept: 5 ("no tests collected") fails the target.
test: venv system-deps imports
	$(PY) -m pytest -p no:cacheprovider -q $(PYTEST_ARGS)

# Several hosts behind a load balancer (README, "Several hosts behind a load balancer"): three
# network namespaces, each with its supervisor and nginx, sharing this machine's Postgres and
# Redis, an nginx balancing over them. `multihost` runs the test; `multihost-up` keeps such a
# cluster up until Ctrl-C and prints its addresses. Both need root.
multihost: venv system-deps
	$(PY) -m pytest -p no:cacheprovider -v tests/e2e/test_multihost.py

multihost-up: venv system-deps
	$(PY) -m support.multihost

# The systemd unit run for real: Debian under systemd-nspawn, installed by the README's lines
# (README, "systemd"). The first run builds the root file system (about a minute).
systemd-nspawn: venv system-deps
	$(PY) -m pytest -p no:cacheprovider -v tests/e2e/test_systemd_nspawn.py

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
