"""Sans-I/O GraphQL-over-HTTP request shaping (graphql.github.io/graphql-over-http, draft).

Everything here is pure: bytes and strings in, a ``GraphQLParams`` or an ``HTTPError`` out. The
engine executes; the transports own sockets. JSON decoding is injected (``loads``) so this module
needs only the standard library.

Spec sections implemented:
- 5.1 Accept: ``application/graphql-response+json`` and ``application/json``; a missing Accept
  means ``application/json`` (legacy watershed rule); ``*/*`` and ``application/*`` choose
  ``application/json`` so legacy clients and curl get 200 for request errors; otherwise 406.
- 5.2 GET: parameters in the query string; ``variables`` and ``extensions`` JSON-encoded.
- 5.3 POST: ``application/json`` body ``{query, variables?, operationName?, extensions?}``;
  ``application/graphql`` body is the query itself (a common extension).
- Persisted documents: ``documentId`` (the draft's persisted-documents appendix) or Apollo's
  ``extensions.persistedQuery`` may stand in for ``query`` (``persisted_document_id``).
- 7 Response status codes for request errors: 400 for malformed requests regardless of media type.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from service.protocols.codes import ErrorCode

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


class HTTPError(Exception):
    """A request the client got wrong: answer ``status`` with ``message`` in a GraphQL error.

    ``headers`` are extra response headers (``Allow`` on 405). ``code`` goes into
    ``extensions.code``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        code: ErrorCode = ErrorCode.BAD_REQUEST,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.code = code


@dataclasses.dataclass(slots=True)
class GraphQLParams:
    """One GraphQL-over-HTTP request's parameters (spec section 5, "Request Parameters").

    Not frozen: a frozen dataclass's ``__init__`` costs about 1.5 us more, on every request.
    """

    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None
    #: The persisted document the request names (``documentId``, or Apollo's
    #: ``extensions.persistedQuery.sha256Hash``), lower-cased, without a ``sha256:`` prefix.
    #: ``query`` is then ``""`` when the request sent no document.
    document_id: str | None = None


_accept_cache: dict[str, str] = {}


