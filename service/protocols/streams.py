"""Sans-I/O framing of GraphQL results streamed over one HTTP response.

Two protocols, chosen by the request's Accept header (``stream_kind``):

- **GraphQL over Server-Sent Events**, graphql-sse's PROTOCOL.md, distinct connections mode
  (``Accept: text/event-stream``): every result is a ``next`` event whose data is the JSON
  execution result, and the end of the operation is a ``complete`` event. Request errors found
  before execution (parse, validation, variables, persisted documents) are ``next`` events too,
  because a user agent fails a connection answered with a 4xx. Idle streams get SSE comment
  lines (``:``) as keepalives.
- **Multipart subscriptions**, Apollo's multipart HTTP protocol for subscriptions
  (``Accept: multipart/mixed;subscriptionSpec="1.0"``): ``multipart/mixed`` with the boundary
  ``graphql``; each part is JSON: ``{"payload": <execution result>}`` for an event,
  ``{"payload": null, "errors": [...]}`` for a transport-level error that ends the stream, and
  ``{}`` as a heartbeat. The final boundary ends the response.

Everything here maps already-encoded JSON bytes to bytes on the wire; no I/O, no JSON library.
"""

from __future__ import annotations

__all__ = [
    "MULTIPART",
    "SSE",
    "Framing",
    "MultipartFraming",
    "SSEFraming",
    "framing_for",
    "stream_kind",
]

SSE = "sse"
MULTIPART = "multipart"

#: Response headers both protocols send: no caching, and no buffering in nginx (it honours
#: ``X-Accel-Buffering`` from the upstream), so each event leaves as soon as it is written.
_STREAM_HEADERS = [("cache-control", "no-cache"), ("x-accel-buffering", "no")]


def _parameters(fields: list[str]) -> dict[str, str]:
    params = {}
    for param in fields:
        key, _, value = param.strip().partition("=")
        params[key.strip().lower()] = value.strip().strip('"').strip()
    return params


def stream_kind(accept: str | None) -> str | None:
    """``SSE`` when the Accept header asks for ``text/event-stream``, ``MULTIPART`` when it asks
    for ``multipart/mixed`` with a ``subscriptionSpec`` parameter, else ``None`` (an ordinary
    JSON response). Entries with ``q=0`` are ignored; SSE wins when both are acceptable."""
    if not accept or ("event-stream" not in accept and "multipart" not in accept):
        return None
    found: str | None = None
    for part in accept.split(","):
        fields = part.strip().split(";")
        media = fields[0].strip().lower()
        if media not in ("text/event-stream", "multipart/mixed"):
            continue
        params = _parameters(fields[1:])
        try:
            if float(params.get("q", "1")) <= 0:
                continue
        except ValueError:
            continue
        if media == "text/event-stream":
            return SSE
        if "subscriptionspec" in params:
            found = MULTIPART
    return found


class Framing:
    """How one protocol frames a stream of results. ``start`` opens the body, ``next`` carries
    one execution result (encoded JSON), ``heartbeat`` keeps an idle stream alive, ``end``
    closes the body after the last result."""

    kind: str
    content_type: str
    headers: list[tuple[str, str]]

    def start(self) -> bytes:
        return b""

    def next(self, result: bytes) -> bytes:
        raise NotImplementedError

    def heartbeat(self) -> bytes:
        raise NotImplementedError

    def end(self) -> bytes:
        raise NotImplementedError

    def fatal(self, errors: bytes) -> bytes:
        """A request error (an encoded JSON list of GraphQL errors) that ends the stream; ``end``
        follows."""
        raise NotImplementedError


class SSEFraming(Framing):
    """graphql-sse, distinct connections mode."""

    kind = SSE
    content_type = "text/event-stream; charset=utf-8"
    headers = [("content-type", content_type), *_STREAM_HEADERS]

    def start(self) -> bytes:
        # A comment first: proxies and clients see the response begin at once.
        return b":\n\n"

    def next(self, result: bytes) -> bytes:
        # JSON from an encoder holds no raw newlines, so one data line carries it.
        return b"event: next\ndata: " + result + b"\n\n"

    def heartbeat(self) -> bytes:
        return b":\n\n"

    def end(self) -> bytes:
        # An empty data field: EventSource dispatches no event without one.
        return b"event: complete\ndata: \n\n"

    def fatal(self, errors: bytes) -> bytes:
        return self.next(b'{"errors":' + errors + b"}")


BOUNDARY = "graphql"
_DELIMITER = b"\r\n--" + BOUNDARY.encode()
_PART_HEAD = b"\r\ncontent-type: application/json\r\n\r\n"


class MultipartFraming(Framing):
    """Apollo's multipart subscriptions (``subscriptionSpec="1.0"``).

    Each part is followed at once by the next delimiter, so a client that splits on the
    delimiter hands an event over as soon as it arrives (not when the next one comes)."""

    kind = MULTIPART
    content_type = f'multipart/mixed;boundary="{BOUNDARY}";subscriptionSpec="1.0"'
    headers = [("content-type", content_type), *_STREAM_HEADERS]

    def start(self) -> bytes:
        return _DELIMITER

    def _part(self, body: bytes) -> bytes:
        return _PART_HEAD + body + _DELIMITER

    def next(self, result: bytes) -> bytes:
        return self._part(b'{"payload":' + result + b"}")

    def heartbeat(self) -> bytes:
        return self._part(b"{}")

    def end(self) -> bytes:
        return b"--\r\n"

    def fatal(self, errors: bytes) -> bytes:
        return self._part(b'{"payload":null,"errors":' + errors + b"}")


def framing_for(kind: str) -> Framing:
    """The framing of ``SSE`` or ``MULTIPART``."""
    return SSEFraming() if kind == SSE else MultipartFraming()
