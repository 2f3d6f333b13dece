"""Run the real service as a subprocess on loopback and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from forwarder.signature import sign

SECRET = "whsec_test_secret_0123456789"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    check: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll until ``check`` returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Service:
    data_dir: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    preexec_fn: Callable[[], None] | None = None
    """Run in the child before the service starts, e.g. to lower its descriptor limit."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jsonl(self) -> Path:
        return self.data_dir / "records.jsonl"

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "stderr.log"

    def start(self, *, wait: bool = True) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        full_env = {
            **os.environ,
            "WORKOS_WEBHOOK_SECRET": SECRET,
            "FORWARDER_PORT": str(self.port),
            "FORWARDER_DATA_DIR": str(self.data_dir),
            "JSONL_OUTPUT": str(self.jsonl),
            # Off unless a test turns them on (tests/detections): a firing is a record, and a
            # test that counts records (ten failures of one sample account are a brute force)
            # would count it.
            "FORWARDER_DETECTIONS": "off",
            **self.env,
        }
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "forwarder.cli", "serve"],
                env=full_env,
                stderr=stderr,
                stdout=subprocess.DEVNULL,
                preexec_fn=self.preexec_fn,
            )
        if wait:
            wait_for(self._healthy, timeout=20, what=f"service on port {self.port} ({self.stderr_path})")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(
                f"service exited with {self.proc.returncode}: {self.stderr_path.read_text()}"
            )
        return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def post(
        self,
        event: Mapping[str, Any] | bytes,
        *,
        secret: str = SECRET,
        signature: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        body = event if isinstance(event, bytes) else orjson.dumps(event)
        sent = {"content-type": "application/json", "workos-signature": signature or sign(body, secret)}
        sent.update(headers or {})
        return httpx.post(f"{self.url}/webhooks/workos", content=body, headers=sent, timeout=10)

    def records(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [orjson.loads(line) for line in self.jsonl.read_bytes().splitlines() if line.strip()]

    def record_ids(self) -> list[str]:
        return [record["workos"]["id"] for record in self.records()]

    def status(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/status", timeout=5).json()

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample in /metrics, 0 when absent."""
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "FORWARDER_DATA_DIR": str(self.data_dir), **self.env}
        return subprocess.run(
            [sys.executable, "-m", "forwarder.cli", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=30,
        )


def kill_quietly(service: Service) -> None:
    if service.proc is not None and service.proc.poll() is None:
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)
