"""Batched metrics equal unbatched ones: ``PrometheusRecorder`` hands histogram observations to
prometheus-client in bulk (sum and per-bucket counts); the exposition must be the same as one
``observe`` per value, over generated values, including values on bucket boundaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from service.observability.metrics import _BOUNDS, LATENCY_BUCKETS_S, _Observations

values = st.one_of(
    st.floats(min_value=0.0, max_value=60.0, allow_nan=False),
    st.sampled_from([*LATENCY_BUCKETS_S, 0.0, 1e-9, 99.0]),
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
