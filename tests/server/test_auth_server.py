"""JWT authentication end to end: a real server on TCP port 0 serving the example schema.

HTTP goes over plain asyncio streams, WebSockets over the ``websockets`` client, with both
subprotocols. Covered: a valid token reaches the resolvers (``me``, ``createdBy``) over HTTP and
over every accepted ``connection_init`` key; each way a token can be bad is a 401 with a Bearer
challenge over HTTP and a refused connection (4403) over WebSocket; a token expiring on a live
socket closes it; and a chat sender does not receive their own messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.auth import issue_token
from service.server.serve import Server
from service.settings import Settings
from support.dbutil import throwaway_database, unused_port
from tests.example_util import serving

TWS = "graphql-transport-ws"
LEGACY = "graphql-ws"
SUBPROTOCOLS = [TWS, LEGACY]

SECRET = "e2e-test-secret-" + "k" * 32  # HS256 needs at least 32 bytes
AUDIENCE = "notes-api"
ISSUER = "https://id.example.test"
ME = "{ me { id name } }"
CREATE = 'mutation { createNote(title: "from e2e") { id createdBy } }'


def hs_settings(database_url: str | None = None, **overrides: Any) -> Settings:
    """The HS256 server: audience and issuer checked, no clock leeway."""
    return Settings(
        database_url=database_url or f"postgresql://postgres@127.0.0.1:{unused_port()}/none",
        redis_url="",
        jwt_secret=SECRET,
        jwt_algorithms=("HS256",),
        jwt_audience=AUDIENCE,
        jwt_issuer=ISSUER,
        jwt_leeway_s=0,
        confirm_subscriptions=True,
        **overrides,
    )


def running(settings: Settings) -> contextlib.AbstractAsyncContextManager[Server]:
    return serving(settings)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    """No database: for ``me`` and for everything refused before execution."""
    async with running(hs_settings()) as srv:
        yield srv


@pytest.fixture
async def db_server() -> AsyncIterator[Server]:
    async with throwaway_database() as url, running(hs_settings(url)) as srv:
        yield srv


def token(sub: str = "alice", **kwargs: Any) -> str:
    return issue_token(hs_settings(), sub=sub, **kwargs)


# --- HTTP and WebSocket clients ---------------------------------------------------------------


async def http(
    srv: Server, query: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    """POST ``query`` to /graphql; return status, lower-cased headers and the JSON body."""
    body = json.dumps({"query": query}).encode()
    head = (
        "POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.tcp_port())
    try:
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    response_headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return status, response_headers, json.loads(payload)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def ws_url(srv: Server) -> str:
    return f"ws://127.0.0.1:{srv.tcp_port()}/graphql"


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def recv_skipping_ka(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next message that is not a keep-alive, within ``timeout`` in all."""
    async with asyncio.timeout(timeout):
        while True:
            message = await recv(ws)
            if message.get("type") != "ka":
                return message


