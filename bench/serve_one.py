"""One ``serve()`` process: the example schema on 127.0.0.1:PORT with uvloop.

Run: ``DATABASE_URL=... python -m bench.serve_one PORT``. It blocks until SIGTERM or SIGINT,
then drains, as ``serve()`` does for any user.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m bench.serve_one PORT", file=sys.stderr)
        return 2
    from service import serve
    from service.db import Database
    from service.example.schema import schema
    from service.server.application import make_context_getter
    from service.settings import Settings

    settings = Settings.from_env()
    database = Database(settings)  # the example's resolvers read it from the context
    serve(
        schema,
        [{"protocol": "tcp", "port": int(argv[1])}],
        enable_uvloop=True,
        settings=settings,
        get_context=make_context_getter(settings, database),
        on_close=[database.close],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
