"""The doubles a run talks to, each a process of its own on the load core.

``Intake``: ``bench/intake.py``, the Datadog Logs intake the Datadog sink delivers to; it
outlives the services of a run and counts what they deliver. ``events_api``:
``bench/events_api.py``, the WorkOS Events API that ``backfill`` reads.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.harness.processes import LOAD_CORE, ROOT, free_port


class Intake:
    """``bench/intake.py`` on the load core."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stderr = open(workdir / "intake.stderr.log", "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.intake", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the intake double did not start")

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/stats", timeout=10).json()

    def set_status(self, status: int) -> None:
        httpx.post(f"{self.url}/mode?status={status}", timeout=10).raise_for_status()

    def wait_for(self, records: int, timeout_s: float) -> float | None:
        """Poll until the intake holds ``records``; the time it got there, or None on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.stats()["records"] >= records:
                return time.monotonic()
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._stderr.close()


@contextlib.contextmanager
def events_api(count: int, workdir: Path) -> Iterator[tuple[str, str]]:
    """``bench/events_api.py`` serving ``count`` events: yields (its URL, the oldest ``created_at``)."""
    with open(workdir / "events-api.stderr.log", "ab") as stderr:
        api = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.events_api", str(count)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert api.stdout is not None
        line = api.stdout.readline().decode().split()
        if len(line) != 2:
            raise RuntimeError(
                f"the Events API double did not start: see {workdir / 'events-api.stderr.log'}"
            )
        url, oldest = line
        yield url, oldest
    finally:
        api.terminate()
        api.wait(10)