async def closed_with(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """Read until the server closes (within ``timeout`` in all); return its close code and
    reason."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason or ""


async def init(ws: ClientConnection, payload: dict[str, Any]) -> None:
    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
    ack = await recv(ws)
    assert ack["type"] == "connection_ack", ack


async def operation(ws: ClientConnection, op_id: str, query: str) -> dict[str, Any]:
    """Run a query or mutation on an acknowledged socket; return its result payload."""
    kind = "subscribe" if ws.subprotocol == TWS else "start"
    await ws.send(json.dumps({"id": op_id, "type": kind, "payload": {"query": query}}))
    message = await recv_skipping_ka(ws)
    assert message["type"] in {"next", "data"} and message["id"] == op_id, message
    done = await recv_skipping_ka(ws)
    assert done == {"id": op_id, "type": "complete"}
    payload: dict[str, Any] = message["payload"]
    return payload


# --- a valid token ----------------------------------------------------------------------------


async def test_valid_token_over_http(db_server: Server) -> None:
    status, _, body = await http(db_server, ME, bearer(token("alice", name="Alice")))
    assert status == 200
    assert body == {"data": {"me": {"id": "alice", "name": "Alice"}}}

    status, _, body = await http(db_server, CREATE, bearer(token("alice")))
    assert status == 200, body
    assert body["data"]["createNote"]["createdBy"] == "alice"

    # The Bearer scheme is case-insensitive.
    status, _, body = await http(db_server, ME, {"Authorization": f"bearer {token('bob')}"})
    assert status == 200 and body["data"]["me"] == {"id": "bob", "name": "bob"}


async def test_no_token_is_anonymous_over_http(db_server: Server) -> None:
    status, _, body = await http(db_server, ME)
    assert status == 200 and body == {"data": {"me": None}}
    status, _, body = await http(db_server, CREATE)
    assert status == 200
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


# Every connection_init key a token may come in (see ``Verifier.from_connection_params``).
PAYLOAD_FORMS: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
    ("Authorization", lambda t: {"Authorization": f"Bearer {t}"}),
    ("authorization", lambda t: {"authorization": f"Bearer {t}"}),
    ("authToken", lambda t: {"authToken": t}),
    ("authToken with Bearer", lambda t: {"authToken": f"Bearer {t}"}),
    ("token", lambda t: {"token": t}),
    ("headers.Authorization", lambda t: {"headers": {"Authorization": f"Bearer {t}"}}),
    ("headers.authorization", lambda t: {"headers": {"authorization": f"Bearer {t}"}}),
]


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_valid_token_over_websocket(db_server: Server, subprotocol: str) -> None:
    for form, payload_of in PAYLOAD_FORMS:
        sub = f"carol-{form}"
        async with connect(ws_url(db_server), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
            await init(ws, payload_of(token(sub, name="Carol")))
            me = await operation(ws, "me", ME)
            assert me == {"data": {"me": {"id": sub, "name": "Carol"}}}, form
            created = await operation(ws, "c", CREATE)
            assert created["data"]["createNote"]["createdBy"] == sub, form


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_websocket_without_a_token_is_anonymous(server: Server, subprotocol: str) -> None:
    async with connect(ws_url(server), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
        await init(ws, {})
        assert await operation(ws, "me", ME) == {"data": {"me": None}}


async def test_websocket_token_in_the_upgrade_request(server: Server) -> None:
    async with connect(
        ws_url(server),
        subprotocols=[TWS],  # type: ignore[list-item]
        additional_headers=bearer(token("dave")),
    ) as ws:
        await init(ws, {})
        assert await operation(ws, "me", ME) == {"data": {"me": {"id": "dave", "name": "dave"}}}


# --- bad tokens -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], secret: bytes | None) -> str:
    """A JWT built by hand: HMAC-SHA256 with ``secret`` (any bytes), or no signature."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if secret is None:
        return signing_input + "."
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def good_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "mallory", "iat": now, "nbf": now, "exp": now + 600}
    claims.update(aud=AUDIENCE, iss=ISSUER)
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def tampered() -> str:
    header, _, signature = token("mallory").split(".")
    forged = b64url(json.dumps(good_claims(sub="admin")).encode())
    return f"{header}.{forged}.{signature}"


