"""Every wire code this service speaks, spelled once.

- :class:`ErrorCode`: the ``extensions.code`` of a GraphQL error (GraphQL spec section 7.1.2
  leaves ``extensions`` to the server). Names follow Apollo Server's built-in codes
  (``GRAPHQL_PARSE_FAILED``, ``GRAPHQL_VALIDATION_FAILED``, ``BAD_USER_INPUT``,
  ``PERSISTED_QUERY_NOT_SUPPORTED``, ``INTERNAL_SERVER_ERROR``, ...) plus this service's own,
  each named after the HTTP status or the limit it reports.
- :class:`CloseCode`: WebSocket close codes: RFC 6455 section 7.4.1, RFC 6455's registry
  (1012 Service Restart) and the 4xxx codes of graphql-ws's PROTOCOL.md, named as graphql-ws
  names them in ``src/common.ts``.

The metrics' label set for ``graphql_errors_total`` is derived from :class:`ErrorCode`, so a new
code is counted under its own name as soon as it is added here.
"""

from __future__ import annotations

import enum

__all__ = ["SENDABLE_CLOSE_CODES", "CloseCode", "ErrorCode", "is_sendable"]


class ErrorCode(enum.StrEnum):
    """``extensions.code`` values. A ``StrEnum``: each member *is* its string on the wire."""

    # Request errors (GraphQL-over-HTTP section 7; no ``data`` key in the response).
    GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
    GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    BAD_REQUEST = "BAD_REQUEST"
    OPERATION_NOT_FOUND = "OPERATION_NOT_FOUND"
    PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
    #: Apollo's APQ: the hash is unknown here; the client retries with the document.
    PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
    #: ``TRUSTED_DOCUMENTS_MODE=trusted-only``: the document is not in the trusted manifest.
    OPERATION_NOT_TRUSTED = "OPERATION_NOT_TRUSTED"
    INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
    # HTTP-level refusals, named after their status.
    NOT_FOUND = "NOT_FOUND"  # 404
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"  # 405
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"  # 406
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"  # 415
    # Limits.
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"  # 413
    VARIABLES_TOO_LARGE = "VARIABLES_TOO_LARGE"  # 413
    QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
    TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
    TOO_MANY_FIELDS = "TOO_MANY_FIELDS"
    TOO_MANY_DEFINITIONS = "TOO_MANY_DEFINITIONS"  # operations and fragments per document
    OPERATION_TIMEOUT = "OPERATION_TIMEOUT"
    # Who may do what.
    UNAUTHENTICATED = "UNAUTHENTICATED"  # 401
    FORBIDDEN = "FORBIDDEN"
    # Ours, not the client's.
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"  # 503: overloaded, or a backend is down
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class CloseCode(enum.IntEnum):
    """WebSocket close codes, named as graphql-ws names them (``src/common.ts``)."""

    # RFC 6455 section 7.4.1.
    NormalClosure = 1000
    GoingAway = 1001
    UnsupportedData = 1003
    InvalidFramePayloadData = 1007  # e.g. a text frame that is not UTF-8
    PolicyViolation = 1008
    MessageTooBig = 1009
    InternalError = 1011
    # IANA WebSocket close code registry: the server restarts; the client should reconnect.
    ServiceRestart = 1012
    # graphql-ws PROTOCOL.md.
    BadRequest = 4400
    #: The name PROTOCOL.md gives 4400 in its "Invalid message" section.
    InvalidMessage = 4400
    Unauthorized = 4401
    Forbidden = 4403
    SubprotocolNotAcceptable = 4406
    ConnectionInitialisationTimeout = 4408
    SubscriberAlreadyExists = 4409
    TooManyInitialisationRequests = 4429
    InternalServerError = 4500


#: Standard codes a server may put in a close frame (RFC 6455 7.4.1 and the IANA registry;
#: 1005, 1006 and 1015 must never be sent). 3000-4999 are the application range.
SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012})


def is_sendable(code: int) -> bool:
    """True when a server may send ``code`` in a close frame."""
    return code in SENDABLE_CLOSE_CODES or 3000 <= code <= 4999