def accept_entries(accept: str) -> list[tuple[str, float]]:
    """An Accept header value (RFC 9110 section 12.5.1) as ``(media range, q)`` pairs, in
    order: the range lower-cased without its parameters, ``q`` 1.0 when absent and 0.0 when it
    is not a number (callers decide what else counts as a refusal)."""
    entries = []
    for part in accept.split(","):
        fields = part.strip().split(";")
        q = 1.0
        for param in fields[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        entries.append((fields[0].strip().lower(), q))
    return entries


def negotiate(accept: str | None) -> str:
    """Choose the response media type from an Accept header value.

    Returns ``application/graphql-response+json`` or ``application/json``. Quality values are
    honoured; on a tie the explicit ``application/graphql-response+json`` wins.
    Raises ``HTTPError(406)`` when neither type nor a wildcard for them is acceptable.
    """
    if not accept:
        return APPLICATION_JSON
    cached = _accept_cache.get(accept)
    if cached is not None:
        return cached
    best: tuple[float, int, str] | None = None
    for media, q in accept_entries(accept):
        if q <= 0:
            continue
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (q, 2, GRAPHQL_RESPONSE_JSON)
        elif media == APPLICATION_JSON:
            candidate = (q, 1, APPLICATION_JSON)
        elif media in ("*/*", "application/*"):
            candidate = (q, 0, APPLICATION_JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        raise HTTPError(
            406,
            f"Not acceptable: Accept {accept!r} allows neither {GRAPHQL_RESPONSE_JSON} "
            f"nor {APPLICATION_JSON}.",
            code=ErrorCode.NOT_ACCEPTABLE,
        )
    if len(_accept_cache) < 256:
        _accept_cache[accept] = best[2]
    return best[2]


def _optional_object(value: Any, name: str) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise HTTPError(400, f"The '{name}' parameter must be a JSON object or null.")


#: Longest document id accepted (a sha256 is 64 hex digits; manifests may use longer ids).
MAX_DOCUMENT_ID_CHARS = 256


def persisted_document_id(document_id: Any, extensions: Any) -> str | None:
    """The persisted document a request names, or ``None``.

    ``documentId`` (GraphQL-over-HTTP draft, persisted documents; ``sha256:<hex>`` or a bare
    id) wins over Apollo's APQ ``extensions.persistedQuery`` (``{"version": 1,
    "sha256Hash": <hex>}``). Raises ``HTTPError(400)`` for a malformed reference.
    """
    if document_id is None and isinstance(extensions, dict):
        persisted = extensions.get("persistedQuery")
        if persisted is None:
            return None
        if not isinstance(persisted, dict):
            raise HTTPError(400, "extensions.persistedQuery must be an object.")
        if persisted.get("version") != 1:
            raise HTTPError(
                400,
                f"Unsupported persisted query version {persisted.get('version')!r}; use 1.",
                code=ErrorCode.PERSISTED_QUERY_NOT_SUPPORTED,
            )
        document_id = persisted.get("sha256Hash")
        if not isinstance(document_id, str) or not document_id:
            raise HTTPError(400, "extensions.persistedQuery.sha256Hash must be a string.")
    elif document_id is None:
        return None
    if not isinstance(document_id, str) or not document_id:
        raise HTTPError(400, "The 'documentId' parameter must be a non-empty string.")
    if len(document_id) > MAX_DOCUMENT_ID_CHARS:
        raise HTTPError(400, f"The document id is longer than {MAX_DOCUMENT_ID_CHARS} characters.")
    if document_id[:7].lower() == "sha256:":
        document_id = document_id[7:]
    return document_id.lower()


def _params_from_mapping(data: dict[str, Any]) -> GraphQLParams:
    query = data.get("query")
    extensions = data.get("extensions")
    document_id = None
    if "documentId" in data or (isinstance(extensions, dict) and "persistedQuery" in extensions):
        document_id = persisted_document_id(data.get("documentId"), extensions)
    if query is None:
        if document_id is None:
            raise HTTPError(400, "The 'query' parameter is missing.")
        query = ""
    if not isinstance(query, str):
        raise HTTPError(400, "The 'query' parameter must be a string.")
    operation_name = data.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise HTTPError(400, "The 'operationName' parameter must be a string or null.")
    return GraphQLParams(
        query,
        _optional_object(data.get("variables"), "variables"),
        operation_name or None,
        _optional_object(extensions, "extensions"),
        document_id,
    )


def parse_get(query_string: str, loads: Callable[[str | bytes], Any] = json.loads) -> GraphQLParams:
    """Parameters of a GET request (spec 5.2); ``variables``/``extensions`` are JSON text."""
    raw = parse_qs(query_string, keep_blank_values=True)
    data: dict[str, Any] = {key: values[-1] for key, values in raw.items()}
    for name in ("variables", "extensions"):
        text = data.get(name)
        if text is None or text == "":
            data[name] = None
            continue
        try:
            data[name] = loads(text)
        except ValueError as exc:
            raise HTTPError(400, f"The '{name}' parameter is not valid JSON: {exc}") from None
    return _params_from_mapping(data)


def parse_post(
    content_type: str | None, body: bytes, loads: Callable[[str | bytes], Any] = json.loads
) -> GraphQLParams:
    """Parameters of a POST request (spec 5.3) from its Content-Type and body.

    Raises ``HTTPError`` 415 for an unsupported Content-Type and 400 for a malformed body.
    """
    if content_type == APPLICATION_JSON:  # the common case, exactly as clients send it
        media = APPLICATION_JSON
    else:
        media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == APPLICATION_JSON or media.endswith("+json"):
        if not body:
            raise HTTPError(400, "The request body is empty; expected a JSON object.")
        try:
            data = loads(body)
        except ValueError as exc:
            raise HTTPError(400, f"The request body is not valid JSON: {exc}") from None
        if isinstance(data, list):
            raise HTTPError(400, "Batched requests (a JSON array) are not supported.")
        if not isinstance(data, dict):
            raise HTTPError(400, "The request body must be a JSON object.")
        return _params_from_mapping(data)
    if media == "application/graphql":
        try:
            query = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "The request body is not valid UTF-8.") from None
        return GraphQLParams(query, None, None, None)
    shown = content_type if content_type else "none"
    raise HTTPError(
        415,
        f"Unsupported Content-Type {shown!r}: use application/json or application/graphql.",
        code=ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    )
