"""GraphiQL in a real browser, through nginx and real workers; its assets and CORS through nginx.

Debian's chromium (``make system-deps``) is driven by playwright-core from ``tests/browser``
(``npm ci`` there on first use) running ``graphiql.mjs``, which reports what the page did; the
assertions are here. The screenshot lands in ``test-artifacts/graphiql.png``.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.server.graphiql import ASSET_DIR, CONTENT_SECURITY_POLICY, IMMUTABLE
from support.stack import Stack, free_port, running_stack

pytestmark = pytest.mark.timeout(150)

REPO = Path(__file__).resolve().parents[2]
BROWSER_DIR = REPO / "tests" / "browser"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
SECRET = "graphiql-browser-secret-0123456789abcdef"
CHROME_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
MANIFEST = json.loads((ASSET_DIR / "manifest.json").read_text())


def browser_modules() -> None:
    """``npm ci`` in tests/browser unless the locked playwright-core is installed there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("the browser test needs Node.js 20+ and npm on PATH")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium")
    lock = json.loads((BROWSER_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/playwright-core"]["version"]
    installed = BROWSER_DIR / "node_modules" / "playwright-core" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == wanted:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=BROWSER_DIR,
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )


class _Blank(http.server.BaseHTTPRequestHandler):
    """A page on another origin, for the browser's cross-origin fetch."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def other_origin() -> Iterator[int]:
    """The port of a tiny http.server: ``http://127.0.0.1:P`` is an origin CORS allows,
    ``http://localhost:P`` (same server) one it does not."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Blank)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def stack(other_origin: int) -> Iterator[Stack]:
    env = {
        "JWT_SECRET": SECRET,
        "GRAPHIQL": "true",
        "CORS_ALLOW_ORIGINS": f"http://127.0.0.1:{other_origin}",
    }
    with running_stack(workers=2, env=env) as running:
        yield running


def dev_token() -> str:
    """What a user would do: `graphql-service token --sub alice`."""
    done = subprocess.run(
        [sys.executable, "-m", "service.supervisor.cli", "token", "--sub", "alice"],
        env={**os.environ, "JWT_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def get(
    stack: Stack, path: str, headers: dict[str, str], method: str = "GET", body: bytes | None = None
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = stack.http()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_graphiql_in_chromium(stack: Stack, other_origin: int) -> None:
    browser_modules()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "graphiql.png"
    with contextlib.suppress(FileNotFoundError):
        screenshot.unlink()
    token = dev_token()
    base = f"http://127.0.0.1:{stack.port}"
    config = {
        "base": base,
        "token": token,
        "screenshot": str(screenshot),
        "corsAllowed": f"http://127.0.0.1:{other_origin}",
        "corsDenied": f"http://localhost:{other_origin}",
        "executablePath": CHROMIUM,
    }
    done = subprocess.run(
        ["node", "graphiql.mjs", json.dumps(config)],
        cwd=BROWSER_DIR,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen.get("failure") is None, (seen.get("failure"), stack.log()[-3000:])

    # The page, with its policy.
    assert seen["page"]["status"] == 200
    assert seen["page"]["contentType"] == "text/html; charset=utf-8"
    assert seen["page"]["csp"] == CONTENT_SECURITY_POLICY
    # Nothing but this origin: the page, its two assets, GraphQL over HTTP and WebSocket.
    assert {urlsplit(url).netloc for url in seen["requests"]} == {f"127.0.0.1:{stack.port}"}
    assert {urlsplit(url).path for url in seen["requests"]} == {
        "/graphql",
        f"/graphql/assets/{MANIFEST['script']}",
        f"/graphql/assets/{MANIFEST['style']}",
    }
    assert set(seen["websockets"]) == {f"ws://127.0.0.1:{stack.port}/graphql"}
    assert seen["pageErrors"] == []
    assert not [line for line in seen["console"] if line.startswith("error")], seen["console"]

    # { hello } over HTTP; the countdown's values arrived one by one over the WebSocket.
    assert seen["results"]["hello"] == {"data": {"hello": "Hello, world!"}}
    assert seen["results"]["countdown"] == {"data": {"countdown": 0}}
    frames = [json.loads(frame) for frame in seen["framesReceived"]]
    values = [f["payload"]["data"]["countdown"] for f in frames if f["type"] == "next"]
    assert values == [3, 2, 1, 0, 1, 0]  # the anonymous subscription, then the signed-in one
    assert [f["type"] for f in frames].count("complete") == 2

    # Signed in from the Headers tab: the mutation over HTTP, the token in connection_init.
    note = seen["results"]["createNote"]["data"]["createNote"]
    assert note["title"] == "from the browser" and note["createdBy"] == "alice"
    sent = [json.loads(frame) for frame in seen["framesSent"]]
    inits = [f.get("payload") for f in sent if f["type"] == "connection_init"]
    assert inits == [{}, {"Authorization": f"Bearer {token}"}]
    signed = [json.loads(frame) for frame in seen["signedFramesSent"]]
    assert signed[0]["type"] == "connection_init"
    assert seen["results"]["signedCountdown"] == {"data": {"countdown": 0}}
    notes = stack.graphql("{ notes { title createdBy } }")["data"]["notes"]
    assert {"title": "from the browser", "createdBy": "alice"} in notes

    # CORS from pages on other origins: the listed one reads the answer, the other cannot.
    assert seen["cors"]["allowed"] == {"status": 200, "body": {"data": {"me": {"id": "alice"}}}}
    assert "Failed to fetch" in seen["cors"]["denied"]["error"]

    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {screenshot}")


def test_page_and_assets_through_nginx(stack: Stack) -> None:
    status, headers, body = get(stack, "/graphql", {"Accept": CHROME_ACCEPT})
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Request-ID"]
    for name, content_type in (
        (MANIFEST["script"], "text/javascript; charset=utf-8"),
        (MANIFEST["style"], "text/css; charset=utf-8"),
    ):
        status, headers, body = get(
            stack, f"/graphql/assets/{name}", {"Accept": "*/*", "Accept-Encoding": "gzip"}
        )
        assert status == 200
        assert headers["Content-Type"] == content_type
        assert headers["Cache-Control"] == IMMUTABLE
        assert headers["Content-Encoding"] == "gzip"
        assert "Accept-Encoding" in headers.get_all("Vary", [])
        shipped = (ASSET_DIR / name).read_bytes()
        assert gzip.decompress(body) == shipped
        assert len(body) < len(shipped)  # (the stylesheet is mostly base64 fonts)
    # Everything else is the GraphQL core's answer, as before.
    status, headers, body = get(stack, "/graphql", {"Accept": "*/*"})
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    status, _, body = get(stack, "/graphql/assets/graphiql-NOPE.js", {"Accept": "*/*"})
    assert status == 404 and json.loads(body)["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_cors_through_nginx(stack: Stack, other_origin: int) -> None:
    allowed = f"http://127.0.0.1:{other_origin}"
    preflight = {
        "Origin": allowed,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    status, headers, body = get(stack, "/graphql", preflight, method="OPTIONS")
    assert (status, body) == (204, b"")
    assert headers["Access-Control-Allow-Origin"] == allowed
    assert headers["Access-Control-Allow-Methods"] == "GET, POST"
    allow = {h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allow
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in headers.get_all("Vary", [])

    denied = {**preflight, "Origin": "http://evil.example"}
    status, headers, _ = get(stack, "/graphql", denied, method="OPTIONS")
    assert status == 405
    assert not [name for name in headers if name.lower().startswith("access-control-")]

    query = json.dumps({"query": "{ hello }"}).encode()
    for origin, expected in ((allowed, allowed), ("http://evil.example", None)):
        status, headers, _ = get(
            stack,
            "/graphql",
            {"Origin": origin, "Content-Type": "application/json"},
            method="POST",
            body=query,
        )
        assert status == 200
        assert headers.get("Access-Control-Allow-Origin") == expected
