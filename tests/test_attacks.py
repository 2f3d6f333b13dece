"""Attacks on the public HTTP edge, against the real service, with a signed sender alongside.

Scripted versions (``bench/attacks.py``, asyncio sockets in a process of their own) of what
``slowhttptest`` does, so that the assertions do not depend on the tool's timing, then the
tool itself. Each attack asserts what a user of the endpoint notices: signed webhooks still
answered 200, ``/healthz`` under a second, RSS under the sidecar's 256 MiB limit and back
afterwards, every acknowledged id delivered, and what the logs and metrics say.
Select them with ``pytest tests/test_attacks.py``; together they take about two minutes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from bench import attacks
from forwarder.signature import sign
from tests.samples import make_event
from tests.service import SECRET, Service

StartService = Callable[..., Service]
SIDECAR_LIMIT_KIB = 256 * 1024


def attack(
    service: Service, hostile: attacks.Attack, seconds: float, recovery_s: float = 30.0
) -> attacks.Outcome:
    assert service.proc is not None
    out = asyncio.run(
        attacks.run_attack(hostile, service.proc.pid, service.port, SECRET, seconds, recovery_s=recovery_s)
    )
    attacks.count_lost(out, service.jsonl)
    print(out.row("attack"))
    return out


def assert_unharmed(out: attacks.Outcome) -> None:
    assert out.sent >= 20
    assert out.ok_percent >= 95, out.statuses
    assert out.healthz_failures == 0 and out.healthz_max_s < 1.0, out.healthz_max_s
    assert out.peak_rss_kib < SIDECAR_LIMIT_KIB
    assert out.lost == 0


def test_slow_bodies_at_the_connection_cap_lock_no_webhook_out(start_service: StartService) -> None:
    """1,000 heads declaring 100 kB, then ten bytes a second, reopened when cut: each is cut by
    the minimum rate or evicted for a webhook."""
    service = start_service()
    out = attack(service, attacks.slow_bodies(1000), seconds=8)
    assert_unharmed(out)
    assert service.metric("workos_forwarder_http_rejected_total", reason="body_too_slow") > 0


def test_slow_bodies_at_a_cap_of_20_leave_webhooks_through(start_service: StartService) -> None:
    """The first round's worst case: 20 slow bodies at a cap of 20 refused every webhook."""
    service = start_service(FORWARDER_MAX_CONNECTIONS="20")
    out = attack(service, attacks.slow_bodies(20), seconds=5)
    assert_unharmed(out)
    assert service.metric("workos_forwarder_http_rejected_total", reason="evicted") > 0


def test_a_body_slower_than_the_minimum_rate_is_408_and_closed(start_service: StartService) -> None:
    service = start_service()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
        started = time.monotonic()
        answer = b""
        try:
            while not answer:
                sock.sendall(b"x" * 100)  # 200 bytes a second, under 500
                sock.settimeout(0.5)
                try:
                    answer = sock.recv(4096)
                except TimeoutError:
                    continue
        except OSError:
            pass
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408") and b'"too_slow"' in answer and b"connection: close" in answer
    assert 2 <= waited < 6  # the grace, then about as long as the bytes sent earned
    assert service.metric("workos_forwarder_http_rejected_total", reason="body_too_slow") == 1


def test_buffered_bodies_stay_under_the_bound_and_memory_comes_back(start_service: StartService) -> None:
    """1,000 connections each sending 990,000 bytes of a 1,000,000-byte body, then stalling
    (the body cap raised to let them): RSS went to 1,018 MB before the bound."""
    service = start_service(FORWARDER_MAX_BODY_BYTES="1000000")
    out = attack(service, attacks.buffered_bodies(1000), seconds=8)
    assert_unharmed(out)
    assert out.recovered_s is not None  # within 100 MB of the start, within 30 s
    rejected = sum(
        service.metric("workos_forwarder_http_rejected_total", reason=reason)
        for reason in ("evicted", "over_capacity")
    )
    assert rejected > 0


