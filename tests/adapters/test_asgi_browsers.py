"""The ASGI adapter serves GraphiQL and applies CORS like the native transport."""

from __future__ import annotations

import json

from service import asgi_app
from service.engine.recorder import NullRecorder
from service.server.graphiql import ASSET_DIR, CONTENT_SECURITY_POLICY, IMMUTABLE
from service.settings import Settings
from support.schemas import schema
from tests.adapters.test_asgi import call_http, http_scope

BROWSER = "text/html,application/xhtml+xml,*/*;q=0.8"
MANIFEST = json.loads((ASSET_DIR / "manifest.json").read_text())


async def test_graphiql_over_asgi() -> None:
    app = asgi_app(schema, settings=Settings(), recorder=NullRecorder())
    status, headers, body = await call_http(app, http_scope("GET", accept=BROWSER), [b""])
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    name = MANIFEST["script"]
    status, headers, body = await call_http(
        app, http_scope("GET", f"/graphql/assets/{name}"), [b""]
    )
    assert status == 200 and headers["cache-control"] == IMMUTABLE
    assert body == (ASSET_DIR / name).read_bytes()
    off = asgi_app(schema, settings=Settings(graphiql=False), recorder=NullRecorder())
    status, _, _ = await call_http(off, http_scope("GET", accept="text/html"), [b""])
    assert status == 406


async def test_cors_over_asgi() -> None:
    origin = "https://app.example.com"
    app = asgi_app(schema, settings=Settings(cors_allow_origins=(origin,)), recorder=NullRecorder())
    scope = http_scope("OPTIONS", origin=origin, access_control_request_method="POST")
    status, headers, body = await call_http(app, scope, [b""])
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == origin
    payload = json.dumps({"query": "{ hello }"}).encode()
    scope = http_scope(content_type="application/json", origin=origin)
    status, headers, _ = await call_http(app, scope, [payload])
    assert status == 200 and headers["access-control-allow-origin"] == origin
