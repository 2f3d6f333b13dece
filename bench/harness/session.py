"""One run of ``python -m bench.run``: what its scenarios share.

A work dir (journals, logs, request files), the intake double (it outlives the services:
each one counts from the records it held when that service started), the files of signed
requests, and a way to start the forwarder with the sinks under test.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path

from bench.events import write_requests
from bench.harness.load import wrk
from bench.harness.loopback import Intake
from bench.harness.processes import LOAD_CORE, Server, free_port, log
from bench.harness.service import SECRET, SERVE_ARGV, WEBHOOK_PATH, accepted, service_env

# Requests generated for a wrk run: enough for this rate over the run (wrk is closed-loop).
MAX_EXPECTED_RATE = 16_000
WARMUP_REQUESTS = 60_000


class Session:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.intake = Intake(workdir)
        self.with_datadog = "datadog" in {ep.name for ep in entry_points(group="workos_forwarder.sinks")}
        self._request_files = 0
        self.warmup_file = self.requests(WARMUP_REQUESTS)
        self._throughput_file: Path | None = None

    @property
    def throughput_file(self) -> Path:
        """Requests for one wrk run, written when a closed-loop scenario first asks."""
        if self._throughput_file is None:
            self._throughput_file = self.requests(int(MAX_EXPECTED_RATE * self.args.duration))
        return self._throughput_file

    def requests(self, count: int) -> Path:
        """A fresh file of ``count`` signed requests (new event ids every time)."""
        self._request_files += 1
        path = self.workdir / f"requests-{self._request_files}.bin"
        started = time.monotonic()
        size, mean_body = write_requests(
            path, count, SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH, seed=self._request_files
        )
        log(
            f"generated {count} signed requests ({size / 1e6:.0f} MB, mean body {mean_body:.0f} B)"
            f" in {time.monotonic() - started:.1f} s"
        )
        return path

    def service_env(
        self, data_dir: Path, port: int, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """``service_env`` with the Datadog sink on the intake double (when it is installed)."""
        env = service_env(data_dir, port)
        if self.with_datadog:
            env["DD_API_KEY"] = "bench-api-key"
            env["DD_LOGS_URL"] = f"{self.intake.url}/api/v2/logs"
        env.update(extra or {})
        return env

    def start_service(self, name: str, extra: Mapping[str, str] | None = None) -> Server:
        port = free_port()
        data_dir = self.workdir / name
        env = self.service_env(data_dir, port, extra)
        server = Server(name, SERVE_ARGV, env, data_dir, port, delivers=bool(env.get("DD_API_KEY")))
        server.intake_base = self.intake.stats()["records"]
        return server.start("/healthz")

    def warm_up(self, server: Server) -> None:
        """A few seconds of load first (imports, caches, SQLite pages), then let sinks catch up."""
        wrk(server.url + WEBHOOK_PATH, [self.warmup_file], duration_s=3, connections=self.args.connections)
        self.wait_delivered(server, timeout_s=60)

    def wait_delivered(self, server: Server, timeout_s: float) -> float | None:
        """When the intake held every event ``server`` accepted; None if not within the timeout."""
        if not server.delivers:
            return time.monotonic()
        return self.intake.wait_for(server.intake_base + int(accepted(server)), timeout_s)

    def profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        """py-spy on ``pid`` for one wrk run, when ``--profile DIR`` asks for it."""
        if not self.args.profile:
            return None
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        argv = [
            "taskset", "-c", LOAD_CORE, "py-spy", "record", "--pid", str(pid), "--rate", "250",
            "--nonblocking", "--threads", "--format", "raw", "--output", str(out / f"{name}.txt"),
            "--duration", str(math.ceil(self.args.duration)),
        ]  # fmt: skip
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        self.intake.stop()
