"""The event loop's lock-free metrics show on /metrics exactly as prometheus_client's would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from forwarder.loop_metrics import LoopCounter, LoopHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
OBSERVED = (0.0, 0.001, 0.0011, 0.05, 0.1, 3.0, 1e9)


def samples(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_loop_counter_exposes_what_a_counter_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop_counter = LoopCounter("requests", "Requests by result.", ["result"], registry=ours)
    counter = Counter("requests", "Requests by result.", ["result"], registry=theirs)
    for result in ("accepted", "accepted", "duplicate"):
        loop_counter.labels(result).inc()
        counter.labels(result).inc()

    assert samples(ours) == {s for s in samples(theirs) if not s[0].endswith("_created")}


def test_a_loop_histogram_exposes_what_a_histogram_would_bucket_for_bucket() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    plain = LoopHistogram("latency_seconds", "Latency.", BUCKETS, registry=ours)
    labelled = LoopHistogram("delay_seconds", "Delay.", BUCKETS, registry=ours, labelnames=["path"])
    reference_plain = Histogram("latency_seconds", "Latency.", buckets=BUCKETS, registry=theirs)
    reference_labelled = Histogram("delay_seconds", "Delay.", ["path"], buckets=BUCKETS, registry=theirs)
    for value in OBSERVED:  # on a bound, between bounds, above the last one
        plain.observe(value)
        reference_plain.observe(value)
        labelled.labels("webhook").observe(value)
        reference_labelled.labels("webhook").observe(value)

    assert samples(ours) == {s for s in samples(theirs) if not s[0].endswith("_created")}
