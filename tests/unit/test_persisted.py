"""Persisted operations in the HTTP core: Apollo's APQ (hash only, hash with the document, GET),
trusted documents in both manifest formats and both modes, a failing store, no sockets."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from service.engine.executor import Engine
from service.engine.http import HTTPCore, HTTPRequest, HTTPResponse, RequestIds
from service.engine.persisted import (
    MemoryAPQStore,
    PersistedOperations,
    TrustedDocuments,
    sha256_hex,
)
from service.protocols.codes import ErrorCode
from service.protocols.http import HTTPError, persisted_document_id
from service.settings import Settings
from support.schemas import schema

GRJ = "application/graphql-response+json"
IDS = RequestIds()
HELLO = "query Hello { hello }"
BUMP = "mutation Bump { bump(by: 2) }"


def core_with(persisted: PersistedOperations | None, **overrides: Any) -> HTTPCore:
    engine = Engine(schema, Settings(**overrides))
    if persisted is not None:
        persisted.preload(engine.cache)
    return HTTPCore(engine, persisted=persisted)


async def call(
    core: HTTPCore,
    body: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    query: dict[str, Any] | None = None,
    accept: str | None = None,
) -> tuple[int, dict[str, Any]]:
    headers = {"content-type": "application/json"}
    if accept:
        headers["accept"] = accept
    qs = ""
    if query is not None:
        qs = urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in query.items()})
    raw = json.dumps(body).encode() if body is not None else b""
    result = core.handle(
        HTTPRequest(method, "/graphql", qs, headers, raw, "t", IDS.for_headers({}))
    )
    if inspect.isawaitable(result):
        result = await result
    assert isinstance(result, HTTPResponse)
    return result.status, json.loads(result.body)


def apq(digest: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": digest}}


def code_of(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["extensions"]["code"])


async def test_apq_round_trip_hash_then_document_then_hash() -> None:
    store = MemoryAPQStore()
    core = core_with(PersistedOperations(store=store))
    digest = sha256_hex(HELLO)
    status, body = await call(core, {"extensions": apq(digest)})
    assert status == 200
    assert body["errors"][0]["message"] == "PersistedQueryNotFound"
    assert code_of(body) == ErrorCode.PERSISTED_QUERY_NOT_FOUND
    assert "data" not in body
    # graphql-response+json: a request error, 400 (Apollo Client 4 reads the body either way).
    status, body = await call(core, {"extensions": apq(digest)}, accept=GRJ)
    assert (status, code_of(body)) == (400, ErrorCode.PERSISTED_QUERY_NOT_FOUND)

    status, body = await call(core, {"query": HELLO, "extensions": apq(digest)})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    assert store.documents == {digest: HELLO}

    # Another worker sharing the store (a fresh LRU) finds it there.
    other = core_with(PersistedOperations(store=store))
    status, body = await call(other, {"extensions": apq(digest)})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    # ... and answers from its own LRU next time, synchronously.
    request = HTTPRequest(
        "POST",
        "/graphql",
        "",
        {"content-type": "application/json"},
        json.dumps({"extensions": apq(digest)}).encode(),
    )
    assert isinstance(other.handle(request), HTTPResponse)


async def test_a_wrong_hash_is_400_and_nothing_is_stored() -> None:
    store = MemoryAPQStore()
    core = core_with(PersistedOperations(store=store))
    status, body = await call(core, {"query": HELLO, "extensions": apq(sha256_hex("{ other }"))})
    assert status == 400
    assert code_of(body) == ErrorCode.BAD_REQUEST
    assert "does not match" in body["errors"][0]["message"]
    assert store.documents == {}


async def test_documents_that_fail_validation_are_not_registered() -> None:
    store = MemoryAPQStore()
    core = core_with(PersistedOperations(store=store))
    bad = "{ nope }"
    status, body = await call(core, {"query": bad, "extensions": apq(sha256_hex(bad))})
    assert (status, code_of(body)) == (200, ErrorCode.GRAPHQL_VALIDATION_FAILED)
    assert store.documents == {}


async def test_get_serves_hashed_queries_but_never_mutations() -> None:
    core = core_with(PersistedOperations(store=MemoryAPQStore()))
    for document in (HELLO, BUMP):
        await call(core, {"query": document, "extensions": apq(sha256_hex(document))})
    status, body = await call(
        core, method="GET", query={"operationName": "Hello", "extensions": apq(sha256_hex(HELLO))}
    )
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    status, body = await call(core, method="GET", query={"extensions": apq(sha256_hex(BUMP))})
    assert (status, code_of(body)) == (405, ErrorCode.METHOD_NOT_ALLOWED)


async def test_document_id_names_a_document_like_the_hash() -> None:
    core = core_with(PersistedOperations(store=MemoryAPQStore()))
    digest = sha256_hex(HELLO)
    await call(core, {"query": HELLO, "documentId": f"sha256:{digest}"})
    status, body = await call(core, {"documentId": f"sha256:{digest.upper()}"})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})


async def test_without_persisted_support_a_bare_hash_is_not_supported() -> None:
    core = core_with(None)
    status, body = await call(core, {"extensions": apq(sha256_hex(HELLO))})
    assert (status, code_of(body)) == (400, ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED)
    # With the document, it simply runs.
    status, body = await call(core, {"query": HELLO, "extensions": apq("whatever")})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})


@pytest.mark.parametrize(
    ("extensions", "document_id", "message"),
    [
        ({"persistedQuery": {"version": 2, "sha256Hash": "ab"}}, None, "version"),
        ({"persistedQuery": {"version": 1}}, None, "sha256Hash"),
        ({"persistedQuery": "ab"}, None, "object"),
        (None, 12, "documentId"),
        (None, "x" * 300, "longer"),
    ],
)
def test_malformed_references_are_bad_requests(
    extensions: Any, document_id: Any, message: str
) -> None:
    with pytest.raises(HTTPError) as caught:
        persisted_document_id(document_id, extensions)
    assert caught.value.status == 400
    assert message in caught.value.message


class BrokenStore:
    """A store whose calls hang (Redis unreachable behind a black hole) or fail."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.calls = 0

    async def get(self, document_id: str) -> str | None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        raise ConnectionError("Redis is down")

    async def put(self, document_id: str, document: str) -> None:
        await self.get(document_id)


