"""The HTTP edge against the real service over real sockets: no unauthenticated client may take
it down (``forwarder/http_edge.py``).

Each case is what an attacker or an unlucky network does with nothing but a TCP socket, and
asserts what a user notices: the status code, the closed socket, the RSS, a webhook that is
still answered.
"""

from __future__ import annotations

import resource
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from forwarder.config import ConfigError, Settings
from forwarder.signature import sign
from tests.samples import make_event
from tests.service import SECRET, Service, free_port, kill_quietly, wait_for

StartService = Callable[..., Service]
HEAD = b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\n"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service with one-second edge deadlines, shared by the cases that only need those."""
    started = Service(
        data_dir=tmp_path_factory.mktemp("edge"),
        env={
            "FORWARDER_HEADER_TIMEOUT": "1s",
            "FORWARDER_BODY_TIMEOUT": "1s",
            "FORWARDER_KEEPALIVE_TIMEOUT": "1s",
        },
    ).start()
    yield started
    kill_quietly(started)


def connect(service: Service, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.port), timeout=timeout)


def read_until_closed(sock: socket.socket, within: float) -> bytes:
    """Everything the service sends until it closes the connection; fails if it stays open."""
    sock.settimeout(within)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"connection still open after {within} s; received {received[:200]!r}") from None
    return received


def read_response(sock: socket.socket) -> bytes:
    """One whole response with a ``content-length`` (all of the service's have one)."""
    sock.settimeout(10)
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))[15:]
    )
    while len(body) < length:
        body += sock.recv(65536)
    return received


def signed_request(extra_headers: bytes = b"", padding: int = 0) -> bytes:
    event = make_event("user.created")
    if padding:
        event["data"]["padding"] = "a" * padding
    body = orjson.dumps(event)
    return (
        HEAD
        + b"Content-Type: application/json\r\n"
        + f"WorkOS-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n".encode()
        + extra_headers
        + b"\r\n"
        + body
    )


def rss_kib(service: Service) -> int:
    assert service.proc is not None
    for line in Path(f"/proc/{service.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_64_kib_of_headers_is_431_and_closed_while_15_kib_is_served(service: Service) -> None:
    with connect(service) as sock:
        sock.sendall(signed_request(b"X-Padding: " + b"a" * 15_000 + b"\r\n"))
        assert read_response(sock).startswith(b"HTTP/1.1 200")

    headers = b"".join(b"X-Padding-%d: %s\r\n" % (i, b"a" * 1000) for i in range(64))
    with connect(service) as sock:
        sock.sendall(HEAD + headers + b"\r\n")
        answer = read_until_closed(sock, within=5)

    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b'"headers_too_large"' in answer
    assert b"connection: close" in answer


def test_a_large_webhook_arriving_with_its_head_in_one_read_is_served(service: Service) -> None:
    """Only the head counts against the cap, even when the body comes in the same read."""
    with connect(service) as sock:
        sock.sendall(signed_request(padding=200_000))
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_endless_header_values_on_four_connections_leave_rss_and_healthz_alone(
    start_service: StartService,
) -> None:
    service = start_service()
    before = rss_kib(service)
    stop = threading.Event()
    closed = [0] * 4
    sent = [0] * 4

    def stream(index: int) -> None:
        chunk = b"a" * 65536
        while not stop.is_set():
            with connect(service) as sock:
                sock.sendall(HEAD + b"X-Endless: ")
                try:
                    while not stop.is_set():
                        sock.sendall(chunk)
                        sent[index] += len(chunk)
                except OSError:  # the service answered 431 and closed
                    closed[index] += 1

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    slowest = 0.0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.1)
    growth_mib = (rss_kib(service) - before) / 1024
    stop.set()
    for thread in threads:
        thread.join(10)

    print(f"sent {sum(sent) / 2**20:.0f} MiB, {sum(closed)} connections closed, RSS +{growth_mib:.1f} MiB")
    assert all(closed), closed  # every streamer was cut off, again and again
    assert growth_mib < 16
    assert slowest < 1


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(service: Service) -> None:
    with connect(service) as sock:
        started = time.monotonic()
        assert read_until_closed(sock, within=5) == b""  # nothing received: nothing to answer
        waited = time.monotonic() - started
    assert 0.9 <= waited < 2.5


