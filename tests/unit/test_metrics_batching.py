"""Batched metrics equal unbatched ones: ``PrometheusRecorder`` hands histogram observations to
prometheus-client in bulk (sum and per-bucket counts); the exposition must be the same as one
``observe`` per value, over generated values, including values on bucket boundaries. Its
``answered`` (kept, then counted in batches) counts what ``request`` and ``duration`` count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from service.observability.metrics import (
    _BOUNDS,
    LATENCY_BUCKETS_S,
    PrometheusRecorder,
    _Observations,
)

values = st.one_of(
    st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
    st.sampled_from([*LATENCY_BUCKETS_S, 0.0, 1e-9, 99.0, -1.0]),
)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(values, max_size=40), max_size=5))
def test_bulk_observations_expose_what_single_ones_do(batches: list[list[float]]) -> None:
    one_by_one, in_bulk = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h", "d", ["k"], buckets=LATENCY_BUCKETS_S, registry=one_by_one)
    bulk = Histogram("h", "d", ["k"], buckets=LATENCY_BUCKETS_S, registry=in_bulk)
    single.labels("x"), bulk.labels("x")  # both children exist from the start
    pending = _Observations(_BOUNDS)
    for batch in batches:  # several flushes, as the server does once a second
        for value in batch:
            single.labels("x").observe(value)
            pending.add(value)
        pending.flush_into(bulk.labels("x"))
    expected, got = samples(one_by_one), samples(in_bulk)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value)), key


# (transport, operation type, status, name, seconds) as the HTTP core reports them.
answers = st.tuples(
    st.sampled_from(["http", "ws"]),
    st.sampled_from(["query", "mutation", "unknown"]),
    st.sampled_from(["ok", "error", "rejected"]),
    st.none() | st.sampled_from(["A", "B", "Some.Name"]),
    values,
)


def _requests_and_durations() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        key: value
        for key, value in samples(REGISTRY).items()
        if key[0].startswith(("graphql_requests_total", "graphql_request_duration_seconds"))
    }


def _delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value - before.get(key, 0.0) != 0.0
    }


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(answers, max_size=30), max_size=4),
    st.integers(1, 8),
    st.booleans(),
)
def test_answered_counts_what_request_and_duration_count(
    batches: list[list[tuple[str, str, str, str | None, float]]],
    answered_max: int,
    one_kind: bool,
) -> None:
    if one_kind:  # every request of a flush of one kind: the batches counted without a loop
        batches = [[batch[0][:4] + entry[4:] for entry in batch] for batch in batches if batch]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PrometheusRecorder, "ANSWERED_MAX", answered_max)
        deltas = []
        for kept in (True, False):
            recorder = PrometheusRecorder(operation_names=("A",))
            before = _requests_and_durations()
            for batch in batches:  # flushes in between, as the server's once a second
                for transport, operation_type, status, name, seconds in batch:
                    if kept:
                        recorder.answered(transport, operation_type, status, name, seconds)
                    else:
                        recorder.request(transport, operation_type, status)
                        recorder.duration(operation_type, name, seconds)
                recorder.flush()
            deltas.append(_delta(before, _requests_and_durations()))
    kept_delta, direct = deltas
    assert kept_delta.keys() == direct.keys()
    for key, value in direct.items():
        assert abs(kept_delta[key] - value) <= 1e-9 * max(1.0, abs(value)), key
    assert sum(len(batch) for batch in batches) == sum(
        value for key, value in direct.items() if key[0] == "graphql_requests_total"
    )
