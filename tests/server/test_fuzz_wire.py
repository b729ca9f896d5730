"""Hostile input over the wire: a real in-process server survives what a scanner sends.

``tests/unit/test_fuzz.py`` fuzzes the HTTP core and both WebSocket machines without sockets;
here a server on TCP port 0 gets random and malformed bytes over several connections (each
answered with a 4xx or a close, every such connection dropped, ``{ hello }`` still served) and
WebSocket frames carrying lone UTF-16 surrogates (a client error, never a 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.protocols.ws_messages import TRANSPORT_WS_SUBPROTOCOL
from service.server.application import make_ws_authenticator
from service.server.serve import Server, serve
from service.settings import Settings
from support.polling import apoll_until
from support.schemas import schema

HOSTILE: list[bytes] = [
    b"\x00" * 64,
    b"\r\n" * 50 + b"\xff\xfe",
    b"GET /graphql HTTP/9.9\r\n\r\n",
    b"GET /graphql HTTP/1.1\r\nHost: x\r\n\r\n",  # no query: 400
    b"POST /graphql HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"POST /graphql HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"POST /graphql HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /graphql HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /graphql HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
    b"GET /graphql HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    b"GET /graphql HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",  # no key
    b"GET /graphql HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # an HTTP/2 preface
]


async def exchange(port: int, data: bytes, half_close: bool, timeout_s: float = 5.0) -> bytes:
    """Send ``data`` (then half-close if told) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
        try:
            return await asyncio.wait_for(reader.read(), timeout_s)
        except ConnectionError:
            return b""  # reset by the server: closing is an acceptable answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(raw: bytes) -> int | None:
    if not raw:
        return None
    line = raw.split(b"\r\n", 1)[0].decode("latin-1")
    assert line.startswith("HTTP/1.1 "), raw[:200]
    return int(line.split()[1])


async def test_live_server_survives_random_bytes() -> None:
    # Short timeouts: a client that stops mid-request is answered 408 or dropped quickly.
    settings = Settings(redis_url="", request_read_timeout_s=0.5, keepalive_timeout_s=0.5)
    srv = await serve(schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings)
    assert isinstance(srv, Server)
    try:
        port = srv.tcp_port()
        rng = random.Random(20240611)
        payloads = HOSTILE + [rng.randbytes(rng.randint(1, 4096)) for _ in range(20)]
        # Each payload twice: once followed by EOF, once left hanging (the server must not wait
        # for the rest forever). A few connections at a time, as a scanner would.
        sends = [(data, half_close) for data in payloads for half_close in (True, False)]
        for start in range(0, len(sends), 10):
            batch = sends[start : start + 10]
            answers = await asyncio.gather(*(exchange(port, *send) for send in batch))
            for (data, _), raw in zip(batch, answers, strict=True):
                status = status_of(raw)
                assert status is None or 400 <= status < 500, (data[:80], raw[:300])
                if status is not None:
                    head, _, body = raw.partition(b"\r\n\r\n")
                    assert body, raw[:300]  # every refusal says why
                    if b"content-type: application/json" in head.lower():
                        assert json.loads(body)["errors"][0]["message"]
        # Every fuzz connection is gone, and the worker still serves.
        await apoll_until(
            lambda: not srv.connections,
            timeout_s=5,
            what="the server to drop the fuzz connections",
        )
        query = b'{"query":"{ hello }"}'
        raw = await exchange(
            port,
            b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(query) + query,
            half_close=True,
        )
        assert status_of(raw) == 200
        assert json.loads(raw.partition(b"\r\n\r\n")[2]) == {"data": {"hello": "Hello, world!"}}
    finally:
        await srv.close(2.0)


# JSON may spell a lone UTF-16 surrogate ("\\ud800"): valid JSON, but no valid text. orjson
# refuses such bodies over HTTP; a WebSocket frame must not get further either.
LONE = "@LONE@"


def with_lone_surrogate(message: dict[str, Any]) -> str:
    """``message`` as JSON text, with every ``LONE`` spelled as the escape ``\\ud800``."""
    return json.dumps(message).replace(LONE, "\\ud800")


SURROGATE_FRAMES: list[tuple[str, bool, str]] = [
    (
        "token",
        False,
        with_lone_surrogate({"type": "connection_init", "payload": {"authToken": LONE}}),
    ),
    (
        "variable",
        True,
        with_lone_surrogate(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {
                    "query": "query($n: String) { hello(name: $n) }",
                    "variables": {"n": LONE},
                },
            }
        ),
    ),
    (
        "long document",
        True,
        with_lone_surrogate(
            {"id": "1", "type": "subscribe", "payload": {"query": "{ hello } #" + "x" * 200 + LONE}}
        ),
    ),
]


async def first_answer(ws: ClientConnection) -> tuple[str, Any]:
    """The server's first message, or its close code if it closes first."""
    try:
        return "message", json.loads(await asyncio.wait_for(ws.recv(), 5))
    except ConnectionClosed:
        return "close", ws.close_code


async def test_lone_surrogates_over_websocket_are_client_errors() -> None:
    settings = Settings(redis_url="", jwt_secret="g" * 40, max_document_bytes=100)
    srv = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}],
        run=False,
        settings=settings,
        authenticate=make_ws_authenticator(settings),
    )
    assert isinstance(srv, Server)
    url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
    try:
        wrong = []
        for name, needs_ack, frame in SURROGATE_FRAMES:
            async with connect(url, subprotocols=[TRANSPORT_WS_SUBPROTOCOL]) as ws:  # type: ignore[list-item]
                if needs_ack:
                    await ws.send('{"type":"connection_init"}')
                    assert (await first_answer(ws))[1]["type"] == "connection_ack"
                await ws.send(frame)
                kind, answer = await first_answer(ws)
                if kind == "close":
                    if answer not in {4400, 4403}:
                        wrong.append((name, answer))
                elif answer["type"] != "error" or (
                    answer["payload"][0].get("extensions", {}).get("code")
                    == "INTERNAL_SERVER_ERROR"
                ):
                    wrong.append((name, answer))
        assert wrong == []
    finally:
        await srv.close(2.0)
