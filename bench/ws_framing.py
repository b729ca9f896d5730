"""Compare the two sans-I/O WebSocket libraries on this service's hot path.

Measures, in one run, the cost per message of (a) parsing a masked client text frame into an
event and (b) serializing a server text frame, for websockets' ``ServerProtocol`` and wsproto's
``WSConnection``. Prints microseconds per message and the ratio.
Run: ``python -m bench.ws_framing``.
"""

from __future__ import annotations

import os
import time

import websockets.frames
from websockets.protocol import CLIENT, SERVER
from websockets.protocol import Protocol as WSProtocol
from wsproto import ConnectionType, WSConnection
from wsproto.frame_protocol import FrameProtocol

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


if __name__ == "__main__":
    main()