def test_a_half_sent_head_is_408_and_closed_also_on_a_kept_alive_connection(service: Service) -> None:
    with connect(service) as sock:
        sock.sendall(HEAD + b"X-Slow: ab")
        started = time.monotonic()
        answer = read_until_closed(sock, within=5)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"timeout"' in answer
    assert 0.9 <= waited < 3.5  # the deadline, then a second of lingering for the answer to land

    with connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)  # under the keep-alive timeout: the next head's own deadline counts
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert read_until_closed(sock, within=5).startswith(b"HTTP/1.1 408")


def test_a_request_trickled_byte_by_byte_is_cut_at_the_whole_request_deadline(service: Service) -> None:
    """/healthz answers without reading the body; the rest used to keep the connection forever,
    each byte resetting uvicorn's keep-alive timer."""
    with connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        answer = b""
        try:
            for _ in range(50):  # ten seconds' worth
                sock.sendall(b"x")
                time.sleep(0.2)
        except OSError:
            pass
        waited = time.monotonic() - started
        answer = read_until_closed(sock, within=5)
    assert answer.startswith(b"HTTP/1.1 200")
    assert waited < 4  # header plus body timeout (2 s), then the sweep


def test_endless_chunked_trailers_are_cut_off(service: Service) -> None:
    """The parser buffers a trailer value like a header value; the bytes after the head are
    capped at twice FORWARDER_MAX_BODY_BYTES plus FORWARDER_MAX_HEADER_BYTES."""
    sent = 0
    with connect(service) as sock:
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Trailer: ")
        try:
            while sent < 64 * 2**20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass
        assert read_until_closed(sock, within=5).startswith(b"HTTP/1.1 413")
    assert sent < 16 * 2**20  # the cap, then what the socket buffers hold


def test_idle_keep_alive_connections_are_closed(service: Service) -> None:
    with connect(service) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        answers = read_until_closed(sock, within=5)
        waited = time.monotonic() - started
    assert answers.count(b"HTTP/1.1 200") == 2  # pipelined requests still both answered
    assert 0.9 <= waited < 3


def test_idle_connections_beyond_the_cap_do_not_starve_webhooks(tmp_path: Path) -> None:
    """Under a 256-descriptor limit, 400 idle connections used to keep webhooks out for good."""

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    service = Service(data_dir=tmp_path / "svc", env={}, preexec_fn=low_limit)
    idle: list[socket.socket] = []
    try:
        service.start()
        assert service.proc is not None
        for _ in range(400):
            idle.append(connect(service))
        descriptors = len(list(Path(f"/proc/{service.proc.pid}/fd").iterdir()))
        for _ in range(3):
            response = service.post(make_event("user.created"))
            assert response.status_code == 200, response.text
        assert httpx.get(f"{service.url}/healthz", timeout=1).status_code == 200
    finally:
        for sock in idle:
            sock.close()
        kill_quietly(service)
    print(f"400 idle connections under a 256-descriptor limit: {descriptors} descriptors open")
    assert descriptors < 256 - 32
    log = service.stderr_path.read_text()
    assert "FORWARDER_MAX_CONNECTIONS lowered to fit the descriptor limit" in log
    assert "connection cap reached: closed the connection that made no progress the longest" in log


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit_at_start(tmp_path: Path) -> None:
    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 4096))

    service = Service(data_dir=tmp_path / "svc", env={}, preexec_fn=low_soft_limit)
    try:
        service.start()
        assert service.proc is not None
        limits = Path(f"/proc/{service.proc.pid}/limits").read_text()
    finally:
        kill_quietly(service)
    assert next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5] == [
        "4096",
        "4096",
    ]
    assert "descriptor limit raised to the hard limit" in service.stderr_path.read_text()