@pytest.mark.parametrize("hang", [True, False])
async def test_a_failing_store_degrades_to_not_found_quickly(hang: bool) -> None:
    store = BrokenStore(hang)
    core = core_with(PersistedOperations(store=store, timeout_s=0.05))
    digest = sha256_hex(HELLO)
    t0 = time.monotonic()
    status, body = await call(core, {"extensions": apq(digest)})
    assert (status, code_of(body)) == (200, ErrorCode.PERSISTED_QUERY_NOT_FOUND)
    # The client's fallback with the document runs, though the store cannot take it.
    status, body = await call(core, {"query": HELLO, "extensions": apq(digest)})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    assert time.monotonic() - t0 < 2.0
    # The store rests after a failure: the next lookups do not pay its timeout again.
    calls = store.calls
    await call(core, {"extensions": apq(sha256_hex("{ hello }"))})
    assert store.calls == calls


# --- trusted documents ------------------------------------------------------------------------

APOLLO_MANIFEST = {
    "format": "apollo-persisted-query-manifest",
    "version": 1,
    "operations": [
        {"id": sha256_hex(HELLO), "name": "Hello", "type": "query", "body": HELLO},
        {"id": sha256_hex(BUMP), "name": "Bump", "type": "mutation", "body": BUMP},
    ],
}
CODEGEN_MANIFEST = {sha256_hex(HELLO): HELLO, sha256_hex(BUMP): BUMP}


@pytest.mark.parametrize("manifest", [APOLLO_MANIFEST, CODEGEN_MANIFEST], ids=["apollo", "codegen"])
async def test_trusted_only_runs_manifest_documents_and_refuses_the_rest(
    manifest: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    trusted = TrustedDocuments.load(str(path))
    assert len(trusted) == 2
    core = core_with(PersistedOperations(trusted=trusted, mode="trusted-only"))
    # Preloaded: the first request is a cache hit.
    assert core.engine.cache.peek(HELLO) is not None
    status, body = await call(core, {"documentId": sha256_hex(HELLO)})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    status, body = await call(core, {"extensions": apq(sha256_hex(BUMP))})
    assert status == 200
    assert isinstance(body["data"]["bump"], int)  # a counter shared by the module's tests
    status, body = await call(core, {"query": HELLO})  # the same text, sent in full
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    for request in (
        {"query": "{ hello }"},
        {"query": "{ hello }", "extensions": apq(sha256_hex("{ hello }"))},
        {"extensions": apq(sha256_hex("{ hello }"))},
    ):
        status, body = await call(core, request)
        assert (status, code_of(body)) == (200, ErrorCode.OPERATION_NOT_TRUSTED), request
        assert "trusted documents" in body["errors"][0]["message"]
    # Refused before parsing: garbage gets the same answer, not a parse error.
    status, body = await call(core, {"query": "{{{"}, accept=GRJ)
    assert (status, code_of(body)) == (400, ErrorCode.OPERATION_NOT_TRUSTED)


async def test_allow_any_preloads_and_still_runs_other_documents() -> None:
    trusted = TrustedDocuments.parse(APOLLO_MANIFEST)
    core = core_with(PersistedOperations(trusted=trusted, store=MemoryAPQStore()))
    status, body = await call(core, {"extensions": apq(sha256_hex(HELLO))})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})
    status, body = await call(core, {"query": "{ hello }"})
    assert (status, body) == (200, {"data": {"hello": "Hello, world!"}})


def test_a_manifest_that_does_not_validate_names_the_operation() -> None:
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": "a1", "name": "Hello", "type": "query", "body": HELLO},
            {"id": "b2", "name": "Broken", "type": "query", "body": "query Broken { nope }"},
        ],
    }
    persisted = PersistedOperations(trusted=TrustedDocuments.parse(manifest, "m.json"))
    with pytest.raises(ValueError, match=r"m.json: operation 'Broken' \(id b2\).*nope"):
        persisted.preload(Engine(schema, Settings()).cache)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "not a persisted documents manifest"),
        ({"format": "apollo-persisted-query-manifest", "version": 2}, "version"),
        ({"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{}]}, "id"),
        ({"abc": 3}, "not a string"),
    ],
)
def test_malformed_manifests_are_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrustedDocuments.parse(data)


def test_settings_build_persisted_operations(tmp_path: Path) -> None:
    path = tmp_path / "persisted-documents.json"
    path.write_text(json.dumps(CODEGEN_MANIFEST))
    settings = Settings(trusted_documents=str(path), trusted_documents_mode="trusted-only")
    persisted = PersistedOperations.from_settings(settings)
    assert persisted.trusted_only and not persisted.apq
    with pytest.raises(ValueError, match="TRUSTED_DOCUMENTS_MODE"):
        PersistedOperations.from_settings(Settings(trusted_documents_mode="sometimes"))
    with pytest.raises(ValueError, match="needs TRUSTED_DOCUMENTS"):
        PersistedOperations.from_settings(Settings(trusted_documents_mode="trusted-only"))
    with pytest.raises(ValueError, match="cannot read"):
        PersistedOperations.from_settings(Settings(trusted_documents=str(tmp_path / "missing")))
