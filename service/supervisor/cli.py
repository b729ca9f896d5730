"""``graphql-service`` command line.

Commands:
- ``serve --workers N [--socket-dir D]``: the supervisor (gunicorn arbiter) with N workers on
  ``D/worker0..N-1``.
- ``run --workers N --port P``: the whole local stack: migrations, the supervisor, a private
  nginx on ``127.0.0.1:P``; prints one line with the URL when ready; Ctrl-C/SIGTERM stops all.
- ``migrate``: create the database if missing and apply migrations (advisory-locked).
- ``nginx-config --variant dev|compose|site --workers N [--out-dir D]``: write (or print) the
  per-host nginx files: the worker slot upstream servers, listen address and body limit.
- ``token --sub S [--name NAME] [--ttl SECONDS]``: print a development JWT.
- ``schema [--app module:attribute]``: print the served schema (``APP``) as SDL, for codegen.
- ``healthcheck``: exit 0 when every worker slot answers ``/healthz`` (the container check).

Settings come from the environment (see ``service.settings``); flags override them.
"""

from __future__ import annotations

import argparse
import os
import sys


def _apply_common(args: argparse.Namespace) -> None:
    """Flags become environment variables so forked workers see the same settings."""
    if getattr(args, "workers", None) is not None:
        os.environ["WORKERS"] = str(args.workers)
    if getattr(args, "socket_dir", None):
        os.environ["SOCKET_DIR"] = args.socket_dir
    if getattr(args, "port", None) is not None:
        os.environ["PORT"] = str(args.port)


def _metrics_dir_default() -> None:
    # prometheus-client reads this when first imported: set it before anything imports it.
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        socket_dir = os.environ.get("SOCKET_DIR", "/tmp")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(socket_dir, "graphql-service-metrics")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def cmd_serve(args: argparse.Namespace) -> int:
    _apply_common(args)
    _metrics_dir_default()
    from service.settings import Settings
    from service.supervisor.gunicorn_app import Supervisor
    from service.supervisor.preflight import preflight

    settings = Settings.from_env()
    problem = preflight(settings)
    if problem:
        print(f"graphql-service: refusing to start: {problem}", file=sys.stderr)
        return 2
    os.makedirs(settings.socket_dir, exist_ok=True)
    Supervisor(settings).run()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _metrics_dir_default()
    from service.db.migrations import ensure_database, migrate_sync
    from service.settings import Settings

    settings = Settings.from_env()
    ensure_database(settings.database_url)
    applied = migrate_sync(settings.database_url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _apply_common(args)
    _metrics_dir_default()
    from service.supervisor.stack import run_stack

    return run_stack()


def cmd_token(args: argparse.Namespace) -> int:
    from service.auth.tokens import issue_token
    from service.settings import Settings

    print(issue_token(Settings.from_env(), sub=args.sub, name=args.name, ttl_s=args.ttl))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from graphql import print_schema

    from service.server.application import load_app
    from service.settings import Settings

    spec = args.app or Settings.from_env().app
    try:
        schema = load_app(spec)
    except (ImportError, ValueError) as exc:
        print(f"graphql-service: cannot load the schema {spec!r}: {exc}", file=sys.stderr)
        return 2
    print(print_schema(getattr(schema, "graphql_schema", schema)))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "nginx-config":
        from service.supervisor.nginx import main_nginx_config

        return main_nginx_config(argv[1:])
    if argv and argv[0] == "healthcheck":
        from service.supervisor.healthcheck import main_healthcheck

        return main_healthcheck(argv[1:])
    parser = argparse.ArgumentParser(prog="graphql-service", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the supervisor (gunicorn arbiter) and N workers")
    p.add_argument("--workers", type=int)
    p.add_argument("--socket-dir")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("run", help="migrations + supervisor + private nginx (development stack)")
    p.add_argument("--workers", type=int)
    p.add_argument("--port", type=int)
    p.add_argument("--socket-dir")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("migrate", help="create the database if missing and apply migrations")
    p.set_defaults(func=cmd_migrate)
    sub.add_parser("nginx-config", help="write the per-host nginx files (see its --help)")
    sub.add_parser("healthcheck", help="exit 0 if every worker slot answers /healthz")
    p = sub.add_parser("token", help="print a development JWT signed with the configured key")
    p.add_argument("--sub", required=True)
    p.add_argument("--name")
    p.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    p.set_defaults(func=cmd_token)
    p = sub.add_parser("schema", help="print the served schema (APP) as SDL")
    p.add_argument("--app", help="module:attribute of the schema (default: APP)")
    p.set_defaults(func=cmd_schema)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
