"""The base of both GraphQL-over-WebSocket server state machines (sans-I/O).

Nothing here reads a clock, touches a socket or imports asyncio. Time is always an argument:
monotonic seconds (``loop.time()`` in the adapter). The action model is described in
:mod:`service.protocols.ws_messages`.

The connection states and their legal transitions live in one table, :data:`TRANSITIONS`,
applied by one method that raises :class:`UsageError` on an illegal move.
"""

from __future__ import annotations

import enum
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from service.protocols.codes import CloseCode, is_sendable
from service.protocols.ws_messages import (
    Action,
    Decoder,
    Encoder,
    Send,
    UsageError,
    close_action,
    encode,
)

__all__ = ["NEXT_TAIL", "TRANSITIONS", "ConnectionEvent", "ConnectionState", "ServerConnection"]


#: What follows the result in a result message (``next_head``).
NEXT_TAIL = b"}"


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
    #: The ``type`` of the message that carries a result (``next``; legacy ``data``).
    _result_type: ClassVar[str]

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
        # Running operation ids, in insertion order, each with the UTF-8 head of its result
        # message once ``next_bytes`` made it (``None`` until then).
        self._active: dict[str, bytes | None] = {}

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

    def next_encoded(self, id: str, result_json: str) -> list[Action]:
        """``next`` for a result already encoded as JSON text: the frame is spliced around it
        rather than encoded again (one event's result, encoded once, shared by many
        subscribers). Same rules as ``next``; the frame equals the one ``next`` would send."""
        if self._state is ConnectionState.CLOSED or id not in self._active:
            return []
        id_json = json.dumps(id, ensure_ascii=False)
        return [Send(f'{{"type":"{self._result_type}","id":{id_json},"payload":{result_json}}}')]

    def next_bytes(self, id: str, result_json: bytes) -> bytes | None:
        """``next_encoded`` for UTF-8 JSON bytes, returning the message's UTF-8 bytes (what
        ``next_encoded``'s ``Send.text`` encodes to), or ``None`` where it returns ``[]``."""
        head = self.next_head(id)
        return None if head is None else head + result_json + NEXT_TAIL

    def next_head(self, id: str) -> bytes | None:
        """The UTF-8 head of operation ``id``'s result messages: the message for a result
        encoded as ``result_json`` is ``head + result_json + NEXT_TAIL`` (``next_bytes``).
        ``None`` if ``id`` is not active or the connection is closed. Made once per operation,
        so that subscribers sharing one encoded result can share whole frames too."""
        active = self._active
        if id not in active or self._state is ConnectionState.CLOSED:
            return None
        head = active[id]
        if head is None:
            id_json = json.dumps(id, ensure_ascii=False)
            head = f'{{"type":"{self._result_type}","id":{id_json},"payload":'.encode()
            active[id] = head
        return head

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

        ``code`` must be sendable: 1000-1003, 1007-1012 or 3000-4999, else :class:`UsageError`.
        Returns ``[Close]``, or ``[]`` if already closed.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        if not is_sendable(code):
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
