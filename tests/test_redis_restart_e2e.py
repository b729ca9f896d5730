"""A live WebSocket subscription survives a Redis restart (our own redis-server on a free port)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from service.broker.base import BrokerUnavailable
from service.server.serve import Server, serve
from service.settings import Settings
from tests.schemas import Ticker, schema
from tests.stack import free_port

pytestmark = pytest.mark.timeout(90)


class RedisProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="gsredis")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                redis_server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    redis = RedisProcess(free_port())
    try:
        yield redis
    finally:
        redis.stop()
        shutil.rmtree(redis.dir, ignore_errors=True)


async def wait_for_redis(port: int) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert loop.time() < deadline, "redis-server did not start"
            await asyncio.sleep(0.02)
        else:
            writer.close()
            await writer.wait_closed()
            return


async def test_subscription_keeps_receiving_after_redis_restart(
    redis_process: RedisProcess,
) -> None:
    from prometheus_client import REGISTRY

    reconnects_before = REGISTRY.get_sample_value("graphql_broker_reconnects_total") or 0
    redis_process.start()
    await wait_for_redis(redis_process.port)
    settings = Settings(redis_url=f"redis://127.0.0.1:{redis_process.port}/0")
    srv = await serve(schema, [{"protocol": "tcp", "port": 0}], run=False, settings=settings)
    assert isinstance(srv, Server)
    try:
        url = f"ws://127.0.0.1:{srv.tcp_port()}/graphql"
        async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack"
            query = 'subscription { ticker(group: "restart") { value } }'
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))

            async def publish_until_received(value: int) -> None:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while True:
                    assert loop.time() < deadline, "no event arrived"
                    try:
                        await Ticker.broadcast(group="restart", payload={"value": value})
                    except BrokerUnavailable:
                        await asyncio.sleep(0.05)
                        continue
                    try:
                        message = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                    except TimeoutError:
                        continue
                    assert message["payload"]["data"]["ticker"]["value"] == value
                    return

            await publish_until_received(1)
            redis_process.stop()
            with pytest.raises(BrokerUnavailable):
                await Ticker.broadcast(group="restart", payload={"value": -1})
            redis_process.start()
            await wait_for_redis(redis_process.port)
            await publish_until_received(2)
        reconnects = REGISTRY.get_sample_value("graphql_broker_reconnects_total") or 0
        assert reconnects > reconnects_before
    finally:
        await srv.close(2.0)
