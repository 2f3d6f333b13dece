"""A bounded soak: steady load through every sink, one of them flapping, RSS and descriptors sampled.

About 2 minutes by default; ``FORWARDER_SOAK_SECONDS=3600`` for an hour.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.doubles.datadog_intake import DatadogIntake
from tests.doubles.otlp_receiver import OtlpReceiver
from tests.reliability.load import Loader, accounting, proc_sample, read_jsonl, wait_all_arrived
from tests.service import Service, kill_quietly

SOAK_SECONDS = float(os.environ.get("FORWARDER_SOAK_SECONDS", "120"))
SAMPLE_EVERY_S = 2.0
FLAP_S = 4.0
RATE_PER_S = 80
# RSS: the last third's median may exceed the middle third's by 24 MB or 25 %, whichever is
# more, and no sample may exceed RSS_LIMIT_KB, the product's bound.
# Measured on this 2-core machine at this load: with every sink healthy, VmRSS stayed within
# 64-66 MB from 15 s to 120 s. With the Datadog intake flapping, it is a sawtooth that is
# still warming up at 120 s: it climbs about 0.3 MB/s and drops 20-30 MB at each full
# collection, about every 65 s; over 300 s the troughs went 68, 74, 85, 79, 80 MB and the
# peaks 76, 97, 102, 105, 105 MB, i.e. bounded after about 150 s. The median of a 40 s third
# therefore moves with where the collections fall and with the warm-up: 120 s runs gave
# -12, -0.4, +1.1, +5.4, +7, +16 and +20 MB, and +23 MB with glibc held to two malloc arenas
# (so arenas are not the cause). A leak is what a longer soak shows (FORWARDER_SOAK_SECONDS=1800:
# 0.1 MB/s is 60 MB per third); in 2 minutes, a leak of 0.6 MB/s or more fails.
RSS_TOLERANCE_KB = 24 * 1024
RSS_TOLERANCE_RATIO = 0.25
RSS_LIMIT_KB = 150 * 1024
# Descriptors: connections come and go (up to 4 to the Datadog intake, 1 to OTLP, the loader's
# keep-alive connection, this test's /status and /metrics requests): the last third's largest
# count may exceed the middle third's by 5. A descriptor leaked per failed Datadog request
# (one failure every 8 s at least) would exceed that within a third of the run.
FD_TOLERANCE = 5


def _prometheus_events_total(service: Service) -> float:
    total = 0.0
    for family in text_string_to_metric_families(service.metrics()):
        for sample in family.samples:
            if sample.name == "workos_events_total":
                total += sample.value
    return total


@dataclass(frozen=True)
class Soak:
    acked: list[str]
    outcomes: dict[str, int]
    jsonl: list[str]
    datadog: list[str]
    datadog_statuses: list[int]
    otlp: list[str]
    prometheus_counted: float
    samples: list[tuple[float, int, int]]
    """(seconds since start, VmRSS kB, open descriptors)."""
    lost: dict[str, str]
    """Sink -> why not every acknowledged id arrived, for the sinks that lost some."""

    def thirds(self) -> tuple[list[tuple[float, int, int]], list[tuple[float, int, int]]]:
        third = len(self.samples) // 3
        return self.samples[third : 2 * third], self.samples[2 * third :]


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    """Run the soak once; the tests below each judge one side of it."""
    with DatadogIntake("test-api-key") as intake, OtlpReceiver() as receiver:
        service = Service(
            data_dir=Path(tmp_path_factory.mktemp("soak")),
            env={
                "DD_API_KEY": "test-api-key",
                "DD_LOGS_URL": intake.url,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.base_url,
                "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
            },
        )
        try:
            yield _run(service, intake, receiver)
        finally:
            kill_quietly(service)


def _run(service: Service, intake: DatadogIntake, receiver: OtlpReceiver) -> Soak:
    service.start()
    assert service.proc is not None
    pid = service.proc.pid
    stop_flapping = threading.Event()

    def flap() -> None:
        while not stop_flapping.wait(FLAP_S * 2):
            intake.down_for(FLAP_S)

    flapper = threading.Thread(target=flap, name="flapper", daemon=True)
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    with Loader([service], rate_per_s=RATE_PER_S, timeout_s=5) as loader:
        intake.down_for(FLAP_S)
        flapper.start()
        try:
            while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
                assert service.proc.poll() is None, service.stderr_path.read_text()[-2000:]
                rss, fds = proc_sample(pid)
                samples.append((round(elapsed, 1), rss, fds))
                time.sleep(SAMPLE_EVERY_S)
        finally:
            stop_flapping.set()
            flapper.join(timeout=FLAP_S * 2 + 1)
    intake.down_for(0)
    acked = loader.acknowledged()
    lost: dict[str, str] = {}
    for name, ids, timeout in (
        ("jsonl", lambda: read_jsonl(service.jsonl).ids, 30),
        ("otlp", receiver.ids, 30),
        ("datadog", intake.ids, 60),
    ):
        try:
            wait_all_arrived(acked, ids, timeout=timeout, what=name)
        except AssertionError as exc:
            lost[name] = str(exc)
    result = Soak(
        acked=acked,
        outcomes=loader.summary(),
        jsonl=read_jsonl(service.jsonl).ids,
        datadog=intake.ids(),
        datadog_statuses=[request.status for request in intake.requests()],
        otlp=receiver.ids(),
        prometheus_counted=_prometheus_events_total(service),
        samples=samples,
        lost=lost,
    )
    latencies = sorted(loader.latencies)
    middle, last = result.thirds()
    print(
        f"\n[reliability] soak {SOAK_SECONDS:.0f} s: outcomes={result.outcomes},"
        f" p99 ack={latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms,"
        f" jsonl: {accounting(acked, result.jsonl)},"
        f" datadog: {accounting(acked, result.datadog)} (requests 202={result.datadog_statuses.count(202)},"
        f" 503={result.datadog_statuses.count(503)}), otlp: {accounting(acked, result.otlp)},"
        f" prometheus counted {result.prometheus_counted:.0f},"
        f" RSS median kB middle={statistics.median(r for _, r, _ in middle):.0f}"
        f" last={statistics.median(r for _, r, _ in last):.0f},"
        f" fds max middle={max(f for _, _, f in middle)} last={max(f for _, _, f in last)}"
        f"\n  samples (s, VmRSS kB, fds): {samples}"
    )
    return result


def test_soak_all_sinks_one_flapping_loses_nothing(soak: Soak) -> None:
    """Promise: a long steady run with one sink flapping loses nothing at any sink.

    JSONL, Datadog (intake double), OTLP (receiver double) and Prometheus sinks all on, about 80
    events/s for FORWARDER_SOAK_SECONDS (120 by default). The Datadog intake flaps: 503 for 4 s,
    then 202 for 4 s, throughout. Every acknowledged id arrives at JSONL, OTLP and Datadog
    (within 60 s of the end), and the Prometheus sink counted at least as many events as were
    acknowledged.
    """
    assert len(soak.acked) > RATE_PER_S * SOAK_SECONDS * 0.8, soak.outcomes
    statuses = soak.datadog_statuses
    assert statuses.count(503) > 0 and statuses.count(202) > 0, "the Datadog intake did not flap"
    assert not soak.lost, "\n".join(soak.lost.values())
    assert soak.prometheus_counted >= len(soak.acked), (
        f"prometheus counted {soak.prometheus_counted} of {len(soak.acked)} acknowledged"
    )


def test_soak_descriptors_end_flat(soak: Soak) -> None:
    """Promise: no descriptor leaks: the open-descriptor count of the last third of the soak is at most
    the middle third's largest + 5 (see FD_TOLERANCE)."""
    middle, last = soak.thirds()
    assert len(soak.samples) >= 9, soak.samples
    fd_middle = max(fds for _, _, fds in middle)
    fd_last = max(fds for _, _, fds in last)
    assert fd_last - fd_middle <= FD_TOLERANCE, (
        f"descriptors grew: at most {fd_middle} in the middle third, {fd_last} in the last"
    )


def test_soak_memory_ends_flat(soak: Soak) -> None:
    """Promise: memory stays bounded under steady load: never over 150 MB, and the median VmRSS of
    the last third of the soak at most the middle third's + max(24 MB, 25 %) (see RSS_TOLERANCE_KB)."""
    middle, last = soak.thirds()
    assert len(soak.samples) >= 9, soak.samples
    peak = max(rss for _, rss, _ in soak.samples)
    assert peak <= RSS_LIMIT_KB, f"RSS reached {peak:.0f} kB; samples (s, kB, fds): {soak.samples}"
    rss_middle = statistics.median(rss for _, rss, _ in middle)
    rss_last = statistics.median(rss for _, rss, _ in last)
    allowed = max(RSS_TOLERANCE_KB, rss_middle * RSS_TOLERANCE_RATIO)
    assert rss_last - rss_middle <= allowed, (
        f"RSS grew: median {rss_middle:.0f} kB in the middle third, {rss_last:.0f} kB in the last"
        f" (allowed +{allowed:.0f} kB); samples (s, kB, fds): {soak.samples}"
    )
