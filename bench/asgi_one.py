"""The example schema through ``service.asgi_app`` under uvicorn (uvloop, httptools), if present.

uvicorn is not a dependency of this project; ``python -m bench`` runs this only when it is
installed. Run: ``DATABASE_URL=... python -m bench.asgi_one PORT``.
"""

from __future__ import annotations

import importlib.util
import sys


def available() -> bool:
    return importlib.util.find_spec("uvicorn") is not None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m bench.asgi_one PORT", file=sys.stderr)
        return 2
    import uvicorn

    from service import asgi_app
    from service.db import Database
    from service.example.schema import schema
    from service.server.application import make_context_getter
    from service.settings import Settings

    settings = Settings.from_env()
    database = Database(settings)  # the example's resolvers read it from the context
    uvicorn.run(
        asgi_app(schema, settings=settings, get_context=make_context_getter(settings, database)),
        host="127.0.0.1",
        port=int(argv[1]),
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
