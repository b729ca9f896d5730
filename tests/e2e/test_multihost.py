"""Several hosts behind a load balancer, as the README's multi-host section describes them.

Three hosts (a, b, c) are network namespaces on one bridge, each with its own address, its own
supervisor (two workers) and its own nginx on port 8080; they share this machine's Postgres (one
database, migrated by all three at once) and Redis, reached through forwarders on the bridge
address (``support/multihost.py``, ``support/netns.py``). An nginx in the root namespace
balances over the hosts' nginx.

- A subscriber on host a receives the event of a mutation sent to host b, on both subprotocols.
- Host b's supervisor killed with SIGKILL: host a keeps serving, and its subscribers keep
  receiving events, now from mutations sent to host c; host b's nginx answers 502.
- Through the balancer, under a steady load of GET queries: host b crashes (everything killed)
  and comes back, host c is stopped gracefully and comes back; no request fails, and each host
  serves requests again after it rejoins.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from websockets.asyncio.client import ClientConnection, connect

from support import multihost, netns
from support.load import HelloLoad
from support.multihost import Cluster, Host
from support.polling import poll_until

pytestmark = pytest.mark.timeout(120)

SUBPROTOCOLS = ("graphql-transport-ws", "graphql-ws")
HELLO = {"data": {"hello": "Hello, world!"}}
SEND_CHAT = """mutation($room: String!, $text: String!) {
  sendChatMessage(chatroom: $room, text: $text) { text }
}"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = netns.missing_tools()
    if missing:
        pytest.skip(f"no network namespaces here: missing {', '.join(missing)}")
    # Subscriptions confirm that they are live ({"data": null}) before the tests publish.
    with Cluster(env={"CONFIRM_SUBSCRIPTIONS": "true"}) as c:
        yield c


