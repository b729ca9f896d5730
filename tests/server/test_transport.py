"""The native transport over real TCP and unix sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.server.serve import Server, build_server, serve
from service.settings import Settings
from support.polling import apoll_until
from support.schemas import schema


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    tmp = tempfile.mkdtemp(prefix="gs", dir="/tmp")
    path = os.path.join(tmp, "s")
    settings = Settings(
        max_body_bytes=64 * 1024,
        keepalive_timeout_s=0.5,
        request_read_timeout_s=0.5,
        max_header_bytes=8192,
    )
    srv = await serve(
        schema,
        [{"protocol": "tcp", "port": 0}, {"protocol": "unix", "path": path}],
        run=False,
        settings=settings,
    )
    assert isinstance(srv, Server)
    srv.unix_path = path  # type: ignore[attr-defined]
    srv.test_writers = []  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        for writer in srv.test_writers:  # type: ignore[attr-defined]
            writer.close()
        await srv.close(1.0)
        for writer in srv.test_writers:  # type: ignore[attr-defined]
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        os.rmdir(tmp)


def post(query: str, *, extra: bytes = b"", keep_alive: bool = True) -> bytes:
    body = json.dumps({"query": query}).encode()
    conn = b"" if keep_alive else b"Connection: close\r\n"
    return (
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        + conn
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def open_tcp(
    srv: Server, port: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port or srv.tcp_port())
    srv.test_writers.append(writer)  # type: ignore[attr-defined]
    return reader, writer


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_keep_alive_serves_many_requests_on_one_connection(server: Server, kind: str) -> None:
    if kind == "tcp":
        reader, writer = await open_tcp(server)
    else:
        reader, writer = await asyncio.open_unix_connection(server.unix_path)  # type: ignore[attr-defined]
        server.test_writers.append(writer)  # type: ignore[attr-defined]
    for i in range(5):
        writer.write(post(f'{{ hello(name: "n{i}") }}'))
        status, headers, body = await read_response(reader)
        assert status == 200
        assert json.loads(body) == {"data": {"hello": f"Hello, n{i}!"}}
        assert "connection" not in headers
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reader, writer = await open_tcp(server)
    queries = [
        "{ slow(seconds: 0.2) }",
        '{ hello(name: "b") }',
        "{ slow(seconds: 0.05) }",
        '{ hello(name: "d") }',
    ]
    writer.write(b"".join(post(q) for q in queries))
    bodies = [json.loads((await read_response(reader))[2]) for _ in queries]
    assert bodies == [
        {"data": {"slow": "slept 0.2"}},
        {"data": {"hello": "Hello, b!"}},
        {"data": {"slow": "slept 0.05"}},
        {"data": {"hello": "Hello, d!"}},
    ]
    writer.close()


async def test_query_split_into_many_small_reads(server: Server) -> None:
    query = "#" + "c" * 10 * 1024 + "\n{ hello }"
    data = post(query)
    reader, writer = await open_tcp(server)
    for i in range(0, len(data), 7):
        writer.write(data[i : i + 7])
        await writer.drain()
    status, _, body = await read_response(reader)
    assert status == 200 and json.loads(body) == {"data": {"hello": "Hello, world!"}}
    writer.close()


async def test_chunked_body_and_expect_continue(server: Server) -> None:
    reader, writer = await open_tcp(server)
    body = json.dumps({"query": "{ hello }"}).encode()
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await reader.readuntil(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    half = len(body) // 2
    writer.write(
        b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
    )
    status, _, payload = await read_response(reader)
    assert status == 200 and json.loads(payload)["data"]["hello"] == "Hello, world!"
    writer.close()


async def test_oversized_body_gets_413_before_it_is_sent(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n"
    )
    status, headers, body = await read_response(reader)
    assert status == 413 and headers["connection"] == "close"
    assert "larger than the limit" in json.loads(body)["errors"][0]["message"]
    assert await reader.read() == b""


async def test_oversized_chunked_body_gets_413(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(
        b"POST /graphql HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 16384
    for _ in range(5):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    status, _, _ = await read_response(reader)
    assert status == 413


async def test_oversized_headers_get_431(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(
        b"GET /graphql?query=%7Bhello%7D HTTP/1.1\r\nHost: t\r\nX-Big: "
        + b"a" * 10000
        + b"\r\n\r\n"
    )
    status, _, _ = await read_response(reader)
    assert status == 431


async def test_malformed_http_gets_400(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 400 and "Malformed" in json.loads(body)["errors"][0]["message"]


# Read and idle timeouts: tests/adapters/test_http_protocol.py, on a fake clock.


async def test_client_disconnect_mid_request_cancels_and_server_stays_healthy(
    server: Server,
) -> None:
    _, writer = await open_tcp(server)
    writer.write(post("{ slow(seconds: 3) }"))
    await writer.drain()
    # Poll until the server has the connection busy, then drop it.
    conn = None
    for _ in range(200):
        busy = [c for c in server.connections if c.busy]
        if busy:
            conn = busy[0]
            break
        await asyncio.sleep(0.01)
    assert conn is not None and conn.task is not None
    task = conn.task
    writer.transport.abort()
    for _ in range(200):
        if task.done():
            break
        await asyncio.sleep(0.01)
    assert task.cancelled()
    reader2, writer2 = await open_tcp(server)
    writer2.write(post("{ hello }"))
    assert (await read_response(reader2))[0] == 200
    writer2.close()


async def test_concurrent_slow_resolvers_overlap(server: Server) -> None:
    async def one() -> tuple[float, float]:
        reader, writer = await open_tcp(server)
        loop = asyncio.get_running_loop()
        start = loop.time()
        writer.write(post("{ slow(seconds: 0.5) }"))
        status, _, _ = await read_response(reader)
        writer.close()
        assert status == 200
        return start, loop.time()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    spans = await asyncio.gather(*(one() for _ in range(5)))
    elapsed = loop.time() - t0
    # All five were in flight together: every one started before the first one finished.
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    assert elapsed < 2.5  # the sum of the five; concurrent execution takes about 0.5 s


async def test_http10_without_keepalive_closes(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(b"GET /graphql?query=%7Bhello%7D HTTP/1.0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers.get("connection") == "close"
    assert await reader.read() == b""


async def test_health_endpoints(server: Server) -> None:
    reader, writer = await open_tcp(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert (await read_response(reader))[0] == 200
    writer.close()


async def test_close_drains_inflight_request(server: Server) -> None:
    port = server.tcp_port()
    reader, writer = await open_tcp(server)
    writer.write(post("{ slow(seconds: 0.3) }"))
    await writer.drain()
    for _ in range(200):
        if any(c.busy for c in server.connections):
            break
        await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(server.close(5.0))
    status, headers, body = await read_response(reader)
    assert status == 200 and json.loads(body)["data"]["slow"] == "slept 0.3"
    assert headers.get("connection") == "close"
    await closing
    with pytest.raises(OSError):
        await open_tcp(server, port)


async def idle_connection(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A keep-alive connection that has had one request answered and is now idle, as in a
    proxy's pool."""
    reader, writer = await open_tcp(server)
    writer.write(post("{ hello }"))
    await writer.drain()
    assert (await read_response(reader))[0] == 200
    return reader, writer


