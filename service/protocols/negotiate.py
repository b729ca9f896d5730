"""Which GraphQL-over-WebSocket subprotocol to speak, and the machine for each.

The table :data:`MACHINES` maps a ``Sec-WebSocket-Protocol`` value to its server state machine;
:func:`choose_subprotocol` implements the choice rule, :func:`make_connection` builds a machine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from service.protocols.graphql_transport_ws import GraphQLTransportWSConnection
from service.protocols.graphql_ws import GraphQLWSConnection
from service.protocols.ws_machine import ServerConnection
from service.protocols.ws_messages import LEGACY_WS_SUBPROTOCOL, TRANSPORT_WS_SUBPROTOCOL

__all__ = ["MACHINES", "SUBPROTOCOLS", "choose_subprotocol", "make_connection"]

#: Every subprotocol this server speaks, in order of preference, with its machine.
MACHINES: Final[Mapping[str, type[ServerConnection]]] = {
    TRANSPORT_WS_SUBPROTOCOL: GraphQLTransportWSConnection,
    LEGACY_WS_SUBPROTOCOL: GraphQLWSConnection,
}
#: The subprotocol names, in order of preference (for the upgrade response).
SUBPROTOCOLS: Final = tuple(MACHINES)


def choose_subprotocol(offered: Iterable[str]) -> str | None:
    """Pick the subprotocol to answer a WebSocket upgrade with.

    ``offered`` is the client's ``Sec-WebSocket-Protocol`` values in order (surrounding spaces
    are ignored; names are case-sensitive). Rule: ``graphql-transport-ws`` when offered (it is
    the maintained protocol), whatever the client's order; else ``graphql-ws``; else ``None``,
    and the adapter refuses the upgrade.
    """
    names = {name.strip() for name in offered}
    for candidate in SUBPROTOCOLS:
        if candidate in names:
            return candidate
    return None


def make_connection(subprotocol: str, **kwargs: Any) -> ServerConnection:
    """Create the state machine for ``subprotocol`` (a value :func:`choose_subprotocol`
    returned); ``kwargs`` go to :class:`~service.protocols.ws_machine.ServerConnection`.
    Raises ``ValueError`` for an unknown subprotocol."""
    try:
        cls = MACHINES[subprotocol]
    except KeyError:
        raise ValueError(f"unknown GraphQL WebSocket subprotocol {subprotocol!r}") from None
    return cls(**kwargs)