def send_chat(host: Host, chatroom: str, text: str) -> None:
    """``sendChatMessage`` through the host's nginx (POST)."""
    body = json.dumps({"query": SEND_CHAT, "variables": {"room": chatroom, "text": text}}).encode()
    conn = http.client.HTTPConnection(host.address, multihost.HOST_PORT, timeout=10)
    try:
        conn.request("POST", "/graphql", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        data = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200 and data == {"data": {"sendChatMessage": {"text": text}}}, data


async def subscribe(host: Host, subprotocol: str, chatroom: str) -> ClientConnection:
    """A live ``onNewChatMessage(chatroom)`` subscription through the host's nginx."""
    ws = await connect(
        f"ws://{host.address}:{multihost.HOST_PORT}/graphql",
        subprotocols=[subprotocol],  # type: ignore[list-item]
        open_timeout=10,
    )
    await ws.send(json.dumps({"type": "connection_init"}))
    ack = await receive(ws)
    assert ack["type"] == "connection_ack", ack
    start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
    query = f'subscription {{ onNewChatMessage(chatroom: "{chatroom}") {{ text }} }}'
    await ws.send(json.dumps({"id": "1", "type": start, "payload": {"query": query}}))
    confirmed = await receive(ws)
    assert confirmed["payload"] == {"data": None}, confirmed  # joined its group: live
    return ws


async def receive(ws: ClientConnection) -> dict[str, Any]:
    """The next message, skipping graphql-ws keepalives (``ka``)."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] != "ka":
            return message


async def next_text(ws: ClientConnection) -> str:
    message = await receive(ws)
    assert message["type"] in ("next", "data"), message
    text: str = message["payload"]["data"]["onNewChatMessage"]["text"]
    return text


async def roundtrip(subscribers: list[ClientConnection], via: Host, chatroom: str) -> None:
    """A message sent to ``via`` reaches every subscriber."""
    text = f"from {via.name} {secrets.token_hex(4)}"
    await asyncio.to_thread(send_chat, via, chatroom, text)
    assert [await next_text(ws) for ws in subscribers] == [text] * len(subscribers)


def test_a_subscriber_on_one_host_gets_a_mutation_sent_to_another(cluster: Cluster) -> None:
    a, b = cluster.hosts["a"], cluster.hosts["b"]
    chatroom = f"multihost-{secrets.token_hex(4)}"

    async def scenario() -> None:
        subscribers = [await subscribe(a, sp, chatroom) for sp in SUBPROTOCOLS]
        try:
            await roundtrip(subscribers, via=b, chatroom=chatroom)
        finally:
            for ws in subscribers:
                await ws.close()

    asyncio.run(scenario())


def test_a_host_killed_leaves_the_others_serving_and_delivering(cluster: Cluster) -> None:
    a, b, c = (cluster.hosts[n] for n in "abc")
    chatroom = f"multihost-{secrets.token_hex(4)}"

    async def scenario() -> None:
        subscribers = [await subscribe(a, sp, chatroom) for sp in SUBPROTOCOLS]
        try:
            await roundtrip(subscribers, via=b, chatroom=chatroom)
            b.kill_supervisor()
            # b's workers notice that their arbiter is gone and exit; its nginx then has no
            # worker left to pass requests to.
            await asyncio.to_thread(
                poll_until,
                lambda: multihost.graphql_get(b.url, "{ hello }")[0] == 502,
                timeout_s=20,
                what="host b's nginx to answer 502",
            )
            status, body = await asyncio.to_thread(multihost.graphql_get, a.url, "{ hello }")
            assert (status, json.loads(body)) == (200, HELLO)
            await roundtrip(subscribers, via=c, chatroom=chatroom)
        finally:
            for ws in subscribers:
                await ws.close()

    try:
        asyncio.run(scenario())
    finally:
        b.stop()
        b.start()  # back for the next test


def served_by(cluster: Cluster, host: Host, since: int) -> int:
    """Requests of the balancer's log (from entry ``since``) that ``host`` answered with 200."""
    assert cluster.balancer is not None
    answered = 0
    for entry in cluster.balancer.entries()[since:]:
        last_upstream = str(entry["upstream"]).split(", ")[-1]
        last_status = str(entry["upstream_status"]).split(", ")[-1]
        if last_upstream == f"{host.address}:{multihost.HOST_PORT}" and last_status == "200":
            answered += 1
    return answered


def test_hosts_leave_and_rejoin_the_balancer_without_a_failed_request(cluster: Cluster) -> None:
    assert cluster.balancer is not None
    balancer = cluster.balancer
    b, c = cluster.hosts["b"], cluster.hosts["c"]
    parts = urlsplit(balancer.url)

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=15)

    with HelloLoad(connect, method="GET", path=parts.path) as load:
        load.more(300, "with every host up")
        assert all(served_by(cluster, h, 0) for h in cluster.hosts.values())

        # b crashes: supervisor and nginx killed at once. Requests on their way to it are
        # refused or reset, and the balancer passes them to another host.
        b.crash()
        load.more(300, "while host b is down")
        mark = len(balancer.entries())
        b.start()
        poll_until(
            lambda: served_by(cluster, b, mark) >= 20,
            timeout_s=30,
            what="host b to serve through the balancer again",
        )

        # c leaves gracefully (nginx stops, then the supervisor drains), then comes back.
        c.stop()
        load.more(300, "while host c is away")
        mark = len(balancer.entries())
        c.start()
        poll_until(
            lambda: served_by(cluster, c, mark) >= 20,
            timeout_s=30,
            what="host c to serve through the balancer again",
        )
        load.more(100, "after both rejoined")
    assert set(load.outcomes) == {"ok"}, load.outcomes
    # The balancer did pass requests on: some went to a host that was away, then to another.
    entries = balancer.entries()
    retried = [e for e in entries if ", " in str(e["upstream"])]
    assert retried, "no request met a host that was away"
    assert all(e["status"] == 200 for e in entries), Counter(e["status"] for e in entries)
