"""Shared core of the two GraphQL-over-WebSocket server state machines.

Both machines are sans-I/O: the adapter feeds them what arrived (``receive_text``,
``receive_bytes``), what the application decided (``accept``, ``reject``, ``next``, ``error``,
``complete``, ``close``) and the current time (``tick``); each call returns a list of *actions*
for the adapter to carry out, in order. Nothing here reads a clock, touches a socket or imports
asyncio. Time is always an argument: monotonic seconds (``time.monotonic()`` in the adapter).

Actions:

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
the protocol does not allow it).

The connection states and their legal transitions live in one table, :data:`TRANSITIONS`,
applied by one method that raises :class:`UsageError` on an illegal move.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

__all__ = [
    "LEGACY_WS_SUBPROTOCOL",
    "MAX_CLOSE_REASON_BYTES",
    "TRANSITIONS",
    "TRANSPORT_WS_SUBPROTOCOL",
    "Action",
    "Close",
    "CloseCode",
    "ConnectionEvent",
    "ConnectionState",
    "Decoder",
    "Encoder",
    "Init",
    "Send",
    "ServerConnection",
    "Start",
    "Stop",
    "UsageError",
    "WSProtocolError",
    "choose_subprotocol",
    "clip",
    "close_action",
    "encode",
    "invalid_message",
    "make_connection",
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


class CloseCode(enum.IntEnum):
    """WebSocket close codes, named as graphql-ws names them (``src/common.ts``, ``CloseCode``).

    The 1xxx codes are the standard ones of RFC 6455 section 7.4.1 that these machines use.
    """

    NormalClosure = 1000
    GoingAway = 1001
    UnsupportedData = 1003
    MessageTooBig = 1009
    InternalServerError = 4500
    BadRequest = 4400
    #: The name PROTOCOL.md gives 4400 in its "Invalid message" section.
    InvalidMessage = 4400
    Unauthorized = 4401
    Forbidden = 4403
    SubprotocolNotAcceptable = 4406
    ConnectionInitialisationTimeout = 4408
    SubscriberAlreadyExists = 4409
    TooManyInitialisationRequests = 4429


#: Codes a server may put in a close frame: RFC 6455 7.4.1 (minus 1005/1006/1015, which must
#: never be sent) and the 3000-4999 application range.
_SENDABLE_STANDARD_CODES: Final = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})


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
    "extensions": dict | None}``.
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
    if not isinstance(query, str):
        raise bad("payload.query must be a string")
    variables = payload.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise bad("payload.variables must be an object or null")
    operation_name = payload.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise bad("payload.operationName must be a string or null")
    extensions = payload.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise bad("payload.extensions must be an object or null")
    return {
        "query": query,
        "variables": variables,
        "operationName": operation_name,
        "extensions": extensions,
    }


def valid_id(value: object) -> bool:
    """True when ``value`` can identify an operation: a non-empty string."""
    return isinstance(value, str) and value != ""


class ConnectionState(enum.Enum):
    """Where a connection stands; the same four states serve both subprotocols."""

    #: Socket open, no ``connection_init`` yet; the initialisation timer runs.
    WAITING_INIT = "waiting_init"
    #: ``Init`` was emitted; the adapter is running ``on_connect``. No timer runs.
    INIT_PENDING = "init_pending"
    #: ``connection_ack`` was sent; operations may run; keep-alive timer runs if configured.
    ACKNOWLEDGED = "acknowledged"
    #: A ``Close`` was emitted; every call returns ``[]``.
    CLOSED = "closed"


class ConnectionEvent(enum.Enum):
    """What moves a connection between :class:`ConnectionState` values."""

    CLIENT_INIT = "client_init"  # first connection_init arrived
    ACCEPT = "accept"  # adapter: on_connect accepted
    REJECT = "reject"  # adapter: on_connect rejected
    CLOSE = "close"  # any Close action (protocol error, timeout, server close)


_S = ConnectionState
_E = ConnectionEvent

#: Every legal move. Anything not listed is illegal and raises :class:`UsageError`.
TRANSITIONS: Final[Mapping[tuple[ConnectionState, ConnectionEvent], ConnectionState]] = {
    (_S.WAITING_INIT, _E.CLIENT_INIT): _S.INIT_PENDING,
    (_S.INIT_PENDING, _E.ACCEPT): _S.ACKNOWLEDGED,
    (_S.INIT_PENDING, _E.REJECT): _S.CLOSED,
    (_S.WAITING_INIT, _E.CLOSE): _S.CLOSED,
    (_S.INIT_PENDING, _E.CLOSE): _S.CLOSED,
    (_S.ACKNOWLEDGED, _E.CLOSE): _S.CLOSED,
}


class ServerConnection(ABC):
    """Server side of one GraphQL-over-WebSocket connection, as a sans-I/O state machine.

    Construct it when the WebSocket upgrade is accepted with the negotiated subprotocol
    (:func:`make_connection`). Keyword arguments (units in the names):

    - ``now``: monotonic seconds at construction; the initialisation timer starts here.
    - ``init_timeout_s``: seconds the client has to send ``connection_init`` (> 0).
    - ``keepalive_s``: seconds between server keep-alive frames once acknowledged; ``None``
      disables them (> 0 otherwise).
    - ``max_operations``: operations that may run at once on this connection (>= 1).
    - ``max_message_bytes``: largest accepted text frame, in UTF-8 bytes (>= 1).
    - ``encoder``: replaces :func:`encode` for this connection's frames.

    Raises ``ValueError`` for an out-of-range setting.

    The adapter schedules ``tick(now)`` at ``next_deadline()`` and calls it again whenever that
    deadline changes (after any call). While ``on_connect`` runs (``INIT_PENDING``) no timer
    applies: the adapter must bound ``on_connect`` itself.
    """

    subprotocol: ClassVar[str]

    def __init__(
        self,
        *,
        now: float,
        init_timeout_s: float = 3.0,
        keepalive_s: float | None = None,
        max_operations: int = 100,
        max_message_bytes: int = 1_048_576,
        encoder: Encoder | None = None,
        decoder: Decoder = json.loads,
    ) -> None:
        if not init_timeout_s > 0:
            raise ValueError(f"init_timeout_s must be > 0, got {init_timeout_s!r}")
        if keepalive_s is not None and not keepalive_s > 0:
            raise ValueError(f"keepalive_s must be > 0 or None, got {keepalive_s!r}")
        if max_operations < 1:
            raise ValueError(f"max_operations must be >= 1, got {max_operations!r}")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be >= 1, got {max_message_bytes!r}")
        self._state = ConnectionState.WAITING_INIT
        self._init_deadline = now + init_timeout_s
        self._keepalive_s = keepalive_s
        self._next_keepalive: float | None = None
        self._max_operations = max_operations
        self._max_message_bytes = max_message_bytes
        self._encoder = encoder
        self._decoder = decoder
        # Insertion-ordered set of running operation ids.
        self._active: dict[str, None] = {}

    # -- observers ---------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current :class:`ConnectionState`."""
        return self._state

    @property
    def acknowledged(self) -> bool:
        """True once ``connection_ack`` was sent and until the connection closes."""
        return self._state is ConnectionState.ACKNOWLEDGED

    @property
    def closed(self) -> bool:
        """True once a :class:`Close` action was returned."""
        return self._state is ConnectionState.CLOSED

    @property
    def active_ids(self) -> frozenset[str]:
        """Ids of the operations started (``Start`` emitted) and not yet ended."""
        return frozenset(self._active)

    def next_deadline(self) -> float | None:
        """Monotonic time at which ``tick()`` next has work, or ``None`` if no timer runs.

        That is the initialisation deadline while waiting for ``connection_init`` and the next
        keep-alive time once acknowledged (if ``keepalive_s`` is set).
        """
        if self._state is ConnectionState.WAITING_INIT:
            return self._init_deadline
        if self._state is ConnectionState.ACKNOWLEDGED:
            return self._next_keepalive
        return None

    # -- input from the client ---------------------------------------------------------------

    def receive_text(self, text: str, now: float) -> list[Action]:
        """A text frame arrived.

        Frames longer than ``max_message_bytes`` UTF-8 bytes close the socket with
        ``1009 message too big``; the rest are handled per subprotocol.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        if _too_big(text, self._max_message_bytes):
            return self._close(CloseCode.MessageTooBig, "message too big")
        return self._receive_message(text, now)

    @abstractmethod
    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        """A binary frame arrived. Neither subprotocol uses them: the result is a ``Close``."""

    @abstractmethod
    def _receive_message(self, text: str, now: float) -> list[Action]:
        """Handle a text frame within the size limit, on an open connection."""

    # -- input from the application ------------------------------------------------------------

    def accept(self, ack_payload: dict[str, Any] | None, now: float) -> list[Action]:
        """``on_connect`` accepted the pending ``Init``: send ``connection_ack``.

        ``ack_payload`` (an object, or ``None`` for none) goes into the ack's ``payload``.
        Starts the keep-alive timer at ``now`` if ``keepalive_s`` is set. The legacy protocol
        appends its first ``ka`` and a :class:`Start` for each operation the client sent while
        ``on_connect`` was pending. Returns ``[]`` if the connection closed meanwhile; raises
        :class:`UsageError` if no ``Init`` is pending.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        self._move(ConnectionEvent.ACCEPT)
        if self._keepalive_s is not None:
            self._next_keepalive = now + self._keepalive_s
        return self._on_accept(ack_payload, now)

    def reject(self, reason: str, now: float) -> list[Action]:
        """``on_connect`` rejected the pending ``Init``: answer and close with 4403.

        Returns ``[]`` if the connection closed meanwhile; raises :class:`UsageError` if no
        ``Init`` is pending.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        self._move(ConnectionEvent.REJECT)
        self._forget_operations()
        return self._on_reject(reason)

    def next(self, id: str, result: dict[str, Any]) -> list[Action]:
        """Send one execution result (``{"data": ..., "errors": [...]}``, already formatted)
        for operation ``id``. Returns ``[]`` if ``id`` is not active or the connection is
        closed."""
        if self._state is ConnectionState.CLOSED or id not in self._active:
            return []
        return [self._send(self._result_message(id, result))]

    def error(self, id: str, errors: list[dict[str, Any]]) -> list[Action]:
        """Operation ``id`` failed before execution (e.g. validation): send ``error``; the
        operation ends (no ``complete`` follows).

        ``errors`` is a non-empty list of formatted GraphQL errors, each with a ``message``
        string; anything else raises :class:`UsageError`. Returns ``[]`` if ``id`` is not
        active or the connection is closed.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        if not errors or not all(
            isinstance(e, dict) and isinstance(e.get("message"), str) for e in errors
        ):
            raise UsageError("errors must be a non-empty list of objects with a 'message' string")
        if id not in self._active:
            return []
        del self._active[id]
        return [self._send(self._error_message(id, errors))]

    def complete(self, id: str) -> list[Action]:
        """The server finished operation ``id``: send ``complete`` and forget the id.

        Returns ``[]`` if ``id`` is not active or the connection is closed.
        """
        if self._state is ConnectionState.CLOSED or id not in self._active:
            return []
        del self._active[id]
        return [self._send(self._complete_message(id))]

    def close(self, code: int, reason: str) -> list[Action]:
        """The server closes the socket (e.g. ``4403`` token expired, ``1001`` going away).

        ``code`` must be sendable: 1000-1003, 1007-1011 or 3000-4999, else :class:`UsageError`.
        Returns ``[Close]``, or ``[]`` if already closed.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        if code not in _SENDABLE_STANDARD_CODES and not 3000 <= code <= 4999:
            raise UsageError(f"close code {code} may not be sent by a server")
        return self._close(code, reason)

    def tick(self, now: float) -> list[Action]:
        """Run the timers due at ``now``.

        - Initialisation timeout: no ``connection_init`` by construction time +
          ``init_timeout_s`` -> ``Close(4408, "Connection initialisation timeout")``.
        - Keep-alive (acknowledged, ``keepalive_s`` set): one keep-alive frame per call when due;
          the next one is due ``keepalive_s`` later (from ``now`` if the adapter fell behind by
          a whole period, so a late timer never causes a burst).
        """
        if self._state is ConnectionState.WAITING_INIT and now >= self._init_deadline:
            return self._close(
                CloseCode.ConnectionInitialisationTimeout, "Connection initialisation timeout"
            )
        due = self._next_keepalive
        if self._state is ConnectionState.ACKNOWLEDGED and due is not None and now >= due:
            assert self._keepalive_s is not None
            following = due + self._keepalive_s
            self._next_keepalive = following if following > now else now + self._keepalive_s
            return [self._send(self._keepalive_message())]
        return []

    # -- per-subprotocol hooks -----------------------------------------------------------------

    @abstractmethod
    def _on_accept(self, ack_payload: dict[str, Any] | None, now: float) -> list[Action]:
        """Actions after the move to ACKNOWLEDGED (the ack, and whatever follows it)."""

    @abstractmethod
    def _on_reject(self, reason: str) -> list[Action]:
        """Actions after the move to CLOSED by a rejection (must end with a Close)."""

    @abstractmethod
    def _result_message(self, id: str, result: dict[str, Any]) -> Mapping[str, Any]:
        """The wire message carrying one execution result."""

    @abstractmethod
    def _error_message(self, id: str, errors: list[dict[str, Any]]) -> Mapping[str, Any]:
        """The wire message reporting a failed operation."""

    @abstractmethod
    def _complete_message(self, id: str) -> Mapping[str, Any]:
        """The wire message reporting a finished operation."""

    @abstractmethod
    def _keepalive_message(self) -> Mapping[str, Any]:
        """The periodic keep-alive wire message."""

    # -- helpers for subclasses ----------------------------------------------------------------

    def _move(self, event: ConnectionEvent) -> None:
        """Apply ``event`` through :data:`TRANSITIONS`; raise :class:`UsageError` if illegal."""
        try:
            self._state = TRANSITIONS[self._state, event]
        except KeyError:
            raise UsageError(
                f"{event.value!r} is not allowed in state {self._state.value!r}"
            ) from None

    def _send(self, message: Mapping[str, Any]) -> Send:
        encoder = self._encoder if self._encoder is not None else encode
        return Send(encoder(message))

    def _close(self, code: int, reason: str) -> list[Action]:
        self._move(ConnectionEvent.CLOSE)
        self._forget_operations()
        return [close_action(code, reason)]

    def _forget_operations(self) -> None:
        self._active.clear()
        self._next_keepalive = None

    def _room_for_operation(self) -> bool:
        return self._operation_count() < self._max_operations

    def _operation_count(self) -> int:
        return len(self._active)


def _too_big(text: str, limit: int) -> bool:
    """True when ``text`` encodes to more than ``limit`` UTF-8 bytes (1 to 4 per character)."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """Pick the subprotocol to answer a WebSocket upgrade with.

    ``offered`` is the client's ``Sec-WebSocket-Protocol`` values in order (surrounding spaces
    are ignored; names are case-sensitive). Rule: ``graphql-transport-ws`` when offered (it is
    the maintained protocol), whatever the client's order; else ``graphql-ws``; else ``None``,
    and the adapter refuses the upgrade.
    """
    names = {name.strip() for name in offered}
    for candidate in (TRANSPORT_WS_SUBPROTOCOL, LEGACY_WS_SUBPROTOCOL):
        if candidate in names:
            return candidate
    return None


def make_connection(subprotocol: str, **kwargs: Any) -> ServerConnection:
    """Create the state machine for ``subprotocol`` (a value :func:`choose_subprotocol`
    returned); ``kwargs`` go to :class:`ServerConnection`. Raises ``ValueError`` for an
    unknown subprotocol."""
    # Imported here: both modules import this one.
    from service.protocols.graphql_transport_ws import GraphQLTransportWSConnection
    from service.protocols.graphql_ws import GraphQLWSConnection

    classes: dict[str, type[ServerConnection]] = {
        TRANSPORT_WS_SUBPROTOCOL: GraphQLTransportWSConnection,
        LEGACY_WS_SUBPROTOCOL: GraphQLWSConnection,
    }
    try:
        cls = classes[subprotocol]
    except KeyError:
        raise ValueError(f"unknown GraphQL WebSocket subprotocol {subprotocol!r}") from None
    return cls(**kwargs)
