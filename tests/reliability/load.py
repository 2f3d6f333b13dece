"""Load and accounting for the reliability suite: what was acknowledged, what arrived, by id.

``Loader`` posts signed events with unique ids from a thread, at a bounded rate, to one
service or round-robin to several, and keeps the id of every event answered ``200``:
the acknowledged set a test compares with what each sink received. A request that fails
(connection refused while the service is down, a timeout while it is stopped, a 503) is
not acknowledged, so it carries no promise; it is counted by outcome for the report.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from forwarder.signature import sign
from tests.samples import make_event
from tests.service import SECRET, Service

EVENT_TYPES = (
    "authentication.password_succeeded",
    "authentication.sso_failed",
    "user.created",
    "session.created",
    "dsync.user.updated",
)


@dataclass
class Loader:
    """Post events from a background thread until ``stop()``; ``acked`` holds the ids answered 200."""

    targets: Sequence[Service]
    rate_per_s: float = 200.0
    timeout_s: float = 5.0
    acked: list[str] = field(default_factory=list)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Loader:
        self._thread = threading.Thread(target=self._run, name="loader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)
            assert not self._thread.is_alive(), "the loader did not stop"

    def __enter__(self) -> Loader:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def acknowledged(self) -> list[str]:
        with self._lock:
            return list(self.acked)

    def summary(self) -> dict[str, int]:
        with self._lock:
            return dict(self.outcomes)

    def _run(self) -> None:
        interval = 1.0 / self.rate_per_s
        types = itertools.cycle(EVENT_TYPES)
        services = itertools.cycle(self.targets)
        next_at = time.monotonic()
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.is_set():
                service = next(services)
                event = make_event(next(types))
                outcome, latency = post_once(client, service, event)
                with self._lock:
                    self.outcomes[outcome] += 1
                    if outcome == "200":
                        self.acked.append(event["id"])
                        self.latencies.append(latency)
                next_at = max(next_at + interval, time.monotonic() - 1.0)
                self._stop.wait(max(next_at - time.monotonic(), 0.0))


def post_once(client: httpx.Client, service: Service, event: dict[str, object]) -> tuple[str, float]:
    """Post one signed event; the outcome is the status code, or the exception's name."""
    body = orjson.dumps(event)
    headers = {"content-type": "application/json", "workos-signature": sign(body, SECRET)}
    started = time.monotonic()
    try:
        response = client.post(f"{service.url}/webhooks/workos", content=body, headers=headers)
    except httpx.HTTPError as exc:
        return type(exc).__name__, time.monotonic() - started
    outcome = str(response.status_code)
    if response.status_code == 200 and response.json().get("status") != "accepted":
        outcome = f"200-{response.json().get('status')}"
    return outcome, time.monotonic() - started


@dataclass(frozen=True)
class JsonLines:
    """What a line-based consumer of a JSONL file can read: the ids, and the lines it cannot."""

    ids: list[str]
    bad_lines: list[bytes]


def read_jsonl(path: Path) -> JsonLines:
    if not path.exists():
        return JsonLines([], [])
    ids: list[str] = []
    bad: list[bytes] = []
    data = path.read_bytes()
    lines = data.split(b"\n")
    if not data.endswith(b"\n"):
        lines, tail = lines[:-1], lines[-1]  # a line still being written is not read yet
        del tail
    for line in lines:
        if not line.strip():
            continue
        try:
            ids.append(orjson.loads(line)["workos"]["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            bad.append(line[:200])
    return JsonLines(ids, bad)


def missing(acked: Iterable[str], *delivered: Iterable[str]) -> list[str]:
    """The acknowledged ids that none of ``delivered`` holds, in acknowledgement order."""
    seen: set[str] = set()
    for ids in delivered:
        seen.update(ids)
    return [event_id for event_id in acked if event_id not in seen]


def accounting(acked: Sequence[str], delivered: Sequence[str]) -> str:
    """One line for a report or an assertion message: acknowledged, delivered, lost, duplicates."""
    unique = set(delivered)
    lost = len(set(acked) - unique)
    return (
        f"acknowledged {len(acked)}, delivered {len(delivered)} ({len(unique)} distinct), "
        f"lost {lost}, duplicates {len(delivered) - len(unique)}"
    )


def wait_all_arrived(
    acked: Sequence[str], delivered: Callable[[], Iterable[str]], *, timeout: float, what: str
) -> float:
    """Wait until every acknowledged id was delivered; return how long it took, or fail listing the lost."""
    started = time.monotonic()
    deadline = started + timeout
    lost: list[str] = list(acked)
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            lost = missing(acked, delivered())
            if not lost:
                return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(
        f"{what}: {len(lost)} of {len(acked)} acknowledged events never arrived within {timeout} s,"
        f" e.g. {lost[:5]}"
    )


def proc_sample(pid: int) -> tuple[int, int]:
    """(RSS in kB, open descriptors) of a live process, from /proc."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))
