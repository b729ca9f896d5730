"""``next_encoded`` and ``next_bytes`` (a result encoded once, spliced into each subscriber's
frame) send exactly the frame ``next`` would, on both machines, over generated ids and results;
and none once the operation ended."""

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


def started(subprotocol: str, op_id: str) -> Any:
    machine = make_connection(subprotocol, now=0.0, encoder=encode)
    machine.receive_text(encode({"type": "connection_init"}), 0.0)
    machine.accept(None, 0.0)
    start = "subscribe" if subprotocol == "graphql-transport-ws" else "start"
    machine.receive_text(encode({"type": start, "id": op_id, "payload": {"query": "{ a }"}}), 0.0)
    return machine


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(SUBPROTOCOLS),
    ids,
    st.lists(
        st.dictionaries(st.sampled_from(["data", "errors"]), json_values), min_size=1, max_size=3
    ),
)
def test_spliced_frames_equal_the_frames_next_sends(
    subprotocol: str, op_id: str, results: list[Any]
) -> None:
    plain, spliced, as_bytes = (started(subprotocol, op_id) for _ in range(3))
    for result in results:  # several: the head made for the first is reused
        actions = plain.next(op_id, result)
        assert len(actions) == 1 and isinstance(actions[0], Send)
        expected = actions[0].text
        assert spliced.next_encoded(op_id, encode(result)) == [Send(expected)]
        assert as_bytes.next_bytes(op_id, orjson.dumps(result)) == expected.encode()
        assert orjson.loads(expected)["payload"] == result
    for machine in (plain, spliced, as_bytes):
        machine.complete(op_id)
    assert spliced.next_encoded(op_id, encode(results[0])) == []
    assert as_bytes.next_bytes(op_id, orjson.dumps(results[0])) is None
