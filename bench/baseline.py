"""The reference ceiling: the least an httptools + uvloop server can do per request.

Every request, whatever its method or path, gets the same bytes ``{ hello }`` returns through
the GraphQL server, so the difference to it is the cost of the GraphQL service itself (routing,
request shaping, the engine, JSON). Run: ``python -m bench.baseline PORT`` (127.0.0.1; SIGTERM or
SIGINT stops it).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import httptools
import uvloop

BODY = b'{"data":{"hello":"Hello, world!"}}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
    b"\r\n" + BODY
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HelloProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each with ``RESPONSE``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(BAD_REQUEST)
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callback
    def on_message_complete(self) -> None:
        if self.transport is None:
            return
        self.transport.write(RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m bench.baseline PORT", file=sys.stderr)
        return 2
    uvloop.run(serve(int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
