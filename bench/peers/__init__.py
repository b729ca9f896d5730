"""Python GraphQL peers serving one tiny schema, for ``python -m bench peers``.

Every peer serves ``bench.peers.schema.SDL`` (``type Query { hello(name: String): String! }``)
on one process with its recommended production runner:

- this project's ``serve()`` (``bench/peers/service_serve.py``), the ratio's denominator;
- this project's ``service.asgi_app`` under uvicorn (``bench/peers/service_asgi.py``);
- strawberry-graphql's ``strawberry.asgi.GraphQL`` under uvicorn
  (``bench/peers/strawberry_app.py``);
- the same with strawberry's opt-in ``ParserCache`` and ``ValidationCache`` extensions
  (``bench/peers/strawberry_cached_app.py``): ``serve()`` caches validated documents by default,
  strawberry and ariadne parse and validate every request unless told otherwise;
- ariadne's ``ariadne.asgi.GraphQL`` under uvicorn (``bench/peers/ariadne_app.py``), as it
  comes: it has no cache of its own, only ``query_parser`` / ``query_validator`` hooks.

uvicorn runs as its own command line: ``python -m uvicorn MODULE:app --loop uvloop --http
httptools --log-level warning --no-access-log --workers 1``. The peers are the ``bench`` extra
(``pip install -e '.[bench]'``); a peer whose packages are missing is reported as skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util

UVICORN_FLAGS = (
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--log-level",
    "warning",
    "--no-access-log",
    "--workers",
    "1",
)


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """One server to measure: ``python -m <module> <args>``, ``{port}`` filled in."""

    key: str  # report row key
    label: str  # report row label
    module: str
    args: tuple[str, ...]
    # Import name -> distribution name of every package it needs beyond this project's own.
    needs: tuple[tuple[str, str], ...] = ()

    def command_args(self, port: int) -> list[str]:
        return [arg.replace("{port}", str(port)) for arg in self.args]

    def missing(self) -> str | None:
        """The distribution name of the first package not installed, or None."""
        for module, distribution in self.needs:
            if importlib.util.find_spec(module) is None:
                return distribution
        return None


def uvicorn_peer(key: str, label: str, app: str, *needs: tuple[str, str]) -> Peer:
    return Peer(
        key,
        label,
        "uvicorn",
        (app, "--host", "127.0.0.1", "--port", "{port}", *UVICORN_FLAGS),
        (("uvicorn", "uvicorn"), *needs),
    )


SERVE = Peer("peers_serve", "peers: serve()", "bench.peers.service_serve", ("{port}",))
PEERS = (
    SERVE,
    uvicorn_peer("peers_service_asgi", "peers: asgi_app, uvicorn", "bench.peers.service_asgi:app"),
    uvicorn_peer(
        "peers_strawberry",
        "peers: strawberry, uvicorn",
        "bench.peers.strawberry_app:app",
        ("strawberry", "strawberry-graphql"),
    ),
    uvicorn_peer(
        "peers_strawberry_cached",
        "peers: strawberry cached, uvicorn",
        "bench.peers.strawberry_cached_app:app",
        ("strawberry", "strawberry-graphql"),
    ),
    uvicorn_peer(
        "peers_ariadne",
        "peers: ariadne, uvicorn",
        "bench.peers.ariadne_app:app",
        ("ariadne", "ariadne"),
    ),
)

VERSIONED = ("graphql-core", "graphene", "uvicorn", "strawberry-graphql", "ariadne", "starlette")


def versions() -> str:
    """``name version`` of each package in ``VERSIONED`` that is installed."""
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(found)
