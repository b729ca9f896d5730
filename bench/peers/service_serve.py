"""This project's ``serve()`` serving the peers' schema on 127.0.0.1:PORT with uvloop.

Run: ``python -m bench.peers.service_serve PORT``; SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m bench.peers.service_serve PORT", file=sys.stderr)
        return 2
    from bench.peers.graphene_schema import schema
    from service import serve

    serve(schema, [{"protocol": "tcp", "port": int(argv[1])}], enable_uvloop=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
