"""Processes under test, pinned to a core, and what /proc says about them.

The process under test runs pinned to ``SERVICE_CORE``; everything else (load generators,
doubles, this runner, py-spy) runs on ``LOAD_CORE``, so the numbers say what one core does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICE_CORE = "0"
LOAD_CORE = "1"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessStats:
    """Samples RSS (and CPU time) of one process from /proc while a run goes on."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (time, RSS MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _status(self, key: str) -> float:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def rss_mb(self) -> float:
        return self._status("VmRSS")

    def peak_mb(self) -> float:
        """VmHWM: the kernel's own high-water mark, so a spike between samples is not missed."""
        return self._status("VmHWM")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.rss_mb()))

    def start(self) -> ProcessStats:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    """A process under test, pinned to the service core."""

    name: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    port: int
    delivers: bool = False
    """Whether this service delivers to the intake double (the Datadog sink is on)."""
    startup_timeout_s: float = 30.0
    intake_base: int = 0
    """Records the intake double held before this service started (it outlives services)."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.proc.pid

    def start(self, health_path: str | None) -> Server:
        """Start pinned and wait until it listens (``health_path`` answers 200, or the port opens)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{self.name}.stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen(
                ["taskset", "-c", SERVICE_CORE, *self.argv],
                env=self.env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.workdir / f'{self.name}.stderr.log'}")
            try:
                if health_path is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                elif httpx.get(self.url + health_path, timeout=1).status_code == 200:
                    return self
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start within {self.startup_timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of the process's Prometheus ``/metrics`` (0 when it has none yet)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return 0.0
