"""``service.testing.TestClient``: the workers' HTTP core and WebSocket session in-process, over
in-memory callbacks, with a fanout on the test's loop."""

from __future__ import annotations

import pytest

from service.broker import MemoryBroker
from service.settings import Settings
from service.subscriptions.fanout import attached
from service.testing import (
    ConnectionRefused,
    SubscriptionError,
    TestClient,
)
from support import schemas
from support.polling import apoll_until
from support.schemas import Ticker, schema

SECRET = "testing-client-secret-0123456789abcdef"
BOTH = ["graphql-transport-ws", "graphql-ws"]


async def test_queries_go_through_the_http_core() -> None:
    async with TestClient(schema) as client:
        ok = await client.query("query Hi($n: String) { hello(name: $n) }", {"n": "Ada"})
        assert ok.status == 200
        assert ok.data == {"hello": "Hello, Ada!"} and ok.errors is None
        assert ok.headers["content-type"].startswith("application/graphql-response+json")
        invalid = await client.query("{ nope }")
        assert invalid.status == 400
        assert invalid.errors is not None
        assert invalid.errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        legacy = await client.query("{ nope }", headers={"Accept": "application/json"})
        assert legacy.status == 200
        over_get = await client.query("{ hello }", method="GET")
        assert over_get.json == {"data": {"hello": "Hello, world!"}}
        mutation_over_get = await client.query("mutation { bump }", method="GET")
        assert mutation_over_get.status == 405
        assert mutation_over_get.headers["allow"] == "POST"
        masked = await client.query("{ boom }")
        assert masked.errors is not None
        assert masked.errors[0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"


async def test_the_context_and_tokens_are_the_workers() -> None:
    async with TestClient(schema, Settings(jwt_secret=SECRET)) as client:
        anonymous = await client.query("{ whoami }")
        assert anonymous.data == {"whoami": "None"}
        alice = await client.query("{ whoami }", headers=client.auth_headers("alice"))
        assert "'sub': 'alice'" in alice.data["whoami"]
        bad = await client.query("{ whoami }", headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        assert bad.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("subprotocol", BOTH)
async def test_subscriptions_yield_payloads_until_the_server_completes(subprotocol: str) -> None:
    async with TestClient(schema) as client:
        stream = client.subscribe("subscription { count(upto: 3) }", subprotocol=subprotocol)
        assert [payload async for payload in stream] == [
            {"data": {"count": 0}},
            {"data": {"count": 1}},
            {"data": {"count": 2}},
        ]
        assert [p async for p in client.subscribe("{ hello }", subprotocol=subprotocol)] == [
            {"data": {"hello": "Hello, world!"}}
        ]


@pytest.mark.parametrize("subprotocol", BOTH)
async def test_broadcasts_reach_a_started_subscription(subprotocol: str) -> None:
    async with TestClient(schema) as client:
        query = 'subscription { ticker(group: "tc") { value } }'
        async with client.subscribe(query, subprotocol=subprotocol) as sub:
            # Entered means joined: a broadcast right now is delivered.
            assert Ticker.group_key("tc") in attached().broker.groups()  # type: ignore[union-attr]
            await Ticker.broadcast(group="tc", payload={"value": 1})
            await client.broadcast(Ticker, "tc", {"value": 2})
            await Ticker.broadcast(group="elsewhere", payload={"value": 3})
            assert await sub.next() == {"data": {"ticker": {"value": 1}}}
            assert await sub.next() == {"data": {"ticker": {"value": 2}}}
            await sub.assert_no_messages(timeout_s=0.1)
            await Ticker.broadcast(group="tc", payload={"value": 4, "skip": True})
            await sub.assert_no_messages(timeout_s=0.1)
            # Server-side end: the iteration stops.
            await Ticker.unsubscribe(group="tc")
            assert [payload async for payload in sub] == []
        assert {"group": "tc"} in schemas.UNSUBSCRIBED


async def test_assert_no_messages_fails_when_something_arrives() -> None:
    query = 'subscription { ticker(group: "n") { value } }'
    async with TestClient(schema) as client, client.subscribe(query) as sub:
        await Ticker.broadcast(group="n", payload={"value": 7})
        with pytest.raises(AssertionError, match="expected no message"):
            await sub.assert_no_messages(timeout_s=1.0)
        assert await sub.next() == {"data": {"ticker": {"value": 7}}}  # still there


async def test_errors_and_refusals_raise() -> None:
    async with TestClient(schema, Settings(jwt_secret=SECRET)) as client:
        with pytest.raises(SubscriptionError) as failed:
            async for _ in client.subscribe("subscription { nope }"):
                pass
        assert failed.value.errors[0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        with pytest.raises(ConnectionRefused) as refused:
            await client.subscribe(
                "subscription { count }", connection_params={"authToken": "bad"}
            ).start()
        assert refused.value.code == 4403
        with pytest.raises(ConnectionRefused) as legacy:
            await client.subscribe(
                "subscription { count }",
                subprotocol="graphql-ws",
                connection_params={"authToken": "bad"},
            ).start()
        assert "invalid token" in str(legacy.value.reason)
        signed = client.subscribe(
            "{ whoami }", connection_params={"Authorization": f"Bearer {client.token('bob')}"}
        )
        [answer] = [payload async for payload in signed]
        assert "'sub': 'bob'" in answer["data"]["whoami"]


async def test_closing_the_client_ends_open_subscriptions() -> None:
    before = len(schemas.UNSUBSCRIBED)
    broker = MemoryBroker()
    async with TestClient(schema, broker=broker) as client:
        sub = await client.subscribe('subscription { ticker(group: "bye") { value } }').start()
        assert Ticker.group_key("bye") in broker.groups()
        assert not sub.done
    assert Ticker.group_key("bye") not in broker.groups()
    assert schemas.UNSUBSCRIBED[before:] == [{"group": "bye"}]
    assert attached() is None


async def test_confirmation_is_shown_when_the_settings_ask_for_it() -> None:
    settings = Settings(confirm_subscriptions=True)
    query = 'subscription { ticker(group: "c") { value } }'
    async with TestClient(schema, settings) as client, client.subscribe(query) as sub:
        assert await sub.next() == {"data": None}


async def test_the_client_also_answers_browsers_and_cors() -> None:
    settings = Settings(cors_allow_origins=("http://127.0.0.1:5173",))
    async with TestClient(schema, settings) as client:
        page = await client.request("GET", headers={"Accept": "text/html"})
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        preflight = await client.request(
            "OPTIONS",
            headers={"Origin": "http://127.0.0.1:5173", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status == 204
        assert preflight.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
        health = await client.request("GET", "/healthz")
        assert health.status == 200


def test_pytest_does_not_collect_the_client() -> None:
    assert TestClient.__test__ is False


@pytest.mark.parametrize("subprotocol", BOTH)
async def test_the_client_can_stop_a_subscription(subprotocol: str) -> None:
    broker = MemoryBroker()
    query = 'subscription { ticker(group: "stop") { value } }'
    async with (
        TestClient(schema, broker=broker) as client,
        client.subscribe(query, subprotocol=subprotocol) as sub,
    ):
        await sub.complete()
        assert sub.done
        await apoll_until(
            lambda: Ticker.group_key("stop") not in broker.groups(),
            timeout_s=5,
            what="the stopped subscription to leave its group",
        )
        await Ticker.broadcast(group="stop", payload={"value": 1})
        await sub.assert_no_messages(timeout_s=0.1)
        assert [payload async for payload in sub] == []
