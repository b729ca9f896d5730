"""Server side of the legacy ``graphql-ws`` subprotocol, sans-I/O.

Implements PROTOCOL.md of apollographql/subscriptions-transport-ws ("GraphQL over WebSocket
Protocol"); the ``GQL_*`` names below are its section names. See
:mod:`service.protocols.ws_messages` for the action model.

This protocol has no ``ping``/``pong``: the machine never sends either type (keep-alive is
``ka``), and a client ``ping`` is just an unknown type.

Rules, with the section each comes from:

- ``GQL_CONNECTION_INIT``: the first -> :class:`Init`; a second -> ``Close(4429, "Too many
  initialisation requests")``; none within ``init_timeout_s`` -> ``Close(4408, "Connection
  initialisation timeout")`` (from ``tick``). A payload that is present but not an object gets
  ``connection_error`` and the init is ignored (the timer keeps running).
- ``GQL_CONNECTION_ACK`` + ``GQL_CONNECTION_KEEP_ALIVE``: ``accept()`` sends the ack (with
  ``payload`` only when one is given; the reference client ignores it), then ``ka`` at once if
  ``keepalive_s`` is set, then ``ka`` every ``keepalive_s`` (from ``tick``).
- ``GQL_CONNECTION_ERROR``: ``reject(reason)`` sends ``connection_error`` with
  ``{"message": reason}`` and then closes with 4403 (the reference server closed with 1011;
  4403 tells the client's logs it was refused, matching graphql-transport-ws).
- ``GQL_START``: see "operations started early" below; an id that is already active stops the
  old operation and starts the new one (``[Stop(id), Start(id, ...)]``, as the reference server
  did); no ``complete`` is sent for the old one, since the client would take it for the new.
- ``GQL_STOP``: for an active id -> ``[Stop(id), Send(complete)]`` ("When client unsubscribe
  ... the server ... sends GQL_COMPLETE"); for an unknown id -> ignored.
- ``GQL_CONNECTION_TERMINATE``: ``Stop`` for every active id, then ``Close(1000, "connection
  terminated by client")``.
- ``GQL_DATA``: ``next()``; ``GQL_COMPLETE``: ``complete()``.
- ``GQL_ERROR``: ``error(id, errors)`` sends ``{"type": "error", "id": id, "payload":
  errors[0]}``: the protocol's payload is one ``Error`` object, and the operation ends there
  with no ``complete`` (the reference server sent none; its client forgets the operation on
  ``error``). An adapter that wants every validation error shown can instead call ``next(id,
  {"data": None, "errors": errors})`` then ``complete(id)``, as the reference server did.

Choices for bad input, made so that old clients keep working (the protocol says a parse error
"does not disconnect the client, just ignore the message"):

- Non-JSON text or a non-object -> ``connection_error`` ``{"message": "Invalid message
  received: ..."}``; the socket stays open.
- A missing, unknown or server-only ``type`` -> ``error`` ``{"message": "Invalid message
  type: '<type>'"}`` (with the message's ``id`` when it is a string); the socket stays open.
- ``start``/``stop`` with a bad ``id`` or ``start`` with a bad payload -> ``error`` naming the
  problem (with the ``id`` when usable); the socket stays open.
- ``start`` before any ``connection_init`` -> ``error`` ``{"message": "connection not
  initialised"}`` for that id; the operation does not run.
- More than ``max_operations`` at once -> ``error`` ``{"message": "too many operations on
  this connection"}`` for that id; the operation does not run.
- Binary frames -> ``Close(1003, "binary frames are not supported")`` (this protocol names no
  close codes; 1003 is RFC 6455's "unsupported data"). Text over ``max_message_bytes`` ->
  ``Close(1009, "message too big")``.

Operations started early: the reference client (subscriptions-transport-ws) sends ``start``
right behind ``connection_init`` without waiting for the ack, and the reference server held
those until ``onConnect`` finished. So ``start`` (and ``stop``) while ``on_connect`` is pending
are queued: ``accept()`` returns the ack, the first ``ka`` and then a :class:`Start` for each
queued operation in arrival order; ``reject()`` drops them. A ``stop`` for a queued operation
removes it and sends ``complete`` (no ``Stop``: it never started). Queued operations count
against ``max_operations``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from service.protocols.ws_machine import ConnectionEvent, ConnectionState, ServerConnection
from service.protocols.ws_messages import (
    LEGACY_WS_SUBPROTOCOL,
    TOO_MANY_OPERATIONS,
    Action,
    CloseCode,
    Init,
    Start,
    Stop,
    WSProtocolError,
    clip,
    close_action,
    parse_json_object,
    parse_operation_payload,
    valid_id,
)

__all__ = [
    "CONNECTION_NOT_INITIALISED",
    "CompleteMessage",
    "ConnectionAckMessage",
    "ConnectionErrorMessage",
    "DataMessage",
    "ErrorMessage",
    "GraphQLWSConnection",
    "KeepAliveMessage",
]

CONNECTION_NOT_INITIALISED = "connection not initialised"


class ConnectionErrorMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_CONNECTION_ERROR``; ``payload`` is
    ``{"message": str}``."""

    type: Literal["connection_error"]
    payload: dict[str, Any]


class ConnectionAckMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_CONNECTION_ACK``."""

    type: Literal["connection_ack"]
    payload: NotRequired[dict[str, Any]]


class DataMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_DATA``; ``payload`` is ``{"data": ...,
    "errors"?: [...]}``."""

    type: Literal["data"]
    id: str
    payload: dict[str, Any]


class ErrorMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_ERROR``; ``payload`` is one error object
    (``{"message": str, ...}``); ``id`` is left out when the client's was unusable."""

    type: Literal["error"]
    id: NotRequired[str]
    payload: dict[str, Any]


class CompleteMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_COMPLETE``."""

    type: Literal["complete"]
    id: str


class KeepAliveMessage(TypedDict):
    """Direction: Server -> Client. Section ``GQL_CONNECTION_KEEP_ALIVE``."""

    type: Literal["ka"]


class GraphQLWSConnection(ServerConnection):
    """One legacy ``graphql-ws`` connection. Constructor arguments, methods, units and errors
    are those of :class:`~service.protocols.ws_machine.ServerConnection`; the protocol rules and
    the choices made where the protocol is silent are in this module's docstring.

    Deviation from the shared contract: ``accept()`` may also return :class:`Start` actions,
    for operations the client sent while ``on_connect`` was pending.
    """

    _result_type: ClassVar[str] = "data"
    subprotocol: ClassVar[str] = LEGACY_WS_SUBPROTOCOL

    def __init__(self, **options: Any) -> None:
        """``options`` are :class:`ServerConnection`'s."""
        super().__init__(**options)
        # Operations received while on_connect is pending, in arrival order.
        self._queued: dict[str, dict[str, Any]] = {}

    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        """A binary frame arrived -> ``Close(1003, "binary frames are not supported")``."""
        if self.closed:
            return []
        return self._close(CloseCode.UnsupportedData, "binary frames are not supported")

    def _receive_message(self, text: str, now: float) -> list[Action]:
        try:
            message = parse_json_object(text, self._decoder)
        except WSProtocolError as exc:
            return [self._connection_error(exc.reason)]
        kind = message.get("type")
        handler = self._HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [self._error(message.get("id"), f"Invalid message type: {clip(kind)}")]
        return handler(self, message, now)

    # -- one handler per client message type ---------------------------------------------------

    def _handle_connection_init(self, message: dict[str, Any], now: float) -> list[Action]:
        if self.state is not ConnectionState.WAITING_INIT:
            return self._close(
                CloseCode.TooManyInitialisationRequests, "Too many initialisation requests"
            )
        payload = message.get("payload")
        if payload is not None and not isinstance(payload, dict):
            return [
                self._connection_error(
                    "Invalid message received: connection_init payload must be an object"
                )
            ]
        self._move(ConnectionEvent.CLIENT_INIT)
        return [Init(payload if payload is not None else {})]

    def _handle_start(self, message: dict[str, Any], now: float) -> list[Action]:
        id = message.get("id")
        if not valid_id(id):
            return [
                self._error(None, "Invalid message received: start id must be a non-empty string")
            ]
        assert isinstance(id, str)
        if self.state is ConnectionState.WAITING_INIT:
            return [self._error(id, CONNECTION_NOT_INITIALISED)]
        actions: list[Action] = []
        if id in self._active:
            del self._active[id]
            actions.append(Stop(id))
        self._queued.pop(id, None)
        try:
            payload = parse_operation_payload(message.get("payload"), "start")
        except WSProtocolError as exc:
            actions.append(self._error(id, exc.reason))
            return actions
        if not self._room_for_operation():
            actions.append(self._error(id, TOO_MANY_OPERATIONS))
            return actions
        if self.state is ConnectionState.INIT_PENDING:
            self._queued[id] = payload
            return actions
        self._active[id] = None
        actions.append(Start(id, payload))
        return actions

    def _handle_stop(self, message: dict[str, Any], now: float) -> list[Action]:
        id = message.get("id")
        if not valid_id(id):
            return [
                self._error(None, "Invalid message received: stop id must be a non-empty string")
            ]
        assert isinstance(id, str)
        complete = self._send(self._complete_message(id))
        if id in self._active:
            del self._active[id]
            return [Stop(id), complete]
        if self._queued.pop(id, None) is not None:
            return [complete]
        return []

    def _handle_connection_terminate(self, message: dict[str, Any], now: float) -> list[Action]:
        stops: list[Action] = [Stop(id) for id in self._active]
        return stops + self._close(CloseCode.NormalClosure, "connection terminated by client")

    _HANDLERS: ClassVar[
        dict[str, Callable[[GraphQLWSConnection, dict[str, Any], float], list[Action]]]
    ] = {
        "connection_init": _handle_connection_init,
        "start": _handle_start,
        "stop": _handle_stop,
        "connection_terminate": _handle_connection_terminate,
    }

    # -- hooks -------------------------------------------------------------------------------------

    def _on_accept(self, ack_payload: dict[str, Any] | None, now: float) -> list[Action]:
        ack: ConnectionAckMessage = {"type": "connection_ack"}
        if ack_payload is not None:
            ack["payload"] = ack_payload
        actions: list[Action] = [self._send(ack)]
        if self._keepalive_s is not None:
            actions.append(self._send(self._keepalive_message()))
        queued, self._queued = self._queued, {}
        for id, payload in queued.items():
            self._active[id] = None
            actions.append(Start(id, payload))
        return actions

    def _on_reject(self, reason: str) -> list[Action]:
        return [
            self._connection_error(reason),
            close_action(CloseCode.Forbidden, reason or "Forbidden"),
        ]

    def _result_message(self, id: str, result: dict[str, Any]) -> Mapping[str, Any]:
        message: DataMessage = {"type": "data", "id": id, "payload": result}
        return message

    def _error_message(self, id: str, errors: list[dict[str, Any]]) -> Mapping[str, Any]:
        message: ErrorMessage = {"type": "error", "id": id, "payload": errors[0]}
        return message

    def _complete_message(self, id: str) -> Mapping[str, Any]:
        message: CompleteMessage = {"type": "complete", "id": id}
        return message

    def _keepalive_message(self) -> Mapping[str, Any]:
        message: KeepAliveMessage = {"type": "ka"}
        return message

    # -- helpers -----------------------------------------------------------------------------------

    def _forget_operations(self) -> None:
        super()._forget_operations()
        self._queued.clear()

    def _operation_count(self) -> int:
        return len(self._active) + len(self._queued)

    def _connection_error(self, message: str) -> Action:
        frame: ConnectionErrorMessage = {
            "type": "connection_error",
            "payload": {"message": message},
        }
        return self._send(frame)

    def _error(self, id: object, message: str) -> Action:
        frame: ErrorMessage = {"type": "error", "payload": {"message": message}}
        if isinstance(id, str):
            frame["id"] = id
        return self._send(frame)
