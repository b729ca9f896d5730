# graphql-service: the supervisor (gunicorn arbiter) and $WORKERS uvloop workers, each on a unix
# socket in /sockets, a volume that the nginx container mounts read-only (docker-compose.yml).
# No secrets are baked in: DATABASE_URL, REDIS_URL, JWT_SECRET, ... come from the environment.
#
#   docker build -t graphql-service .
#   docker compose up -d          # nginx, app, migrate, postgres, redis, prometheus, grafana
#
# tests/e2e/test_deploy_artifacts.py lints this file with hadolint and replays its install and CMD
# outside a container (a fresh venv, `pip install .`, the ENV below, `graphql-service serve`).

# --- build: a self-contained virtualenv with the project and its dependencies ---------------
FROM python:3.11-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Only what the package build needs (pyproject.toml names README.md as the readme), so editing
# tests or docs does not invalidate this layer. Every dependency ships manylinux wheels
# (psycopg2-binary, uvloop, orjson, ...): no compiler, no apt.
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim

# A numeric, unprivileged user (10001) owns the sockets directory and the metrics directory
# with its parent (the supervisor wipes and re-creates the metrics directory at start; other
# commands, such as migrate, expect it to exist). /sockets is 0755 so nginx's worker user, in
# another container, can traverse it; the workers make the sockets themselves 0666.
RUN groupadd --system --gid 10001 graphql \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin graphql \
    && mkdir -p /sockets /var/lib/graphql-service/metrics \
    && chown -R 10001:10001 /sockets /var/lib/graphql-service \
    && chmod 0755 /sockets /var/lib/graphql-service /var/lib/graphql-service/metrics

COPY --from=builder /opt/venv /opt/venv

# PROMETHEUS_MULTIPROC_DIR is wiped and re-created by the supervisor at start, so it lives
# in a directory the service user owns. METRICS_HOST stays 127.0.0.1 here; compose sets
# 0.0.0.0 so Prometheus can scrape app:9400 on the private network.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOCKET_DIR=/sockets \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/graphql-service/metrics \
    WORKERS=2 \
    LOG_FORMAT=json

USER 10001:10001
WORKDIR /var/lib/graphql-service

# The metrics endpoint (METRICS_PORT, served by the arbiter); requests reach the workers through the sockets volume.
EXPOSE 9400

# Liveness without curl: every slot socket must answer GET /healthz with 200.
HEALTHCHECK --interval=10s --timeout=10s --start-period=30s --retries=3 \
    CMD ["graphql-service", "healthcheck"]

# gunicorn's arbiter is PID 1: it reaps its workers, TERM drains them within
# GRACEFUL_TIMEOUT_S (give `docker stop` a longer --time), HUP reloads them.
STOPSIGNAL SIGTERM
CMD ["graphql-service", "serve"]
