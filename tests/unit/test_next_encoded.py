"""``next_encoded`` (a result encoded once, spliced into each subscriber's frame) sends exactly
the frame ``next`` would, on both machines, over generated ids and results."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from service.protocols.negotiate import SUBPROTOCOLS, make_connection
from service.protocols.ws_messages import Send

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.text(min_size=1, max_size=12).filter(
    lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)
)


def encode(message: Any) -> str:
    return orjson.dumps(message).decode()  # the workers' encoder


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(SUBPROTOCOLS),
    ids,
    st.dictionaries(st.sampled_from(["data", "errors"]), json_values),
)
def test_next_encoded_sends_the_frame_next_sends(subprotocol: str, op_id: str, result: Any) -> None:
    frames = []
    for spliced in (False, True):
        machine = make_connection(subprotocol, now=0.0, encoder=encode)
        machine.receive_text(encode({"type": "connection_init"}), 0.0)
        machine.accept(None, 0.0)
        start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
        machine.receive_text(
            encode({"type": start, "id": op_id, "payload": {"query": "{ a }"}}), 0.0
        )
        actions = (
            machine.next_encoded(op_id, encode(result)) if spliced else machine.next(op_id, result)
        )
        assert len(actions) == 1 and isinstance(actions[0], Send)
        frames.append(actions[0].text)
    assert frames[0] == frames[1]
    assert orjson.loads(frames[1])["payload"] == result
