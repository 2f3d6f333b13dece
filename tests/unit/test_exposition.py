"""``/metrics`` is rendered fresh for people and scrapers, and at a bounded rate for a flood."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter

from forwarder.metrics import Exposition


def test_a_burst_is_fresh_then_renders_are_rationed_to_the_budget() -> None:
    registry = CollectorRegistry()
    counter = Counter("things", "Things.", registry=registry)
    exposition = Exposition(registry, burst=3, per_second=2)

    seen = []
    for _ in range(6):
        counter.inc()
        seen.append(exposition.render("")[0])
    assert [b"things_total %d.0" % n in body for n, body in enumerate(seen, 1)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert seen[3] == seen[2]  # past the burst: the last rendering again

    time.sleep(0.6)  # a token back
    counter.inc()
    assert b"things_total 7.0" in exposition.render("")[0]


def test_each_format_keeps_its_own_rendering() -> None:
    registry = CollectorRegistry()
    Counter("things", "Things.", registry=registry).inc()
    exposition = Exposition(registry, burst=1, per_second=0.001)
    text, text_type = exposition.render("")
    open_metrics, open_type = exposition.render("application/openmetrics-text; version=1.0.0")
    assert text_type.startswith("text/plain") and open_type.startswith("application/openmetrics-text")
    assert open_metrics.endswith(b"# EOF\n") and not text.endswith(b"# EOF\n")
