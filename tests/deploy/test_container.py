"""The image as an SRE runs it: read-only, non-root, a signed webhook in, the record out,
and a stop that drains in time without losing what was acknowledged."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from forwarder.signature import sign
from tests.deploy.podman import UID, Container, podman
from tests.doubles.datadog_intake import DatadogIntake
from tests.samples import EMAIL, new_id
from tests.service import SECRET, wait_for

KUBERNETES_DEFAULT_GRACE_S = 30


def _event() -> dict[str, object]:
    return {
        "id": new_id("event"),
        "event": "authentication.password_failed",
        "created_at": "2026-01-15T10:00:00.000Z",
        "data": {"type": "password", "status": "failed", "email": EMAIL, "ip_address": "203.0.113.7"},
    }


def _post(container: Container, event: dict[str, object]) -> httpx.Response:
    body = orjson.dumps(event)
    headers = {"content-type": "application/json", "workos-signature": sign(body, SECRET)}
    return httpx.post(f"{container.url}/webhooks/workos", content=body, headers=headers, timeout=10)


def _ready(container: Container) -> bool:
    if not container.running():
        raise AssertionError(f"container exited: {container.stderr()[-2000:]}")
    return httpx.get(f"{container.url}/readyz", timeout=2).status_code == 200


def _records(container: Container) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in container.stdout().splitlines() if line.startswith("{")]


def test_the_image_runs_read_only_as_non_root_and_prints_a_signed_webhook_on_stdout(
    run_container: Callable[..., Container], volume: str
) -> None:
    container = run_container(volume)
    wait_for(lambda: _ready(container), timeout=30, what="the container's /readyz")

    pid = int(container.inspect("{{.State.Pid}}"))
    uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line[:4] == "Uid:")
    assert uids.split()[1:] == [str(UID)] * 4, uids
    assert pid != 1 and container.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"
    refused = podman("exec", container.name, "touch", "/opt/workos-forwarder/written", check=False)
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr

    event = _event()
    answer = _post(container, event)
    assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text

    (record,) = wait_for(lambda: _records(container), what="the record on the container's stdout")
    assert record["workos"]["id"] == event["id"]  # type: ignore[index]
    assert record["message"] == f"authentication.password_failed for {EMAIL} from 203.0.113.7"
    assert "journal.sqlite3" in podman("exec", container.name, "ls", "/var/lib/workos-forwarder").stdout


def test_stop_drains_within_the_grace_period_and_an_acknowledged_event_survives_a_restart(
    run_container: Callable[..., Container], volume: str
) -> None:
    intake = DatadogIntake()  # its port is chosen, but nothing listens yet: the sink cannot deliver
    sink = {"DD_API_KEY": intake.api_key, "DD_LOGS_URL": intake.url, "FORWARDER_SHUTDOWN_TIMEOUT": "3s"}
    first = run_container(volume, **sink)
    wait_for(lambda: _ready(first), timeout=30, what="the first container's /readyz")
    event = _event()
    assert _post(first, event).status_code == 200

    stopped_in = first.stop(KUBERNETES_DEFAULT_GRACE_S)

    # The Datadog sink stops retrying within FORWARDER_SHUTDOWN_TIMEOUT (3 s) and the process
    # exits 0 on its own: podman never had to send SIGKILL (that would be exit 137).
    assert first.exit_code() == 0, first.stderr()[-2000:]
    assert stopped_in < KUBERNETES_DEFAULT_GRACE_S / 3, f"stop took {stopped_in:.1f} s"

    with intake:
        second = run_container(volume, **sink)
        wait_for(lambda: event["id"] in intake.ids(), timeout=30, what="the event at the Datadog intake")
    started = time.monotonic()
    assert second.stop(KUBERNETES_DEFAULT_GRACE_S) < KUBERNETES_DEFAULT_GRACE_S / 3
    assert second.exit_code() == 0
    print(f"\nstop: {stopped_in:.1f} s with an undeliverable sink, {time.monotonic() - started:.1f} s idle")