def test_pipelined_metrics_never_read_delay_neither_healthz_nor_webhooks(start_service: StartService) -> None:
    service = start_service()
    out = attack(service, attacks.pipelined_unread(1000, 3), seconds=8)
    assert_unharmed(out)
    assert max(out.latencies_s) < 1.0


def test_deeper_pipelines_are_closed(start_service: StartService) -> None:
    service = start_service()
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
        sock.settimeout(5)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") <= 1
    assert service.metric("workos_forwarder_http_rejected_total", reason="over_capacity") == 1


def test_a_malformed_flood_writes_about_one_line_a_second(start_service: StartService) -> None:
    service = start_service()
    started = time.monotonic()
    out = attack(service, attacks.malformed(50), seconds=5, recovery_s=0)
    elapsed = time.monotonic() - started
    assert_unharmed(out)
    invalid = service.metric("workos_forwarder_http_rejected_total", reason="invalid_request")
    lines = [
        orjson.loads(line)
        for line in service.stderr_path.read_bytes().splitlines()
        if b"Invalid HTTP request received." in line
    ]
    print(f"{invalid:.0f} malformed requests, {len(lines)} log lines in {elapsed:.1f} s")
    assert invalid >= 1000
    assert len(lines) <= elapsed + 2
    assert sum(line.get("suppressed", 0) for line in lines) + len(lines) <= invalid


def _answer_and_close_time(sock: socket.socket) -> tuple[bytes, float]:
    """The answer, and how long the socket stayed open after its first byte."""
    sock.settimeout(10)
    answer = sock.recv(65536)
    first = time.monotonic()
    sock.settimeout(3)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer, time.monotonic() - first


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"x" * 1000, 413),
        (b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", 408),
        (b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
    ],
    ids=["413 declared", "431", "408 head", "413 chunked, by the webhook"],
)
def test_408_413_431_say_connection_close_and_close_within_a_second(
    start_service: StartService, request_bytes: bytes, status: int
) -> None:
    service = start_service(FORWARDER_HEADER_TIMEOUT="1s", FORWARDER_MAX_BODY_BYTES="2048")
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request_bytes)
        if b"chunked" in request_bytes:
            sock.sendall(b"1000\r\n" + b"x" * 4096 + b"\r\n")
        answer, open_s = _answer_and_close_time(sock)
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:100]
    assert b"connection: close" in answer.lower()
    assert open_s < 1.0


def test_the_webhooks_own_408_says_connection_close(start_service: StartService) -> None:
    service = start_service(FORWARDER_BODY_TIMEOUT="1s")
    body = orjson.dumps(make_event("user.created"))
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(
            b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\n"
            + f"WorkOS-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        answer, open_s = _answer_and_close_time(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"connection: close" in answer
    assert open_s < 1.0


SLOWHTTPTEST_MODES = {
    "slow headers (-H)": ["-H", "-i", "5"],
    "slow body (-B)": ["-B", "-i", "2", "-s", "100000"],
    "slow read (-X)": ["-X", "-k", "3", "-w", "16", "-y", "32", "-n", "2", "-z", "16"],
}


@pytest.mark.parametrize("mode", SLOWHTTPTEST_MODES)
def test_slowhttptest_changes_nothing_for_signed_webhooks(
    start_service: StartService, tmp_path: Path, mode: str
) -> None:
    tool = shutil.which("slowhttptest")
    if tool is None:
        reason = "slowhttptest is not installed (Debian's slowhttptest; .ci/run installs it)"
        if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"SKIPPING: {reason}")
    service = start_service()
    path = "/metrics" if "-X" in SLOWHTTPTEST_MODES[mode] else "/webhooks/workos"
    argv = [
        tool,
        *SLOWHTTPTEST_MODES[mode],
        "-c", "300", "-r", "150", "-l", "12", "-t", "POST" if path != "/metrics" else "GET",
        "-u", f"{service.url}{path}", "-p", "3",
    ]  # fmt: skip

    async def tool_attack(port: int, stop: asyncio.Event) -> None:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path
        )
        await process.wait()

    out = attack(service, tool_attack, seconds=14)
    assert_unharmed(out)