# (id, Authorization header value, words the error must contain)
BAD_HEADERS: list[tuple[str, Callable[[], str], str]] = [
    ("tampered payload", lambda: f"Bearer {tampered()}", "bad signature"),
    (
        "other secret",
        lambda: "Bearer " + jwt.encode(good_claims(), "x" * 40, algorithm="HS256"),
        "bad signature",
    ),
    (
        "alg none",
        lambda: "Bearer " + unsigned({"alg": "none", "typ": "JWT"}, good_claims(), None),
        "algorithm 'none' is not allowed",
    ),
    (
        "alg HS512 not allowed",
        lambda: "Bearer " + jwt.encode(good_claims(), SECRET * 2, algorithm="HS512"),
        "algorithm 'HS512' is not allowed",
    ),
    (
        "expired",
        lambda: f"Bearer {token('mallory', ttl_s=60, now=time.time() - 3600)}",
        "expired",
    ),
    (
        "nbf in the future",
        lambda: f"Bearer {token('mallory', extra={'nbf': int(time.time()) + 3600})}",
        "not valid yet",
    ),
    (
        "wrong audience",
        lambda: f"Bearer {token('mallory', extra={'aud': 'another-api'})}",
        "wrong audience",
    ),
    (
        "missing audience",
        lambda: "Bearer " + jwt.encode(good_claims(aud=None), SECRET, algorithm="HS256"),
        "'aud' claim is required",
    ),
    (
        "wrong issuer",
        lambda: f"Bearer {token('mallory', extra={'iss': 'https://evil.test'})}",
        "wrong issuer",
    ),
    (
        "missing sub",
        lambda: "Bearer " + jwt.encode(good_claims(sub=None), SECRET, algorithm="HS256"),
        "'sub' claim",
    ),
    (
        "empty sub",
        lambda: "Bearer " + jwt.encode(good_claims(sub=""), SECRET, algorithm="HS256"),
        "'sub' claim",
    ),
    ("basic scheme", lambda: "Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
    ("bearer without token", lambda: "Bearer", "must be 'Bearer <token>'"),
    ("two tokens", lambda: "Bearer a b", "must be 'Bearer <token>'"),
    ("garbage header", lambda: "garbage", "must be 'Bearer <token>'"),
    ("garbage token", lambda: "Bearer garbage", "not a well-formed JWT"),
    ("three garbage segments", lambda: "Bearer a.b.c", "not a well-formed JWT"),
]
BAD_IDS = [case[0] for case in BAD_HEADERS]
BAD_CASES = [case[1:] for case in BAD_HEADERS]


def assert_unauthorized(
    status: int, headers: dict[str, str], body: dict[str, Any], words: str
) -> None:
    assert status == 401, body
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert "data" not in body
    [error] = body["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert error["message"].startswith("Invalid token: ")
    assert words in error["message"], error["message"]
    assert words.replace("'", "") in challenge.replace("'", ""), challenge


@pytest.mark.parametrize(("header", "words"), BAD_CASES, ids=BAD_IDS)
async def test_bad_token_over_http_is_401(
    server: Server, header: Callable[[], str], words: str
) -> None:
    status, headers, body = await http(server, ME, {"Authorization": header()})
    assert_unauthorized(status, headers, body, words)


async def test_bad_token_is_refused_before_anything_runs(db_server: Server) -> None:
    status, _, _ = await http(db_server, CREATE, bearer(tampered()))
    assert status == 401
    status, _, body = await http(db_server, "{ notes { id } }")
    assert status == 200 and body == {"data": {"notes": []}}


async def refused_over_websocket(
    srv: Server, subprotocol: str, payload: dict[str, Any], words: str
) -> None:
    """``connection_init`` with ``payload`` is refused: 4403, and legacy's connection_error."""
    async with connect(ws_url(srv), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        if subprotocol == LEGACY:
            message = await recv(ws)
            assert message["type"] == "connection_error", message
            assert message["payload"]["message"].startswith("Forbidden: invalid token: ")
            assert words in message["payload"]["message"]
        code, reason = await closed_with(ws)
        assert code == 4403
        assert reason.startswith("Forbidden: invalid token: ")
        assert words in reason


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_bad_tokens_over_websocket_are_refused(server: Server, subprotocol: str) -> None:
    for _, header, words in BAD_HEADERS:
        value = header()
        await refused_over_websocket(server, subprotocol, {"Authorization": value}, words)
        if value.startswith("Bearer ") and len(value.split()) == 2:
            # The raw-token keys refuse the same token for the same reason.
            raw = value.split()[1]
            await refused_over_websocket(server, subprotocol, {"authToken": raw}, words)
    # The server is still healthy.
    async with connect(ws_url(server), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
        await init(ws, {"authToken": token("alice")})
        assert (await operation(ws, "me", ME))["data"]["me"]["id"] == "alice"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"authToken": 42}, "must be a string"),
        ({"authToken": ""}, "is empty"),
        ({"headers": "Bearer x"}, "'headers' must be an object"),
    ],
)
async def test_bad_connection_params_are_refused(
    server: Server, payload: dict[str, Any], words: str
) -> None:
    await refused_over_websocket(server, TWS, payload, words)


