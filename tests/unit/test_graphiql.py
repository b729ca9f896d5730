"""GraphiQL on the GraphQL path: who gets the page, the assets and their headers, the shipped
files, and that every other request is answered exactly as by the GraphQL core alone."""

from __future__ import annotations

import functools
import html.parser
import inspect
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse
from service.engine.recorder import NullRecorder
from service.server.graphiql import (
    ASSET_DIR,
    CONTENT_SECURITY_POLICY,
    IMMUTABLE,
    GraphiQL,
    prefers_html,
)
from service.server.serve import ServiceApp, build_server
from service.settings import Settings
from support.schemas import schema

REPO = Path(__file__).resolve().parents[2]
CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
MANIFEST = json.loads((ASSET_DIR / "manifest.json").read_text())


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (CHROME, True),
        (FIREFOX, True),
        ("text/html", True),
        ("text/html, */*", True),  # html ties a wildcard: the client named html
        (None, False),
        ("", False),
        ("*/*", False),  # curl
        ("application/json", False),
        ("application/graphql-response+json, application/json;q=0.9", False),
        ("text/html, application/json", False),  # an explicit JSON type wins a tie
        ("text/html;q=0.5, */*", False),
        ("text/html;q=0, */*;q=0.8", False),
        ("text/html;q=nan", False),
        ("text/html;q=2", False),
        ("text/plain, text/*", False),
        ("TEXT/HTML", True),
    ],
)
def test_who_prefers_html(accept: str | None, html: bool) -> None:
    assert prefers_html(accept) is html


def request(
    method: str = "GET",
    path: str = "/graphql",
    accept: str | None = CHROME,
    query_string: str = "",
    body: bytes = b"",
    content_type: str | None = None,
) -> HTTPRequest:
    headers = {}
    if accept is not None:
        headers["accept"] = accept
    if content_type is not None:
        headers["content-type"] = content_type
    return HTTPRequest(method, path, query_string, headers, body, "test", "req-1")


def test_a_browser_gets_the_page_with_a_strict_policy() -> None:
    page = GraphiQL().handle(request())
    assert page is not None and page.status == 200
    headers = dict(page.headers)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["vary"] == "Accept"
    assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert headers["x-content-type-options"] == "nosniff"
    text = page.body.decode()
    assert f'href="/graphql/assets/{MANIFEST["style"]}"' in text
    assert f'src="/graphql/assets/{MANIFEST["script"]}"' in text
    assert 'data-endpoint="/graphql"' in text


