"""CORS decisions (service.server.cors): origins matched exactly, preflights per the Fetch
standard, ``Vary: Origin``, and the policy applied around the GraphQL core by ``ServiceApp``."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse
from service.engine.recorder import NullRecorder
from service.server.cors import ALLOW_HEADERS, EXPOSE_HEADERS, CORSPolicy, normalize_origin
from service.server.serve import ServiceApp
from service.settings import Settings
from support.schemas import schema

SITE = "https://app.example.com"
LOCAL = "http://127.0.0.1:5173"


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("https://app.example.com", SITE),
        ("HTTPS://App.Example.COM/", SITE),
        ("https://app.example.com:443", SITE),
        ("http://app.example.com:80", "http://app.example.com"),
        ("http://127.0.0.1:5173", LOCAL),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("capacitor://localhost", "capacitor://localhost"),
    ],
)
def test_origins_are_normalized_as_browsers_serialize_them(given: str, normalized: str) -> None:
    assert normalize_origin(given) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "app.example.com",
        "https://app.example.com/path",
        "https://app.example.com?x=1",
        "https://user@app.example.com",
        "null",
        "https://app.example.com:99999",
        "",
    ],
)
def test_what_is_not_an_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        normalize_origin(bad)


def test_settings_turn_it_on() -> None:
    assert CORSPolicy.from_settings(Settings()) is None
    assert CORSPolicy.from_settings(Settings(cors_allow_origins=("", " "))) is None
    settings = Settings.from_env(
        {
            "CORS_ALLOW_ORIGINS": f"{SITE}, {LOCAL}/",
            "CORS_ALLOW_CREDENTIALS": "true",
            "CORS_MAX_AGE_S": "120",
        }
    )
    policy = CORSPolicy.from_settings(settings)
    assert policy is not None
    assert policy.origins == {SITE, LOCAL} and policy.credentials
    assert ("access-control-max-age", "120") in policy.preflight_headers
    with pytest.raises(ValueError, match="cannot be combined"):
        CORSPolicy(["*"], allow_credentials=True)
    with pytest.raises(ValueError, match="not an origin"):
        CORSPolicy(["https://app.example.com/graphql"])


def preflight(origin: str | None, path: str = "/graphql", **extra: str) -> HTTPRequest:
    headers = {"access-control-request-method": "POST", **extra}
    if origin is not None:
        headers["origin"] = origin
    return HTTPRequest("OPTIONS", path, "", headers, b"", "test", "req-1")


def test_a_preflight_from_a_listed_origin() -> None:
    policy = CORSPolicy([SITE], max_age_s=600)
    answer = policy.preflight(
        preflight(SITE, **{"access-control-request-headers": "content-type, authorization"})
    )
    assert answer is not None
    assert answer.status == 204 and answer.body == b""
    assert answer.headers == [
        ("vary", "Origin"),
        ("access-control-allow-origin", SITE),
        ("access-control-allow-methods", "GET, POST"),
        ("access-control-allow-headers", ALLOW_HEADERS),
        ("access-control-max-age", "600"),
    ]
    allowed = {h.strip().lower() for h in ALLOW_HEADERS.split(",")}
    assert {"authorization", "content-type"} <= allowed


def test_credentials_are_announced_only_when_configured() -> None:
    policy = CORSPolicy([SITE], allow_credentials=True)
    answer = policy.preflight(preflight(SITE))
    assert answer is not None
    assert ("access-control-allow-credentials", "true") in answer.headers
    assert ("access-control-allow-credentials", "true") in policy.response_headers(SITE)
    assert not any(
        name == "access-control-allow-credentials"
        for name, _ in CORSPolicy([SITE]).response_headers(SITE)
    )


@pytest.mark.parametrize(
    "request_",
    [
        preflight("https://evil.example.com"),
        preflight("https://app.example.com.evil.example.com"),
        preflight("http://app.example.com"),  # another scheme is another origin
        preflight("https://app.example.com:8443"),  # another port too
        preflight("null"),
        preflight(None),
        HTTPRequest("OPTIONS", "/graphql", "", {"origin": SITE}, b""),  # no request method
        HTTPRequest("POST", "/graphql", "", {"origin": SITE}, b""),
    ],
)
def test_not_a_preflight_to_answer(request_: HTTPRequest) -> None:
    assert CORSPolicy([SITE]).preflight(request_) is None


def test_answers_name_only_a_listed_origin_and_always_vary() -> None:
    policy = CORSPolicy([SITE])
    assert policy.response_headers(SITE) == [
        ("vary", "Origin"),
        ("access-control-allow-origin", SITE),
        ("access-control-expose-headers", EXPOSE_HEADERS),
    ]
    assert policy.response_headers("https://evil.example.com") == [("vary", "Origin")]
    assert policy.response_headers(None) == [("vary", "Origin")]


def test_any_origin_is_the_literal_star_never_a_reflection() -> None:
    policy = CORSPolicy(["*"])
    headers = dict(policy.response_headers("https://anyone.example"))
    assert headers["access-control-allow-origin"] == "*"
    answer = policy.preflight(preflight("https://anyone.example"))
    assert answer is not None and answer.status == 204
    assert ("access-control-allow-origin", "*") in answer.headers
    assert not any(value == "https://anyone.example" for _, value in answer.headers)


async def answer(app: ServiceApp, request: HTTPRequest) -> HTTPResponse:
    result: Any = app.handle(request)
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result


def app_with(policy: CORSPolicy | None) -> ServiceApp:
    core = HTTPCore(Engine(schema, Settings(), recorder=NullRecorder()))
    return ServiceApp(core, cors=policy)


def post(origin: str | None, query: str = "{ hello }") -> HTTPRequest:
    headers = {"content-type": "application/json"}
    if origin is not None:
        headers["origin"] = origin
    body = b'{"query": "' + query.encode() + b'"}'
    return HTTPRequest("POST", "/graphql", "", headers, body, "test", "req-1")


async def test_service_app_answers_preflights_and_decorates_answers() -> None:
    app = app_with(CORSPolicy([SITE]))
    ok = await answer(app, preflight(SITE))
    assert ok.status == 204
    refused = await answer(app, preflight("https://evil.example.com"))
    assert refused.status == 405  # the core's answer to OPTIONS, as without CORS
    assert not any(name.startswith("access-control-") for name, _ in refused.headers)
    for query in ("{ hello }", "{ slow(seconds: 0.01) }"):  # sync and awaitable answers
        got = await answer(app, post(SITE, query))
        assert got.status == 200
        assert ("access-control-allow-origin", SITE) in got.headers
        assert ("vary", "Origin") in got.headers
        other = await answer(app, post("https://evil.example.com", query))
        assert not any(name.startswith("access-control-") for name, _ in other.headers)


async def test_without_cors_nothing_changes_and_health_is_untouched() -> None:
    plain, cors = app_with(None), app_with(CORSPolicy([SITE]))
    before = await answer(plain, post(SITE))
    assert not any(name in ("vary", "access-control-allow-origin") for name, _ in before.headers)
    assert (await answer(plain, preflight(SITE))).status == 405
    health = HTTPRequest("GET", "/healthz", "", {"origin": SITE}, b"")
    assert (await answer(cors, health)).headers == [("content-type", "application/json")]
    elsewhere = await answer(cors, preflight(SITE, path="/elsewhere"))
    assert elsewhere.status == 404
