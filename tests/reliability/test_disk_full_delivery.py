"""Delivery while the journal cannot write: nothing is sent twice, and the cursor catches up later."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import with_flaky_sink
from tests.reliability.conftest import MountTmpfs, resize_tmpfs, services_required
from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]


def fill(disk: Path) -> None:
    """Write a filler file until the filesystem refuses another byte."""
    with open(disk / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def acknowledged_until_refused(service: Service) -> list[dict[str, Any]]:
    """Post until the journal answers 503; the events acknowledged before that.

    After a checkpoint SQLite writes the WAL over the space it already holds (up to
    ``journal_size_limit``), so on a full disk a few commits may still land: each of them is
    durable and acknowledged. The first 503 comes when the WAL has to grow.
    """
    acknowledged = []
    for _ in range(500):
        event = make_event("user.created")
        status = service.post(event).status_code
        if status == 503:
            return acknowledged
        assert status == 200, status
        acknowledged.append(event)
    raise AssertionError(f"{len(acknowledged)} events acknowledged on a full disk and still no 503")


def test_a_full_disk_does_not_make_a_sink_send_its_batches_again(
    start_service: StartService, mount_tmpfs: MountTmpfs, tmp_path: Path
) -> None:
    """Promise: while the journal cannot save a cursor, delivered batches are not sent again.

    Events wait in the journal while a sink is down; then the disk fills (webhooks get 503
    once the WAL must grow); then the sink comes back. Each event must be delivered once (it
    was 200 events -> 1,001 deliveries in 12 s when a cursor that could not be saved sent the
    batch again every retry). /status says the cursor
    is only in memory and /metrics that the journal cannot write; when space returns the
    cursor is saved and both say so.
    """
    disk = tmp_path / "disk"
    # Room for the 200 events and a WAL at its bound without FORWARDER_JOURNAL_MAX_BYTES (4 MiB,
    # docs/delivery-and-journal.md): on 4 MiB the WAL alone could fill the disk before the filler.
    problem = mount_tmpfs(disk, "8m")
    if problem is not None:
        if services_required():
            pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but a tmpfs cannot be mounted: {problem}")
        pytest.skip(f"SKIPPING: cannot mount a tmpfs ({problem}); run as root")
    control = with_flaky_sink(tmp_path, "retryable")
    service = start_service(
        FORWARDER_DATA_DIR=str(disk), JSONL_OUTPUT=str(tmp_path / "records.jsonl"), **control
    )
    events = [make_event("user.created") for _ in range(200)]
    for event in events:
        assert service.post(event).status_code == 200

    fill(disk)
    events += acknowledged_until_refused(service)
    (tmp_path / "flaky.control").write_text("ok")
    out = tmp_path / "flaky.out"
    wait_for(lambda: out.exists() and len(out.read_text().split()) >= len(events), what="every delivery")
    time.sleep(5)  # several retry rounds of the cursor save

    delivered = out.read_text().split()
    assert len(delivered) == len(events), f"{len(delivered) - len(events)} deliveries repeated"
    assert sorted(delivered) == sorted(event["id"] for event in events)
    flaky = service.status()["sinks"]["flaky"]
    assert flaky["cursor_saved"] is False
    assert service.metric("workos_forwarder_journal_writable") == 0

    (disk / "filler").unlink()
    resize_tmpfs(disk, "64m")
    wait_for(lambda: service.status()["sinks"]["flaky"]["cursor_saved"], what="the cursor saved again")
    wait_for(lambda: service.metric("workos_forwarder_journal_writable") == 1, what="journal writable")
    assert len(out.read_text().split()) == len(events)
