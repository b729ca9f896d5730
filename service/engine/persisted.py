"""Persisted operations: Apollo's automatic persisted queries (APQ) and trusted documents.

A request may name its document by id instead of sending it: ``documentId`` (GraphQL-over-HTTP
draft) or ``extensions.persistedQuery.sha256Hash`` (Apollo's APQ, version 1).
``PersistedOperations.resolve`` turns the request's ``(query, document_id)`` into the document
text to run, synchronously when it can (a trusted document, or the local LRU) and as an
awaitable when the shared store must be asked.

- **APQ**: an unknown hash answers ``PERSISTED_QUERY_NOT_FOUND`` ("PersistedQueryNotFound"), and
  the client sends the document with its hash; the hash is checked (sha256 of the text), and
  once the document has been prepared without errors it is *registered*: kept in the local LRU
  and written to the shared ``APQStore`` (Redis, ``service.server.persisted_store``), so every
  worker on every host finds it. A store that is down or slow answers "not found" within its
  timeout: clients then fall back to sending the full document.
- **Trusted documents** (``TRUSTED_DOCUMENTS=<manifest>``): Apollo's persisted query manifest or
  GraphQL Code Generator's ``persisted-documents.json``. The documents are validated against
  the schema and preloaded into the document cache at startup (``preload``). In
  ``allow-any`` mode other documents still run; in ``trusted-only`` mode anything not in the
  manifest is refused with ``OPERATION_NOT_TRUSTED`` before it is parsed, and APQ registration
  is off.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Mapping
from typing import Any, Protocol

from service.engine.cache import DocumentCache
from service.protocols.codes import ErrorCode

__all__ = [
    "ALLOW_ANY",
    "TRUSTED_ONLY",
    "APQStore",
    "Lookup",
    "MemoryAPQStore",
    "PersistedError",
    "PersistedOperations",
    "TrustedDocuments",
    "sha256_hex",
]

log = logging.getLogger("service.persisted")

ALLOW_ANY = "allow-any"
TRUSTED_ONLY = "trusted-only"
MODES = (ALLOW_ANY, TRUSTED_ONLY)


def sha256_hex(document: str) -> str:
    """The APQ hash of a document: sha256 of its UTF-8 text, lower-case hex."""
    return hashlib.sha256(document.encode("utf-8", "surrogatepass")).hexdigest()


class PersistedError(Exception):
    """The request's persisted reference cannot be honoured. ``request_error``: the status
    follows the media type (200 for ``application/json``, 400 for
    ``application/graphql-response+json``), like a validation error; otherwise 400."""

    def __init__(self, code: ErrorCode, message: str, *, request_error: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_error = request_error


def not_found() -> PersistedError:
    # The message is what Apollo's clients match on (besides the code).
    return PersistedError(ErrorCode.PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound")


def not_trusted(what: str) -> PersistedError:
    return PersistedError(
        ErrorCode.OPERATION_NOT_TRUSTED,
        f"{what} is not in this server's trusted documents; only trusted documents run here "
        "(TRUSTED_DOCUMENTS_MODE=trusted-only).",
    )


class APQStore(Protocol):
    """Where registered documents are shared between workers. Both calls may fail (raise);
    ``PersistedOperations`` bounds them by its timeout and treats a failure as "not found"."""

    async def get(self, document_id: str) -> str | None: ...

    async def put(self, document_id: str, document: str) -> None: ...


class MemoryAPQStore:
    """An ``APQStore`` in this process (tests; one worker without Redis)."""

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}

    async def get(self, document_id: str) -> str | None:
        return self.documents.get(document_id)

    async def put(self, document_id: str, document: str) -> None:
        self.documents[document_id] = document


class Lookup:
    """What ``resolve`` found: the ``query`` to run, and the id to ``register`` it under once it
    has been prepared without errors (``None``: nothing to register)."""

    __slots__ = ("query", "register")

    def __init__(self, query: str, register: str | None = None) -> None:
        self.query = query
        self.register = register


class TrustedDocuments:
    """The operations of a manifest, by id and by text. ``operations`` keeps ``(id, name,
    body)`` in manifest order for validation messages."""

    def __init__(self, operations: list[tuple[str, str | None, str]], source: str = "") -> None:
        self.source = source
        self.operations = operations
        self.by_id: dict[str, str] = {}
        for document_id, _, body in operations:
            self.by_id[document_id.lower()] = body
            # Clients may also reference a document by the sha256 of its text.
            self.by_id.setdefault(sha256_hex(body), body)
        self.bodies = frozenset(body for _, _, body in operations)

    def __len__(self) -> int:
        return len(self.operations)

    @classmethod
    def parse(cls, data: Any, source: str = "manifest") -> TrustedDocuments:
        """From a decoded manifest: Apollo's ``{"format": "apollo-persisted-query-manifest",
        "version": 1, "operations": [{"id", "name", "type", "body"}]}`` or GraphQL Code
        Generator's ``{"<hash>": "<document>"}``. Raises ``ValueError`` naming the problem."""
        operations: list[tuple[str, str | None, str]] = []
        if isinstance(data, dict) and data.get("format") == "apollo-persisted-query-manifest":
            if data.get("version") != 1:
                raise ValueError(
                    f"{source}: unsupported apollo-persisted-query-manifest version "
                    f"{data.get('version')!r} (1 is supported)"
                )
            entries = data.get("operations")
            if not isinstance(entries, list):
                raise ValueError(f"{source}: 'operations' must be a list")
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise ValueError(f"{source}: operations[{i}] must be an object")
                document_id, body, name = entry.get("id"), entry.get("body"), entry.get("name")
                if not isinstance(document_id, str) or not document_id:
                    raise ValueError(f"{source}: operations[{i}] has no string 'id'")
                if not isinstance(body, str):
                    raise ValueError(f"{source}: operation {document_id!r} has no string 'body'")
                operations.append((document_id, name if isinstance(name, str) else None, body))
        elif isinstance(data, dict) and "format" not in data:
            for document_id, body in data.items():
                if not isinstance(body, str):
                    raise ValueError(f"{source}: the document of {document_id!r} is not a string")
                operations.append((document_id, None, body))
        else:
            raise ValueError(
                f"{source}: not a persisted documents manifest (expected Apollo's "
                "apollo-persisted-query-manifest or a {hash: document} object)"
            )
        return cls(operations, source)

    @classmethod
    def load(cls, path: str) -> TrustedDocuments:
        """Read and parse the manifest at ``path``; ``ValueError`` names the file."""
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except OSError as exc:
            raise ValueError(f"TRUSTED_DOCUMENTS {path}: cannot read it: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"TRUSTED_DOCUMENTS {path}: not valid JSON: {exc}") from None
        return cls.parse(data, f"TRUSTED_DOCUMENTS {path}")


class PersistedOperations:
    """Resolves persisted references for the HTTP core and the WebSocket sessions.

    ``store``: the shared APQ store (``None``: this process only). ``trusted``: the manifest.
    ``mode``: ``allow-any`` or ``trusted-only``. ``apq``: accept registrations at all.
    ``cache_size``: entries of the local LRU of registered documents. ``timeout_s`` bounds
    each store call.
    """

    def __init__(
        self,
        *,
        store: APQStore | None = None,
        trusted: TrustedDocuments | None = None,
        mode: str = ALLOW_ANY,
        apq: bool = True,
        cache_size: int = 1024,
        timeout_s: float = 0.25,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"TRUSTED_DOCUMENTS_MODE must be one of {', '.join(MODES)}: {mode!r}")
        if mode == TRUSTED_ONLY and trusted is None:
            raise ValueError("TRUSTED_DOCUMENTS_MODE=trusted-only needs TRUSTED_DOCUMENTS")
        self.store = store
        self.trusted = trusted
        self.trusted_only = mode == TRUSTED_ONLY
        self.apq = apq and not self.trusted_only
        self.size = max(1, cache_size)
        self.timeout_s = timeout_s
        self._local: OrderedDict[str, str] = OrderedDict()
        self._trusted_ids: Mapping[str, str] = trusted.by_id if trusted is not None else {}
        self._trusted_bodies: frozenset[str] = (
            trusted.bodies if trusted is not None else frozenset()
        )
        #: The store failed at this loop time: skip it for ``STORE_RETRY_S``.
        self._store_failed_at: float | None = None
        self._warned_at = 0.0

    #: After a store failure, requests skip the store this long (no timeout paid per request).
    STORE_RETRY_S = 1.0

    @classmethod
    def from_settings(cls, settings: Any, store: APQStore | None = None) -> PersistedOperations:
        """From ``TRUSTED_DOCUMENTS``, ``TRUSTED_DOCUMENTS_MODE``, ``APQ_ENABLED``,
        ``APQ_CACHE_SIZE`` and ``APQ_TIMEOUT_S``; raises ``ValueError`` for a bad manifest."""
        path = settings.trusted_documents
        trusted = TrustedDocuments.load(path) if path else None
        return cls(
            store=store if settings.apq_enabled else None,
            trusted=trusted,
            mode=settings.trusted_documents_mode,
            apq=settings.apq_enabled,
            cache_size=settings.apq_cache_size,
            timeout_s=settings.apq_timeout_s,
        )

    # --- startup ---------------------------------------------------------------------------
    def preload(self, cache: DocumentCache) -> int:
        """Validate every trusted document against the cache's schema and pin it in the cache.
        Raises ``ValueError`` naming the first operation that does not validate. Returns the
        number of documents preloaded."""
        if self.trusted is None:
            return 0
        for document_id, name, body in self.trusted.operations:
            entry = cache.prepare(body)
            if entry.errors:
                problem = "; ".join(str(e.get("message")) for e in entry.errors)
                label = f"{name!r} (id {document_id})" if name else f"id {document_id}"
                raise ValueError(
                    f"{self.trusted.source}: operation {label} does not validate against the "
                    f"schema: {problem}"
                )
            cache.preload(body, entry)
        return len(self.trusted.operations)

    # --- requests ----------------------------------------------------------------------------
    def applies(self, document_id: str | None) -> bool:
        """Whether a request must go through ``resolve``: it names a persisted document, or
        only trusted documents may run."""
        return document_id is not None or self.trusted_only

    def resolve(self, query: str, document_id: str | None) -> Lookup | Awaitable[Lookup]:
        """The document to run for a request that sent ``query`` (``""``: none) and named
        ``document_id``. Raises ``PersistedError``; may return an awaitable (the store)."""
        if document_id is None:
            if self.trusted_only and query not in self._trusted_bodies:
                raise not_trusted("This document")
            return Lookup(query)
        trusted = self._trusted_ids.get(document_id)
        if query:
            if trusted is not None and trusted == query:
                return Lookup(query)
            if self.trusted_only:
                raise not_trusted(f"Document {document_id!r}")
            if sha256_hex(query) != document_id:
                raise PersistedError(
                    ErrorCode.BAD_REQUEST,
                    "The persisted query hash does not match the document: "
                    "extensions.persistedQuery.sha256Hash (or documentId) must be the sha256 of "
                    "the query text.",
                    request_error=False,
                )
            if not self.apq or document_id in self._local:
                return Lookup(query)
            return Lookup(query, document_id)
        if trusted is not None:
            return Lookup(trusted)
        if self.trusted_only:
            raise not_trusted(f"Document {document_id!r}")
        local = self._local.get(document_id)
        if local is not None:
            self._local.move_to_end(document_id)
            return Lookup(local)
        if not self.apq or self.store is None or self._store_resting():
            raise not_found()
        return self._fetch(document_id)

    def _store_resting(self) -> bool:
        failed = self._store_failed_at
        if failed is None:
            return False
        if time.monotonic() - failed < self.STORE_RETRY_S:
            return True
        self._store_failed_at = None
        return False

    def _store_failed(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        self._store_failed_at = now
        if now - self._warned_at > 10.0:
            self._warned_at = now
            log.warning(
                "persisted query store %s failed (%s: %s); answering not found for %.0f s",
                what,
                type(exc).__name__,
                exc,
                self.STORE_RETRY_S,
            )

    def _remember(self, document_id: str, document: str) -> None:
        local = self._local
        local[document_id] = document
        local.move_to_end(document_id)
        if len(local) > self.size:
            local.popitem(last=False)

    async def _fetch(self, document_id: str) -> Lookup:
        assert self.store is not None
        try:
            document = await asyncio.wait_for(self.store.get(document_id), self.timeout_s)
        except Exception as exc:
            self._store_failed("lookup", exc)
            raise not_found() from None
        if not isinstance(document, str) or sha256_hex(document) != document_id:
            raise not_found()
        self._remember(document_id, document)
        return Lookup(document)

    async def register(self, document_id: str, document: str) -> None:
        """Keep a document that prepared without errors: in the local LRU, and in the store
        (bounded by the timeout; a failure is logged and otherwise ignored)."""
        self._remember(document_id, document)
        if self.store is None or self._store_resting():
            return
        try:
            await asyncio.wait_for(self.store.put(document_id, document), self.timeout_s)
        except Exception as exc:
            self._store_failed("write", exc)