async def test_bad_token_in_the_upgrade_request_is_refused(server: Server) -> None:
    async with connect(
        ws_url(server),
        subprotocols=[TWS],  # type: ignore[list-item]
        additional_headers=bearer(tampered()),
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        code, reason = await closed_with(ws)
        assert code == 4403 and "bad signature" in reason


# --- RS256: no algorithm confusion ------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_public(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("subprotocol", SUBPROTOCOLS)
async def test_rs256_server_refuses_hs256_signed_with_the_public_key(
    rsa_private_key: rsa.RSAPrivateKey, subprotocol: str
) -> None:
    public_pem = pem_public(rsa_private_key)
    settings = Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{unused_port()}/none",
        redis_url="",
        jwt_algorithms=("RS256",),
        jwt_public_key=public_pem.decode(),
    )
    claims = {"sub": "mallory", "exp": int(time.time()) + 600}
    # The classic attack: the server's public key, as an HMAC secret.
    confused = unsigned({"alg": "HS256", "typ": "JWT"}, claims, public_pem)
    genuine = jwt.encode({"sub": "erin"}, rsa_private_key, algorithm="RS256")
    async with running(settings) as srv:
        status, headers, body = await http(srv, ME, bearer(confused))
        assert_unauthorized(status, headers, body, "algorithm 'HS256' is not allowed")
        await refused_over_websocket(
            srv, subprotocol, {"authToken": confused}, "algorithm 'HS256' is not allowed"
        )
        # A genuine RS256 token works on both transports.
        status, _, body = await http(srv, ME, bearer(genuine))
        assert status == 200 and body["data"]["me"] == {"id": "erin", "name": "erin"}
        async with connect(ws_url(srv), subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
            await init(ws, {"Authorization": f"Bearer {genuine}"})
            assert (await operation(ws, "me", ME))["data"]["me"]["id"] == "erin"


# Expiry on a live socket (exp + JWT_LEEWAY_S): tests/adapters/test_ws_session.py, on a fake
# clock with a real token.


# --- onNewChatMessage skips the sender's own messages -----------------------------------------

SEND = 'mutation {{ sendChatMessage(chatroom: "lobby", text: "{text}") {{ sender }} }}'
ON_MESSAGE = 'subscription { onNewChatMessage(chatroom: "lobby") { text sender } }'


async def subscribed(srv: Server, payload: dict[str, Any]) -> ClientConnection:
    ws = await connect(ws_url(srv), subprotocols=[TWS])  # type: ignore[list-item]
    await init(ws, payload)
    await ws.send(json.dumps({"id": "chat", "type": "subscribe", "payload": {"query": ON_MESSAGE}}))
    # confirm_subscriptions: the null result comes once the subscriber has joined its group.
    assert await recv(ws) == {"id": "chat", "type": "next", "payload": {"data": None}}
    return ws


class Inbox:
    """Sorts what one socket receives: chat events in order, other operations' results by id."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.chat: list[tuple[str, str]] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.completed: set[str] = set()

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Sort what arrives until ``done()``, within ``timeout`` in all."""
        async with asyncio.timeout(timeout):
            while not done():
                message = await recv(self.ws)
                op_id, kind = str(message.get("id")), message.get("type")
                if op_id == "chat":
                    assert kind == "next", message
                    event = message["payload"]["data"]["onNewChatMessage"]
                    self.chat.append((event["text"], event["sender"]))
                elif kind == "next":
                    self.results[op_id] = message["payload"]
                else:
                    assert kind == "complete", message
                    self.completed.add(op_id)

    async def chat_events(self, count: int) -> list[tuple[str, str]]:
        await self.until(lambda: len(self.chat) >= count)
        return self.chat


async def test_chat_sender_does_not_receive_their_own_messages(db_server: Server) -> None:
    sockets = [
        await subscribed(db_server, {"authToken": token("alice", name="Alice")}),
        await subscribed(db_server, bearer(token("bob"))),
        await subscribed(db_server, {}),
    ]
    alice, bob, anonymous = (Inbox(ws) for ws in sockets)
    try:
        # 1: Alice over HTTP; 2: Bob over his own socket; 3: an anonymous sender.
        status, _, body = await http(db_server, SEND.format(text="one"), bearer(token("alice")))
        assert status == 200 and body["data"]["sendChatMessage"]["sender"] == "alice"
        mutation = {"query": SEND.format(text="two")}
        await bob.ws.send(json.dumps({"id": "m", "type": "subscribe", "payload": mutation}))
        await bob.until(lambda: "m" in bob.completed)
        assert bob.results["m"]["data"]["sendChatMessage"]["sender"] == "bob"
        status, _, body = await http(db_server, SEND.format(text="three"))
        assert status == 200 and body["data"]["sendChatMessage"]["sender"] == "Anonymous"

        # Events arrive in publish order, so each first event proves what was skipped.
        assert await alice.chat_events(2) == [("two", "bob"), ("three", "Anonymous")]
        assert await bob.chat_events(2) == [("one", "alice"), ("three", "Anonymous")]
        assert await anonymous.chat_events(3) == [
            ("one", "alice"),
            ("two", "bob"),
            ("three", "Anonymous"),
        ]
    finally:
        for ws in sockets:
            await ws.close()
