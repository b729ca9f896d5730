"""Fixtures and markers for the whole suite.

The suite is a pyramid, one folder per layer, and each test gets the marker of its folder:

- ``unit``: pure tables (both WebSocket machines, the HTTP core, limits, codecs); no sockets, no
  event loop beyond what a test drives itself. ``pytest -m unit`` runs in seconds.
- ``adapters``: the transports and sessions against fake transports and a fake clock.
- ``server``: one real server in-process, with real Postgres and Redis.
- ``e2e``: the shipped bundle: gunicorn, nginx, Postgres, Redis, the CLI and deploy files.

``db_url`` (a fresh migrated database) and ``blank_db_url`` (no tables) are dropped after each
test; they live in ``support/dbutil.py``.
"""

from __future__ import annotations

import pathlib

import pytest

from support.dbutil import blank_db_url, db_url

__all__ = ["blank_db_url", "db_url"]

LAYERS = ("unit", "adapters", "server", "e2e")
_HERE = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        relative = pathlib.Path(str(item.path)).resolve().relative_to(_HERE)
        layer = relative.parts[0] if len(relative.parts) > 1 else None
        if layer not in LAYERS:
            raise pytest.UsageError(f"{relative}: tests live in one of {', '.join(LAYERS)}/")
        item.add_marker(getattr(pytest.mark, layer))
