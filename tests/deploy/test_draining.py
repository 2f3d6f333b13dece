"""SIGTERM takes the instance out of rotation before it closes its port."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx

from tests.samples import new_id
from tests.service import Service


def test_readyz_fails_at_once_on_sigterm_while_webhooks_and_liveness_still_answer(
    start_service: Callable[..., Service],
) -> None:
    service = start_service(FORWARDER_DRAIN_DELAY="2s")
    assert httpx.get(f"{service.url}/readyz").status_code == 200
    assert service.proc is not None

    service.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    time.sleep(0.3)  # the main loop notices within a tick (0.1 s)

    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 503
    assert any(problem.startswith("draining") for problem in ready.json()["problems"])
    assert httpx.get(f"{service.url}/healthz").status_code == 200
    event_id = new_id("event")
    accepted = service.post({"id": event_id, "event": "user.created", "created_at": "2026-01-15T10:00:00Z"})
    assert accepted.status_code == 200, accepted.text

    # uvicorn re-raises the signal once shut down: the parent sees "ended by SIGTERM" (as PID 1 in
    # a container, where that signal has no default action, the exit status is 0).
    assert service.proc.wait(20) in (0, -signal.SIGTERM)
    assert time.monotonic() - signalled >= 2.0
    assert event_id in service.record_ids()


def test_without_a_drain_delay_sigterm_stops_at_once(start_service: Callable[..., Service]) -> None:
    service = start_service()
    started = time.monotonic()
    assert service.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 2.0
