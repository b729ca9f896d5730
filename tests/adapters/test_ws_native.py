"""The native WebSocket adapter against a fake transport: a client that sends but never reads
cannot make the worker buffer without bound (issue: 200k pings grew a worker by 52 MB)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import SERVER
from websockets.protocol import Protocol as WSProtocol
from websockets.uri import parse_uri

from service.engine.executor import Engine
from service.engine.http import HTTPRequest
from service.server.ws_native import NativeWebSocket
from service.server.ws_session import ConnectApp
from service.settings import Settings
from support.schemas import schema
from tests.adapters.fakes import FakeTransport


class FakeHTTP:
    """What ``NativeWebSocket`` takes over from the HTTP protocol."""

    def __init__(self, transport: FakeTransport) -> None:
        self.transport = transport
        self.connections: set[Any] = set()


def upgrade(**overrides: Any) -> tuple[NativeWebSocket, FakeTransport, ClientProtocol]:
    settings = Settings(redis_url="", ws_keepalive_s=0, **overrides)
    app = ConnectApp(Engine(schema, settings), settings)
    client = ClientProtocol(parse_uri("ws://test/graphql"), subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    handshake = client.connect()
    headers = {name.lower(): value for name, value in handshake.headers.raw_items()}
    request = HTTPRequest("GET", "/graphql", "", headers, b"", "test", "req-1")
    transport = FakeTransport(high_water=65_536)
    ws = NativeWebSocket(app, FakeHTTP(transport), request, "/graphql")
    transport.protocol = ws
    ws.start(b"")
    client.receive_data(transport.take())
    assert client.events_received()[0].status_code == 101  # type: ignore[union-attr]
    transport.drain()
    return ws, transport, client


def frames(client: ClientProtocol, *texts: str) -> bytes:
    for text in texts:
        client.send_text(text.encode())
    return b"".join(client.data_to_send())


async def test_a_client_that_never_reads_is_closed_with_1008() -> None:
    ws, transport, client = upgrade(ws_max_unread_bytes=200_000)
    ws.data_received(frames(client, json.dumps({"type": "connection_init"})))
    await asyncio.sleep(0)
    # Pings the client never reads the pongs of, until the transport is over its mark.
    ping = json.dumps({"type": "ping", "payload": {"pad": "x" * 200}})
    for _ in range(2000):
        if transport.closed:
            break
        ws.data_received(frames(client, *[ping] * 50))
    assert transport.closed and transport.aborted
    assert transport.buffered < 65_536 + 200_000 + 50 * 300  # bounded: no more than one batch
    client.receive_data(transport.take())
    closes = [
        e for e in client.events_received() if isinstance(e, Frame) and e.opcode is Opcode.CLOSE
    ]
    assert closes and closes[-1].data[:2] == (1008).to_bytes(2, "big")


async def test_reading_pauses_while_the_client_is_not_reading() -> None:
    ws, transport, _client = upgrade()
    ws.pause_writing()
    assert not transport.reading
    assert ws.session is not None and not ws.session.writable.is_set()
    ws.resume_writing()
    assert transport.reading and ws.session.writable.is_set()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 300),
            st.sampled_from([125, 126, 127, 65_535, 65_536, 65_537]),
            st.integers(0, 70_000),
        ),
        min_size=1,
        max_size=4,
    ),
    st.characters(codec="utf-8", exclude_categories=["Cs"]),
)
def test_frames_with_reused_headers_equal_websockets_own(sizes: list[int], char: str) -> None:
    """``_send_utf8`` reuses a header per payload length: each frame it writes is byte for byte
    the one websockets' ``send_text`` makes, and the client reads the same text back."""

    async def check() -> None:
        ws, transport, client = upgrade()
        reference = WSProtocol(SERVER)
        for size in sizes:
            data = (char * size).encode()
            ws._send_utf8(data)
            reference.send_text(data)
            written = transport.take()
            transport.drain()  # the client read it
            assert written == b"".join(reference.data_to_send())
            client.receive_data(written)
            [frame] = client.events_received()
            assert isinstance(frame, Frame) and frame.opcode is Opcode.TEXT and frame.fin
            assert frame.data == data

    asyncio.run(check())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 2)),
        min_size=1,
        max_size=12,
    ),
    st.lists(st.text(max_size=300), min_size=3, max_size=3),
    st.lists(st.text(min_size=1, max_size=20), min_size=3, max_size=3),
)
def test_shared_result_frames_equal_websockets_own(
    sends: list[tuple[int, int, int]], texts: list[str], ids: list[str]
) -> None:
    """``_send_result`` reuses the frame it made for the same result bytes and head, across
    connections: every frame written is byte for byte websockets' own for that message."""

    async def check() -> None:
        sockets = [upgrade() for _ in range(3)]
        results = [t.encode() for t in texts]  # the same objects, sent again and again
        heads = [f'{{"type":"next","id":{json.dumps(i)},"payload":'.encode() for i in ids]
        reference = WSProtocol(SERVER)
        for which, result_index, head_index in sends:
            ws, transport, _client = sockets[which]
            head, result = heads[head_index], results[result_index % 3]
            ws._send_result(head, result)
            reference.send_text(head + result + b"}")
            assert transport.take() == b"".join(reference.data_to_send())
            transport.drain()

    asyncio.run(check())
