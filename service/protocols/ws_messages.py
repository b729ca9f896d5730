"""The vocabulary both GraphQL-over-WebSocket machines share: actions, errors, message parsing.

Both machines (:mod:`service.protocols.graphql_transport_ws`, :mod:`service.protocols.graphql_ws`)
are sans-I/O: the adapter feeds them what arrived and what the application decided, plus the
current time, and each call returns a list of *actions* for the adapter to carry out, in order:

- :class:`Send` -- write one WebSocket text frame.
- :class:`Close` -- close the WebSocket; it is always the last action and the machine is then
  closed: every later call returns ``[]``. The machine forgets its operations at that point, so
  the adapter must cancel every operation task it still runs.
- :class:`Init` -- run ``on_connect(payload)``, then call ``accept()`` or ``reject()``.
- :class:`Start` -- start the operation; report results with ``next``/``error``/``complete``.
- :class:`Stop` -- cancel the operation. After a ``Stop`` (or after ``error``/``complete``) the
  adapter must not report on that operation again: the client may reuse its id at once.

Errors say whose fault they are: :class:`WSProtocolError` is the client's (it carries the close
code to answer with); :class:`UsageError` is ours (the adapter called a method in a state where
the protocol does not allow it). Close codes live in :mod:`service.protocols.codes`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from service.protocols.codes import CloseCode

__all__ = [
    "LEGACY_WS_SUBPROTOCOL",
    "MAX_CLOSE_REASON_BYTES",
    "TOO_MANY_OPERATIONS",
    "TRANSPORT_WS_SUBPROTOCOL",
    "Action",
    "Close",
    "CloseCode",
    "Decoder",
    "Encoder",
    "Init",
    "Send",
    "Start",
    "Stop",
    "UsageError",
    "WSProtocolError",
    "clip",
    "close_action",
    "encode",
    "invalid_message",
    "parse_json_object",
    "parse_operation_payload",
    "valid_id",
]

TRANSPORT_WS_SUBPROTOCOL: Final = "graphql-transport-ws"
LEGACY_WS_SUBPROTOCOL: Final = "graphql-ws"

#: A close frame carries at most 125 payload bytes, two of which are the code (RFC 6455 5.5).
MAX_CLOSE_REASON_BYTES: Final = 123

Encoder = Callable[[Mapping[str, Any]], str]
#: Decodes one text frame (``json.loads`` by default); raises ``ValueError`` on bad JSON.
Decoder = Callable[[str], Any]


def encode(message: Mapping[str, Any]) -> str:
    """Encode one outgoing protocol message as compact JSON text.

    Every frame either machine sends goes through this function (unless the adapter passes its
    own ``encoder`` to the machine), so a faster encoder can replace it in one place. A
    replacement must return ``str`` (decode orjson's bytes) and keep non-ASCII safe to send.

    Raises ``TypeError``/``ValueError`` if ``message`` holds something JSON cannot represent:
    that is the caller's bug (results must be formatted before they reach the machine).
    """
    return json.dumps(message, separators=(",", ":"))


#: The error message for a ``subscribe``/``start`` over ``max_operations`` (both protocols).
TOO_MANY_OPERATIONS: Final = "too many operations on this connection"


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``text`` (already-encoded JSON) as one WebSocket text frame."""

    text: str


@dataclass(frozen=True, slots=True)
class Close:
    """Close the WebSocket with ``code`` and ``reason``; no more actions follow.

    Build it with :func:`close_action`, which keeps ``reason`` within the 123 UTF-8 bytes a
    close frame can carry.
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Init:
    """The client sent ``connection_init``.

    ``payload`` is the client's payload object (``{}`` when absent or null). The adapter runs
    ``on_connect(payload)`` and then calls ``accept()`` or ``reject()`` on the machine.
    """

    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Start:
    """Start operation ``id``.

    ``payload`` always has exactly these keys, with validated types:
    ``{"query": str, "variables": dict | None, "operationName": str | None,
    "extensions": dict | None}``; plus ``"documentId": str`` when the client sent one. A
    payload that names a persisted document (``documentId`` or
    ``extensions.persistedQuery``) may leave out ``query`` (it is then ``None``).
    """

    id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Stop:
    """The client stopped operation ``id``: cancel it. Any frame owed to the client for this
    (the legacy protocol's ``complete``) is already in the same action list."""

    id: str


Action = Send | Close | Init | Start | Stop


class WSProtocolError(Exception):
    """The client broke the protocol. ``code``/``reason`` are the close frame to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class UsageError(RuntimeError):
    """Our bug: the adapter called a machine method in a state where that is not allowed
    (e.g. ``accept()`` without a pending ``Init``) or with a malformed argument."""


def close_action(code: int, reason: str) -> Close:
    """Build a :class:`Close`, cutting ``reason`` to at most 123 UTF-8 bytes.

    The cut falls on a character boundary; characters that UTF-8 cannot encode (lone
    surrogates smuggled in through JSON escapes) become ``?``.
    """
    raw = reason.encode("utf-8", "replace")
    if len(raw) > MAX_CLOSE_REASON_BYTES:
        raw = raw[:MAX_CLOSE_REASON_BYTES]
    return Close(int(code), raw.decode("utf-8", "ignore"))


def clip(value: object, limit: int = 40) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for echoing client input in errors."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def invalid_message(problem: str) -> WSProtocolError:
    """The error for a malformed client message: 4400, ``"Invalid message received: <problem>"``
    (graphql-transport-ws PROTOCOL.md, "Invalid message")."""
    return WSProtocolError(CloseCode.BadRequest, f"Invalid message received: {problem}")


def parse_json_object(text: str, decoder: Decoder = json.loads) -> dict[str, Any]:
    """Decode one text frame into a JSON object with ``decoder``.

    Raises :class:`WSProtocolError` (4400, reason naming the problem) when the text is not
    JSON (including nesting too deep to decode) or is JSON but not an object.
    """
    try:
        value = decoder(text)
    except (ValueError, RecursionError):
        raise invalid_message("not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid_message(f"expected a JSON object, got {type(value).__name__}")
    return value


def parse_operation_payload(payload: object, message_type: str) -> dict[str, Any]:
    """Validate the payload of a ``message_type`` message requesting an operation and return
    it normalised.

    Implements the payload shape of graphql-transport-ws ``Subscribe`` and legacy ``GQL_START``:
    ``query`` a string; ``variables``, ``operationName``, ``extensions`` absent, null or of
    their type (object, string, object). The result always has all four keys (absent -> None)
    and nothing else.

    Raises :class:`WSProtocolError` (4400) naming the message type and the first offending
    field, e.g. ``"Invalid message received: subscribe payload.query must be a string"``.
    """

    def bad(problem: str) -> WSProtocolError:
        return invalid_message(f"{message_type} {problem}")

    if not isinstance(payload, dict):
        raise bad("payload must be an object")
    query = payload.get("query")
    extensions = payload.get("extensions")
    document_id = payload.get("documentId")
    if document_id is not None and not isinstance(document_id, str):
        raise bad("payload.documentId must be a string")
    persisted = document_id is not None or (
        isinstance(extensions, dict) and isinstance(extensions.get("persistedQuery"), dict)
    )
    if not isinstance(query, str) and not (query is None and persisted):
        raise bad("payload.query must be a string")
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise bad("payload.variables must be an object or null")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad("payload.operationName must be a string or null")
    if extensions is not None and not isinstance(extensions, dict):
        raise bad("payload.extensions must be an object or null")
    normalised = {
        "query": query,
        "variables": variables,
        "operationName": operation_name,
        "extensions": extensions,
    }
    if document_id is not None:
        normalised["documentId"] = document_id
    return normalised


def valid_id(value: object) -> bool:
    """True when ``value`` can identify an operation: a non-empty string."""
    return isinstance(value, str) and value != ""