def test_at_the_cap_with_every_whole_request_in_flight_a_new_connection_gets_503(
    start_service: StartService,
) -> None:
    """Three whole webhooks wait for a journal another connection holds locked: nothing to evict."""
    service = start_service(FORWARDER_MAX_CONNECTIONS="3")
    lock = sqlite3.connect(service.data_dir / "journal.sqlite3", isolation_level=None)
    busy = [connect(service) for _ in range(3)]
    try:
        lock.execute("BEGIN IMMEDIATE")  # the journal's writer now waits for this lock
        for sock in busy:
            sock.sendall(signed_request())
        time.sleep(0.5)
        with connect(service) as extra:
            answer = read_until_closed(extra, within=5)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer
        lock.execute("ROLLBACK")
        for sock in busy:
            assert read_response(sock).startswith(b"HTTP/1.1 200")
    finally:
        lock.close()
        for sock in busy:
            sock.close()
    wait_for(lambda: service.post(make_event("user.created")).status_code == 200, what="a slot free again")
    assert service.metric("workos_forwarder_http_rejected_total", reason="over_capacity") >= 1


def test_at_the_cap_a_body_still_arriving_is_evicted_for_a_webhook(start_service: StartService) -> None:
    """A head with a body that does not come holds no slot a webhook needs: slowest first."""
    service = start_service(FORWARDER_MAX_CONNECTIONS="3")
    body = orjson.dumps(make_event("user.created"))
    partial = (
        HEAD
        + f"WorkOS-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    slow = [connect(service) for _ in range(3)]
    try:
        for sock in slow:
            sock.sendall(partial)
            time.sleep(0.05)
        with connect(service) as webhook:
            webhook.sendall(signed_request())
            assert read_response(webhook).startswith(b"HTTP/1.1 200")
        assert read_until_closed(slow[0], within=5) == b""  # the one quiet the longest
    finally:
        for sock in slow:
            sock.close()
    assert service.metric("workos_forwarder_http_rejected_total", reason="evicted") >= 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FORWARDER_HEADER_TIMEOUT", "0"),
        ("FORWARDER_MAX_HEADER_BYTES", "100"),
        ("FORWARDER_MAX_CONNECTIONS", "0"),
        ("FORWARDER_KEEPALIVE_TIMEOUT", "soon"),
        ("FORWARDER_ADMIN_PORT", "8080"),
        ("FORWARDER_ADMIN_PORT", "70000"),
        ("FORWARDER_MAX_BUFFERED_BYTES", "1000"),
        ("FORWARDER_MIN_BODY_RATE", "fast"),
    ],
)
def test_bad_edge_settings_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"WORKOS_WEBHOOK_SECRET": SECRET, variable: value})
    assert raised.value.variable == variable


def test_the_admin_listener_takes_metrics_and_status_off_the_public_port(start_service: StartService) -> None:
    admin_port = free_port()
    service = start_service(FORWARDER_ADMIN_PORT=str(admin_port))
    admin = f"http://127.0.0.1:{admin_port}"
    assert service.post(make_event("user.created")).status_code == 200
    for path in ("/metrics", "/status"):
        assert httpx.get(f"{service.url}{path}", timeout=5).status_code == 404
        assert httpx.get(f"{admin}{path}", timeout=5).status_code == 200
    for base in (service.url, admin):
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
    body = orjson.dumps(make_event("user.created"))
    on_admin = httpx.post(
        f"{admin}/webhooks/workos", content=body, headers={"workos-signature": sign(body, SECRET)}, timeout=5
    )
    assert on_admin.status_code == 404  # the webhook is on the public port only
    assert 'workos_webhook_requests_total{result="accepted"} 1.0' in httpx.get(f"{admin}/metrics").text


def test_an_admin_port_already_taken_exits_2_naming_the_variable(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        service = Service(data_dir=tmp_path / "svc", env={"FORWARDER_ADMIN_PORT": str(port)})
        service.start(wait=False)
        assert service.proc is not None
        assert service.proc.wait(20) == 2
    assert "FORWARDER_ADMIN_PORT" in service.stderr_path.read_text()
