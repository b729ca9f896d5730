"""Compare the two sans-I/O WebSocket libraries on this service's hot path, and the ways of
framing a server text message with websockets.

Measures, in one run, the cost per message of (a) parsing a masked client text frame into an
event and (b) serializing a server text frame, for websockets' ``ServerProtocol`` and wsproto's
``WSConnection``; then, for the frame the server writes per notification, websockets'
``send_text`` + ``data_to_send``, ``Frame.serialize``, and the server's own ``_frame`` (the
header ``Frame.serialize`` made for the payload's length, reused). Prints microseconds per
message and the ratios. Run: ``python -m bench.ws_framing``.
"""

from __future__ import annotations

import os
import time

import websockets.frames
from websockets.frames import Frame, Opcode
from websockets.protocol import CLIENT, SERVER
from websockets.protocol import Protocol as WSProtocol
from wsproto import ConnectionType, WSConnection
from wsproto.frame_protocol import FrameProtocol

from service.server.ws_native import NativeWebSocket

N = 20000
MESSAGE = '{"id":"1","type":"next","payload":{"data":{"onNewChatMessage":{"text":"hello"}}}}'


def client_frames(count: int) -> bytes:
    client = WSProtocol(CLIENT)
    for _ in range(count):
        client.send_text(MESSAGE.encode())
    return b"".join(client.data_to_send())


def bench_websockets(data: bytes) -> tuple[float, float]:
    server = WSProtocol(SERVER, max_size=2**20)
    t0 = time.perf_counter()
    server.receive_data(data)
    events = server.events_received()
    parse = (time.perf_counter() - t0) / N
    assert len(events) == N and isinstance(events[0], websockets.frames.Frame)
    payload = MESSAGE.encode()
    t0 = time.perf_counter()
    for _ in range(N):
        server.send_text(payload)
        server.data_to_send()
    send = (time.perf_counter() - t0) / N
    return parse, send


def bench_wsproto(data: bytes) -> tuple[float, float]:
    conn = WSConnection(ConnectionType.SERVER)
    # Skip the handshake: drive the frame layer the connection uses after the upgrade.
    proto = FrameProtocol(client=False, extensions=[])
    t0 = time.perf_counter()
    proto.receive_bytes(data)
    frames = list(proto.received_frames())
    parse = (time.perf_counter() - t0) / N
    assert len(frames) == N
    t0 = time.perf_counter()
    for _ in range(N):
        proto.send_data(MESSAGE, True)
    send = (time.perf_counter() - t0) / N
    del conn
    return parse, send


class _Open:
    """What ``NativeWebSocket._frame`` reads of its connection: open, no extension."""

    def __init__(self) -> None:
        self.ws = WSProtocol(SERVER)
        self.transport = object()


def bench_server_frames() -> dict[str, float]:
    """Seconds per server text frame of ``MESSAGE``: websockets' ``send_text`` and
    ``data_to_send``, ``Frame.serialize``, and ``NativeWebSocket._frame``; all the same bytes."""
    payload = MESSAGE.encode()
    server = WSProtocol(SERVER)
    server.send_text(payload)
    expected = b"".join(server.data_to_send())
    conn = _Open()
    frame = NativeWebSocket._frame
    assert frame(conn, payload) == expected  # type: ignore[arg-type]
    assert Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[]) == expected
    out = {}
    t0 = time.perf_counter()
    for _ in range(N):
        server.send_text(payload)
        server.data_to_send()
    out["send_text"] = (time.perf_counter() - t0) / N
    t0 = time.perf_counter()
    for _ in range(N):
        Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    out["serialize"] = (time.perf_counter() - t0) / N
    t0 = time.perf_counter()
    for _ in range(N):
        frame(conn, payload)  # type: ignore[arg-type]
    out["reused header"] = (time.perf_counter() - t0) / N
    return out


def main() -> None:
    data = client_frames(N)
    ws = bench_websockets(data)
    wp = bench_wsproto(data)
    print(f"messages: {N}, {len(MESSAGE)} bytes each, pid {os.getpid()}")
    print(
        f"websockets ServerProtocol: parse {ws[0] * 1e6:.2f} us/msg, send {ws[1] * 1e6:.2f} us/msg"
    )
    print(
        f"wsproto:                   parse {wp[0] * 1e6:.2f} us/msg, send {wp[1] * 1e6:.2f} us/msg"
    )
    print(f"ratio wsproto/websockets:  parse {wp[0] / ws[0]:.1f}x, send {wp[1] / ws[1]:.1f}x")
    frames = bench_server_frames()
    fastest = min(frames.values())
    for name, seconds in frames.items():
        print(
            f"server text frame, {name + ':':<15} {seconds * 1e6:.2f} us/msg "
            f"({seconds / fastest:.1f}x the fastest)"
        )


if __name__ == "__main__":
    main()
