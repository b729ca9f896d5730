"""Server side of the ``graphql-transport-ws`` subprotocol, sans-I/O.

Implements PROTOCOL.md of enisdenjo/graphql-ws ("GraphQL over WebSocket Protocol"); section
names below refer to it. See :mod:`service.protocols.ws_messages` for the action model.

Rules, with the section each comes from:

- Invalid message: non-JSON text, JSON that is not an object, a missing or unknown ``type``, a
  message type only the server may send, or a field of the wrong type -> ``Close(4400,
  "Invalid message received: <problem>")``. Binary frames are invalid too (4400).
- ``ConnectionInit``: the first -> :class:`Init`; a second, at any time -> ``Close(4429)``.
  Not received within ``init_timeout_s`` -> ``Close(4408)`` (from ``tick``); once received,
  that timer stops, even while ``on_connect`` is pending.
- ``ConnectionAck``: sent by ``accept()``, with ``payload`` only when one is given.
- ``Ping``/``Pong``: a client ``ping`` is answered at once with ``pong`` echoing its payload, in
  any state (before ``connection_init`` too); a client ``pong`` is ignored. With
  ``keepalive_s`` set, the server sends ``ping`` every ``keepalive_s`` once acknowledged.
- ``Subscribe``: before the ack (including while ``on_connect`` is pending) -> ``Close(4401,
  "Unauthorized")``; an id already active -> ``Close(4409, "Subscriber for <id> already
  exists")``, applied to every operation, single-result ones too; otherwise :class:`Start`.
- ``Next``/``Error``/``Complete``: sent only for active ids; ``error`` and ``complete`` end
  the operation. A client ``complete`` for an active id -> :class:`Stop` and no frame back; for
  any other id it is ignored.

Choices beyond PROTOCOL.md:

- More than ``max_operations`` at once: the new ``subscribe`` gets an ``error`` message
  ``[{"message": "too many operations on this connection"}]`` and is not started; the socket
  stays open (the limit is ours, not the client's protocol violation).
- A text frame over ``max_message_bytes`` -> ``Close(1009, "message too big")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, NotRequired, TypedDict

from service.protocols.ws_machine import ConnectionEvent, ConnectionState, ServerConnection
from service.protocols.ws_messages import (
    TOO_MANY_OPERATIONS,
    TRANSPORT_WS_SUBPROTOCOL,
    Action,
    CloseCode,
    Init,
    Start,
    Stop,
    WSProtocolError,
    clip,
    close_action,
    invalid_message,
    parse_json_object,
    parse_operation_payload,
    valid_id,
)

__all__ = [
    "CloseCode",
    "CompleteMessage",
    "ConnectionAckMessage",
    "ErrorMessage",
    "GraphQLTransportWSConnection",
    "NextMessage",
    "PingMessage",
    "PongMessage",
]

# Client messages arrive untrusted and are checked field by field by the handlers below, so
# only the messages this server sends have TypedDicts.


class ConnectionAckMessage(TypedDict):
    """Direction: Server -> Client. Section ``ConnectionAck``."""

    type: Literal["connection_ack"]
    payload: NotRequired[dict[str, Any]]


class PingMessage(TypedDict):
    """Direction: bidirectional. Section ``Ping``."""

    type: Literal["ping"]
    payload: NotRequired[dict[str, Any] | None]


class PongMessage(TypedDict):
    """Direction: bidirectional. Section ``Pong``."""

    type: Literal["pong"]
    payload: NotRequired[dict[str, Any] | None]


class NextMessage(TypedDict):
    """Direction: Server -> Client. Section ``Next``; ``payload`` is an ExecutionResult."""

    type: Literal["next"]
    id: str
    payload: dict[str, Any]


class ErrorMessage(TypedDict):
    """Direction: Server -> Client. Section ``Error``; ``payload`` is a list of GraphQL
    errors."""

    type: Literal["error"]
    id: str
    payload: list[dict[str, Any]]


class CompleteMessage(TypedDict):
    """Direction: bidirectional. Section ``Complete``."""

    type: Literal["complete"]
    id: str


_SERVER_ONLY_TYPES = frozenset({"connection_ack", "next", "error"})


def _optional_object(message: dict[str, Any], key: str, context: str) -> dict[str, Any] | None:
    value = message.get(key)
    if value is not None and not isinstance(value, dict):
        raise invalid_message(f"{context} {key} must be an object or null")
    return value


def _operation_id(message: dict[str, Any], context: str) -> str:
    value = message.get("id")
    if not valid_id(value):
        raise invalid_message(f"{context} id must be a non-empty string")
    assert isinstance(value, str)
    return value


class GraphQLTransportWSConnection(ServerConnection):
    """One ``graphql-transport-ws`` connection. Constructor arguments, methods, units and
    errors are those of :class:`~service.protocols.ws_machine.ServerConnection`; the protocol
    rules are in this module's docstring."""

    _result_type: ClassVar[str] = "next"
    subprotocol: ClassVar[str] = TRANSPORT_WS_SUBPROTOCOL

    def receive_bytes(self, data: bytes, now: float) -> list[Action]:
        """A binary frame arrived: always invalid -> ``Close(4400, "binary frames are not
        supported")`` (section "Invalid message")."""
        if self.closed:
            return []
        return self._close(CloseCode.BadRequest, "binary frames are not supported")

    def _receive_message(self, text: str, now: float) -> list[Action]:
        try:
            message = parse_json_object(text, self._decoder)
            kind = message.get("type")
            if not isinstance(kind, str):
                raise invalid_message("missing type" if kind is None else "type must be a string")
            handler = self._HANDLERS.get(kind)
            if handler is None:
                if kind in _SERVER_ONLY_TYPES:
                    raise invalid_message(f"unexpected type {clip(kind)} from a client")
                raise invalid_message(f"unknown type {clip(kind)}")
            return handler(self, message, now)
        except WSProtocolError as exc:
            return self._close(exc.code, exc.reason)

    # -- one handler per client message type ---------------------------------------------------

    def _handle_connection_init(self, message: dict[str, Any], now: float) -> list[Action]:
        payload = _optional_object(message, "payload", "connection_init")
        if self.state is not ConnectionState.WAITING_INIT:
            raise WSProtocolError(
                CloseCode.TooManyInitialisationRequests, "Too many initialisation requests"
            )
        self._move(ConnectionEvent.CLIENT_INIT)
        return [Init(payload if payload is not None else {})]

    def _handle_ping(self, message: dict[str, Any], now: float) -> list[Action]:
        payload = _optional_object(message, "payload", "ping")
        pong: PongMessage = {"type": "pong"}
        if payload is not None:
            pong["payload"] = payload
        return [self._send(pong)]

    def _handle_pong(self, message: dict[str, Any], now: float) -> list[Action]:
        _optional_object(message, "payload", "pong")
        return []

    def _handle_subscribe(self, message: dict[str, Any], now: float) -> list[Action]:
        id = _operation_id(message, "subscribe")
        payload = parse_operation_payload(message.get("payload"), "subscribe")
        if not self.acknowledged:
            raise WSProtocolError(CloseCode.Unauthorized, "Unauthorized")
        if id in self._active:
            raise WSProtocolError(
                CloseCode.SubscriberAlreadyExists, f"Subscriber for {id} already exists"
            )
        if not self._room_for_operation():
            error: ErrorMessage = {
                "type": "error",
                "id": id,
                "payload": [{"message": TOO_MANY_OPERATIONS}],
            }
            return [self._send(error)]
        self._active[id] = None
        return [Start(id, payload)]

    def _handle_complete(self, message: dict[str, Any], now: float) -> list[Action]:
        id = _operation_id(message, "complete")
        if id not in self._active:
            return []
        del self._active[id]
        return [Stop(id)]

    _HANDLERS: ClassVar[
        dict[str, Callable[[GraphQLTransportWSConnection, dict[str, Any], float], list[Action]]]
    ] = {
        "connection_init": _handle_connection_init,
        "ping": _handle_ping,
        "pong": _handle_pong,
        "subscribe": _handle_subscribe,
        "complete": _handle_complete,
    }

    # -- hooks -------------------------------------------------------------------------------------

    def _on_accept(self, ack_payload: dict[str, Any] | None, now: float) -> list[Action]:
        ack: ConnectionAckMessage = {"type": "connection_ack"}
        if ack_payload is not None:
            ack["payload"] = ack_payload
        return [self._send(ack)]

    def _on_reject(self, reason: str) -> list[Action]:
        return [close_action(CloseCode.Forbidden, reason or "Forbidden")]

    def _result_message(self, id: str, result: dict[str, Any]) -> Mapping[str, Any]:
        message: NextMessage = {"type": "next", "id": id, "payload": result}
        return message

    def _error_message(self, id: str, errors: list[dict[str, Any]]) -> Mapping[str, Any]:
        message: ErrorMessage = {"type": "error", "id": id, "payload": errors}
        return message

    def _complete_message(self, id: str) -> Mapping[str, Any]:
        message: CompleteMessage = {"type": "complete", "id": id}
        return message

    def _keepalive_message(self) -> Mapping[str, Any]:
        message: PingMessage = {"type": "ping"}
        return message
