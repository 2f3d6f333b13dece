"""External faults against the real service: signals, a full disk, an unwritable file, bad endpoints, a
PostgreSQL that drops its connections.

Every test counts what was acknowledged (HTTP 200) against what arrived at each sink, by event id.
Duplicates are allowed (delivery is at least once); a lost acknowledged event fails the test.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.doubles.datadog_intake import DatadogIntake
from tests.reliability.load import Loader, accounting, read_jsonl, wait_all_arrived
from tests.service import Service, wait_for

StartService = Callable[..., Service]
API_KEY = "test-api-key"


@pytest.fixture
def intake() -> Iterator[DatadogIntake]:
    with DatadogIntake(API_KEY) as server:
        yield server


def datadog_env(url: str) -> dict[str, str]:
    return {"DD_API_KEY": API_KEY, "DD_LOGS_URL": url, "DD_BATCH_LINGER": "200ms"}


def report(name: str, **numbers: object) -> None:
    """One line per test in the output of ``pytest -s``: the numbers the report quotes."""
    print(f"\n[reliability] {name}: " + ", ".join(f"{key}={value}" for key, value in numbers.items()))


# --- 1. SIGKILL at random moments under load ----------------------------------------------------


def test_sigkill_at_random_moments_under_load_loses_nothing(
    start_service: StartService, intake: DatadogIntake
) -> None:
    """Promise: an event answered 200 is in the journal, so no crash loses it.

    One SQLite journal, a loader posting about 150 events/s, and 20 times: SIGKILL at a random
    moment (seeded, the seed is printed), restart on the same data directory. At the end every
    acknowledged id is in the JSONL file (as a whole, parseable line) and at the Datadog intake.
    """
    seed = int(os.environ.get("FORWARDER_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    service = start_service(FORWARDER_SHUTDOWN_TIMEOUT="2s", **datadog_env(intake.url))
    started = time.monotonic()
    with Loader([service], rate_per_s=150, timeout_s=2) as loader:
        for _ in range(20):
            time.sleep(rng.uniform(0.2, 1.2))
            service.stop(signal.SIGKILL)
            service.start()
        time.sleep(0.5)
    acked = loader.acknowledged()
    assert len(acked) > 500, f"too little load to mean anything: {loader.summary()}"

    wait_all_arrived(acked, lambda: read_jsonl(service.jsonl).ids, timeout=30, what="jsonl")
    wait_all_arrived(acked, intake.ids, timeout=30, what="datadog")
    jsonl = read_jsonl(service.jsonl)
    report(
        "sigkill x20",
        seed=seed,
        seconds=round(time.monotonic() - started, 1),
        outcomes=loader.summary(),
        jsonl=accounting(acked, jsonl.ids),
        datadog=accounting(acked, intake.ids()),
        jsonl_bad_lines=len(jsonl.bad_lines),
    )
    assert not jsonl.bad_lines, (
        f"{len(jsonl.bad_lines)} JSONL lines a line reader cannot parse (a write cut by SIGKILL and"
        f" appended to): {jsonl.bad_lines[:2]}"
    )


# --- 2. SIGSTOP / SIGCONT -------------------------------------------------------------------------


def test_sigstop_then_sigcont_loses_nothing_and_answers_again(
    start_service: StartService, intake: DatadogIntake
) -> None:
    """Promise: a frozen process (SIGSTOP: a paused container, a debugger, a VM stall) loses nothing.

    Under load, the service is stopped for 4 s then continued. Requests sent meanwhile time out
    on the client (not acknowledged, no promise). Afterwards it answers /healthz and webhooks
    within 5 s, and every acknowledged id reaches the JSONL file and the Datadog intake.
    """
    service = start_service(**datadog_env(intake.url))
    assert service.proc is not None
    with Loader([service], rate_per_s=100, timeout_s=1) as loader:
        time.sleep(2)
        service.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4)
            frozen_outcomes = loader.summary()
        finally:
            service.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(
            lambda: httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200,
            timeout=5,
            what="/healthz after SIGCONT",
        )
        acked_before = len(loader.acknowledged())
        wait_for(lambda: len(loader.acknowledged()) > acked_before + 20, timeout=5, what="new acks")
        answering_after = time.monotonic() - resumed
        time.sleep(2)
    acked = loader.acknowledged()
    assert "ReadTimeout" in frozen_outcomes or "ConnectTimeout" in frozen_outcomes, frozen_outcomes

    wait_all_arrived(acked, lambda: read_jsonl(service.jsonl).ids, timeout=20, what="jsonl")
    wait_all_arrived(acked, intake.ids, timeout=20, what="datadog")
    report(
        "sigstop 4 s",
        outcomes=loader.summary(),
        answering_again_after_s=round(answering_after, 2),
        jsonl=accounting(acked, read_jsonl(service.jsonl).ids),
        datadog=accounting(acked, intake.ids()),
    )