async def test_an_idle_connection_answers_one_more_request_while_lingering(
    server: Server,
) -> None:
    reader, writer = await idle_connection(server)
    closing = asyncio.ensure_future(server.close(5.0, idle_linger_s=3.0))
    await apoll_until(lambda: server.closed, timeout_s=5, what="the stop to begin")
    # A proxy sends on its pooled connection just as the stop began: it gets its answer.
    writer.write(post("{ hello }"))
    await writer.drain()
    status, headers, body = await read_response(reader)
    assert status == 200 and json.loads(body) == {"data": {"hello": "Hello, world!"}}
    assert headers.get("connection") == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection closes after it
    await asyncio.wait_for(closing, 5)


async def test_a_lingering_idle_connection_closes_when_no_request_comes(server: Server) -> None:
    reader, _ = await idle_connection(server)
    closing = asyncio.ensure_future(server.close(5.0, idle_linger_s=0.2))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    await asyncio.wait_for(closing, 5)
    assert not server.connections


def test_unix_socket_stale_file_replaced_live_one_refused() -> None:
    tmp = tempfile.mkdtemp(prefix="gs", dir="/tmp")
    path = os.path.join(tmp, "w")

    async def scenario() -> None:
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()  # the file stays, nothing listens
        srv = await serve(
            schema, [{"protocol": "unix", "path": path}], run=False, settings=Settings()
        )
        assert isinstance(srv, Server)
        assert os.stat(path).st_mode & 0o777 == 0o666
        with pytest.raises(OSError, match="another server is listening"):
            await serve(
                schema, [{"protocol": "unix", "path": path}], run=False, settings=Settings()
            )
        await srv.close(0.5)

    asyncio.run(scenario())
    assert not os.path.exists(path)
    os.rmdir(tmp)


@pytest.mark.parametrize(
    "listen",
    [[{"protocol": "udp", "port": 1}], [{"protocol": "tcp"}], [{"protocol": "unix"}], [], ["tcp"]],
)
def test_bad_listen_is_value_error(listen: Any) -> None:
    with pytest.raises(ValueError):
        serve(schema, listen, run=False)


async def test_pipelined_backlog_pauses_reading_then_drains_in_order(server: Server) -> None:
    reader, writer = await open_tcp(server)
    count = 40
    writer.write(
        b"".join(post(f'{{ slow(seconds: 0.01) h{i}: hello(name: "{i}") }}') for i in range(count))
    )
    await writer.drain()
    paused_seen = False
    for _ in range(500):  # poll until the server paused reading on the backlog
        if any(c.read_paused for c in server.connections):
            paused_seen = True
            break
        await asyncio.sleep(0.005)
    assert paused_seen
    names = []
    for i in range(count):
        status, _, body = await read_response(reader)
        assert status == 200
        names.append(json.loads(body)["data"][f"h{i}"])
    assert names == [f"Hello, {i}!" for i in range(count)]
    assert not any(c.read_paused for c in server.connections)


async def test_reuse_port_lets_two_servers_share_a_tcp_port() -> None:
    first = await serve(
        schema,
        [{"protocol": "tcp", "port": 0, "reuse_port": True}],
        run=False,
        settings=Settings(redis_url=""),
    )
    port = first.tcp_port()
    second = build_server(
        schema,
        [{"protocol": "tcp", "port": port, "reuse_port": True}],
        settings=Settings(redis_url=""),
    )
    try:
        await second.start()
        assert second.tcp_port() == port
        without = build_server(
            schema, [{"protocol": "tcp", "port": port}], settings=Settings(redis_url="")
        )
        with pytest.raises(OSError):
            await without.start()
    finally:
        await second.close(0.5)
        await first.close(0.5)
    with pytest.raises(ValueError, match="reuse_port"):
        build_server(schema, [{"protocol": "tcp", "port": 0, "reuse_port": "yes"}])