def test_the_policy_allows_this_origin_only_and_no_inline_code() -> None:
    directives = dict(
        (part.split()[0], part.split()[1:]) for part in CONTENT_SECURITY_POLICY.split("; ")
    )
    assert directives["default-src"] == ["'self'"]
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'"]
    assert directives["connect-src"] == ["'self'", "ws:", "wss:"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "unsafe" not in CONTENT_SECURITY_POLICY


class _Inline(html.parser.HTMLParser):
    """Collects what a policy without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        if tag == "style" or "style" in names or any(n.startswith("on") for n in names):
            self.blocked.append(tag)
        if tag == "script":
            self.in_script = True
            if "src" not in names:
                self.blocked.append("script without src")

    def handle_endtag(self, tag: str) -> None:
        self.in_script = False if tag == "script" else self.in_script

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.blocked.append("inline script")


def test_the_page_has_no_inline_script_or_style() -> None:
    page = GraphiQL().handle(request())
    assert page is not None
    parser = _Inline()
    parser.feed(page.body.decode())
    assert parser.blocked == []


def test_assets_are_served_immutable_under_the_path() -> None:
    graphiql = GraphiQL()
    for name, content_type in (
        (MANIFEST["script"], "text/javascript; charset=utf-8"),
        (MANIFEST["style"], "text/css; charset=utf-8"),
    ):
        answer = graphiql.handle(request(path=f"/graphql/assets/{name}", accept="*/*"))
        assert answer is not None and answer.status == 200
        headers = dict(answer.headers)
        assert headers == {
            "content-type": content_type,
            "cache-control": IMMUTABLE,
            "x-content-type-options": "nosniff",
        }
        assert answer.body == (ASSET_DIR / name).read_bytes()
    assert IMMUTABLE == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    "req",
    [
        request(accept="*/*"),
        request(accept=None),
        request(method="POST", content_type="application/json", body=b'{"query":"{hello}"}'),
        request(method="HEAD"),
        request(path="/graphql/"),
        request(path="/graphql/assets/missing.js"),
        request(path="/graphql/assets/manifest.json"),
        request(path="/graphql/assets/THIRD-PARTY-NOTICES.txt"),
        request(path="/other"),
    ],
)
def test_everything_else_is_left_to_the_core(req: HTTPRequest) -> None:
    assert GraphiQL().handle(req) is None


def test_another_path_moves_page_and_assets() -> None:
    graphiql = GraphiQL("/api/graphql")
    assert graphiql.handle(request()) is None
    page = graphiql.handle(request(path="/api/graphql"))
    assert page is not None and b'data-endpoint="/api/graphql"' in page.body
    script = graphiql.handle(request(path=f"/api/graphql/assets/{MANIFEST['script']}"))
    assert script is not None and script.status == 200


def test_the_shipped_files_match_the_manifest_and_the_package_data() -> None:
    assert re.fullmatch(r"graphiql-[A-Z0-9]{8}\.js", MANIFEST["script"])
    assert re.fullmatch(r"graphiql-[A-Z0-9]{8}\.css", MANIFEST["style"])
    shipped = {p.name for p in ASSET_DIR.iterdir()}
    assert shipped == {
        "manifest.json",
        "THIRD-PARTY-NOTICES.txt",
        MANIFEST["script"],
        MANIFEST["style"],
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert "graphiql/*" in package_data["service.server"]
    notices = (ASSET_DIR / "THIRD-PARTY-NOTICES.txt").read_text()
    lock = json.loads((REPO / "tools/graphiql/package-lock.json").read_text())
    for name in ("graphiql", "react", "react-dom", "graphql", "graphql-ws"):
        version = lock["packages"][f"node_modules/{name}"]["version"]
        assert f"\n{name} {version} (" in notices, name


def _answer(handler: Any, req: HTTPRequest) -> HTTPResponse:
    result = handler(req)
    if inspect.isawaitable(result):
        pytest.fail("the test schema's hello answers synchronously")
    assert isinstance(result, HTTPResponse)
    return result


@functools.cache
def core_and_app() -> tuple[HTTPCore, ServiceApp]:
    core = HTTPCore(Engine(schema, Settings(), recorder=NullRecorder()))
    return core, ServiceApp(core, graphiql=GraphiQL())


accepts = st.sampled_from(
    [CHROME, "*/*", "text/html", "text/html, application/json", "application/json", "", "x"]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "OPTIONS", "HEAD"]),
    path=st.sampled_from(["/graphql", "/graphql/", "/graphql/assets/x.js", "/nope"]),
    accept=accepts,
    query_string=st.sampled_from(["", "query=%7Bhello%7D", "query=%7Bnope%7D"]),
)
def test_the_graphql_behaviour_does_not_change(
    method: str, path: str, accept: str, query_string: str
) -> None:
    """Whatever is not a browser asking for the page gets the core's own answer, byte for
    byte (status, headers, body)."""
    core, app = core_and_app()
    req = request(method, path, accept, query_string, b'{"query":"{hello}"}', "application/json")
    if method == "GET" and path == "/graphql" and prefers_html(accept):
        page = _answer(app.handle, req)
        assert page.status == 200 and page.body.startswith(b"<!doctype html>")
        return
    ours, theirs = _answer(app.handle, req), _answer(core.handle, req)
    assert (ours.status, ours.headers, ours.body) == (theirs.status, theirs.headers, theirs.body)


def test_graphiql_off_leaves_browsers_with_the_406() -> None:
    server = build_server(
        schema,
        [{"protocol": "unix", "path": "/nonexistent/worker0"}],
        settings=Settings(graphiql=False),
        recorder=NullRecorder(),
    )
    try:
        assert server.handler.graphiql is None
        answer = _answer(server.handler.handle, request(accept="text/html"))
        assert answer.status == 406
        assert json.loads(answer.body)["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"
    finally:
        server.engine.close()
    on = build_server(
        schema,
        [{"protocol": "unix", "path": "/nonexistent/worker0"}],
        settings=Settings(),
        recorder=NullRecorder(),
    )
    try:
        assert isinstance(on.handler.graphiql, GraphiQL)
        assert Settings().graphiql is True
        assert Settings.from_env({"GRAPHIQL": "false"}).graphiql is False
    finally:
        on.engine.close()
