"""Hostile clients against a running service, and what a signed sender sees meanwhile.

``python -m bench.attacks`` starts the service (defaults, then
``FORWARDER_MAX_CONNECTIONS=200``), runs each attack for ``--seconds`` with a signed-webhook
client alongside, then waits up to 30 s for RSS to come back, and prints one table row per
attack: signed webhooks answered 200, their p99, acknowledged ids missing from the JSON-lines
sink, peak RSS and descriptors, the slowest ``/healthz``, and how long RSS took to return
within 100 MB of where it started. ``tests/test_attacks.py`` runs the same attacks, shorter.

Every attacker reopens a connection the service closes, so the pressure lasts the whole run
(``slowhttptest`` does not, which makes its runs gentler than these).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import socket
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from forwarder.signature import sign

Attack = Callable[[int, asyncio.Event], Awaitable[None]]
RECOVERY_S = 30.0
RECOVERED_WITHIN_KIB = 100 * 1024


@dataclass
class Outcome:
    """What the signed client and the watcher saw during one attack."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    healthz_max_s: float = 0.0
    healthz_failures: int = 0
    start_rss_kib: int = 0
    peak_rss_kib: int = 0
    peak_fds: int = 0
    recovered_s: float | None = None
    lost: int = 0

    @property
    def ok_percent(self) -> float:
        return 100.0 * len(self.acknowledged) / self.sent if self.sent else 0.0

    @property
    def p99_s(self) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0

    def row(self, name: str) -> str:
        recovered = f"{self.recovered_s:.0f} s" if self.recovered_s is not None else "no"
        return (
            f"| {name} | {self.ok_percent:.1f}% ({len(self.acknowledged)}/{self.sent}) | "
            f"{self.p99_s * 1000:.0f} ms | {self.lost} | {self.peak_rss_kib / 1024:.0f} MiB "
            f"(from {self.start_rss_kib / 1024:.0f}) | {self.peak_fds} | {self.healthz_max_s * 1000:.0f} ms"
            f"{f' + {self.healthz_failures} failed' if self.healthz_failures else ''} | {recovered} |"
        )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def signed_webhook(secret: str) -> tuple[str, bytes]:
    """A fresh event (its own id) as one raw, signed HTTP request."""
    event_id = f"event_01ATTACK{uuid.uuid4().hex[:18].upper()}"
    body = orjson.dumps(
        {
            "id": event_id,
            "event": "user.created",
            "created_at": "2026-01-15T10:00:00.000Z",
            "data": {"object": "user", "id": "user_01ATTACK", "email": "ana@example.com"},
        }
    )
    head = (
        "POST /webhooks/workos HTTP/1.1\r\nHost: forwarder\r\nContent-Type: application/json\r\n"
        f"WorkOS-Signature: {sign(body, secret)}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return event_id, head.encode() + body


async def exchange(port: int, request: bytes, timeout_s: float) -> int:
    """Send one request on a new connection and return the answer's status (0: none)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            line = await reader.readline()
            return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    except (OSError, TimeoutError, ValueError, IndexError):
        return 0
    finally:
        if writer is not None:
            writer.close()


async def signed_client(
    port: int, secret: str, stop: asyncio.Event, out: Outcome, rate: float = 20.0
) -> None:
    """Signed webhooks at ``rate`` per second, as WorkOS would send them, until ``stop``."""
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        event_id, request = signed_webhook(secret)
        started = time.monotonic()
        status = await exchange(port, request, timeout_s=10.0)
        out.latencies_s.append(time.monotonic() - started)
        out.statuses[status] = out.statuses.get(status, 0) + 1
        if status == 200:
            out.acknowledged.append(event_id)

    while not stop.is_set():
        out.sent += 1
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / rate)
    await asyncio.gather(*pending)


async def watch(pid: int, port: int, stop: asyncio.Event, out: Outcome) -> None:
    """RSS and descriptors every 0.1 s; ``/healthz`` on a new connection every 0.2 s."""
    healthz = b"GET /healthz HTTP/1.1\r\nHost: forwarder\r\nConnection: close\r\n\r\n"
    while not stop.is_set():
        out.peak_rss_kib = max(out.peak_rss_kib, rss_kib(pid))
        out.peak_fds = max(out.peak_fds, descriptors(pid))
        started = time.monotonic()
        status = await exchange(port, healthz, timeout_s=5.0)
        out.healthz_max_s = max(out.healthz_max_s, time.monotonic() - started)
        if status != 200:
            out.healthz_failures += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def _hold(
    port: int,
    stop: asyncio.Event,
    opening: bytes,
    trickle: bytes,
    every_s: float,
    rcvbuf: int = 0,
    reopen_s: float = 0.05,
) -> None:
    """One attacking connection: send ``opening``, then ``trickle`` every ``every_s`` (nothing if
    empty), never reading; reopen ``reopen_s`` after the service closes it, until ``stop``."""
    while not stop.is_set():
        writer: asyncio.StreamWriter | None = None
        try:
            sock = socket.socket()
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(opening)
            await writer.drain()
            while not stop.is_set() and not reader.at_eof():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
                if trickle:
                    writer.write(trickle)
                    await writer.drain()
                elif writer.transport.is_closing():
                    break
                else:  # notice a close without reading what was answered: a zero-byte peek
                    if _peer_closed(sock):
                        break
        except (OSError, ConnectionError):
            pass
        finally:
            if writer is not None:
                writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), reopen_s)


def _peer_closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _many(connections: int, make: Callable[[int, asyncio.Event], Awaitable[None]]) -> Attack:
    async def attack(port: int, stop: asyncio.Event) -> None:
        await asyncio.gather(*(make(port, stop) for _ in range(connections)))

    return attack


def slow_headers(connections: int) -> Attack:
    """Slowloris: a head that never ends, one header line every second."""
    opening = b"POST /webhooks/workos HTTP/1.1\r\nHost: forwarder\r\n"
    return _many(connections, lambda port, stop: _hold(port, stop, opening, b"X-a: b\r\n", 1.0))


def slow_bodies(connections: int, declared: int = 100_000) -> Attack:
    """R-U-Dead-Yet: a whole head declaring ``declared`` bytes, then ten bytes a second."""
    opening = (
        b"POST /webhooks/workos HTTP/1.1\r\nHost: forwarder\r\nContent-Type: application/json\r\n"
        b"WorkOS-Signature: t=1, v1=00\r\nContent-Length: %d\r\n\r\n{" % declared
    )
    return _many(connections, lambda port, stop: _hold(port, stop, opening, b" " * 10, 1.0))


def buffered_bodies(connections: int, sent: int = 990_000, declared: int = 1_000_000) -> Attack:
    """Most of a large body at full speed, then nothing: memory held per connection. A
    connection the service closes is reopened a second later (at once, it is a bandwidth flood
    of a gigabyte a second, which no bound on memory is about)."""
    opening = (
        b"POST /webhooks/workos HTTP/1.1\r\nHost: forwarder\r\nContent-Type: application/json\r\n"
        b"WorkOS-Signature: t=1, v1=00\r\nContent-Length: %d\r\n\r\n" % declared
    ) + b"x" * sent
    return _many(connections, lambda port, stop: _hold(port, stop, opening, b"", 0.5, reopen_s=1.0))


def pipelined_unread(connections: int, pipelined: int = 3, path: str = "/metrics") -> Attack:
    """Slow read: ``pipelined`` requests at once on a 4 KiB receive window, never read; a closed
    connection is reopened a second later (at once, it is a plain request flood)."""
    request = f"GET {path} HTTP/1.1\r\nHost: forwarder\r\n\r\n".encode()
    return _many(
        connections,
        lambda port, stop: _hold(port, stop, request * pipelined, b"", 0.5, rcvbuf=4096, reopen_s=1.0),
    )


def malformed(connections: int) -> Attack:
    """Requests that do not parse, as fast as ``connections`` clients can send them."""

    async def one(port: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await exchange(port, b"GARBAGE \x00\x01 nonsense\r\n\r\n", timeout_s=5.0)

    return _many(connections, one)


ATTACKS: dict[str, Attack] = {
    "slow headers x1000": slow_headers(1000),
    "slow bodies x1000": slow_bodies(1000),
    "buffered 990 kB bodies x1000": buffered_bodies(1000),
    "buffered 250 kB bodies x1000 (under the body cap)": buffered_bodies(1000, 250_000, 260_000),
    "pipelined /metrics unread x1000 (3 each, the most kept)": pipelined_unread(1000, 3),
    "pipelined /metrics unread x1000 (10 each, closed)": pipelined_unread(1000, 10),
    "malformed requests (50 clients)": malformed(50),
}


def _attack_process(attack: Attack, port: int, seconds: float) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a thousand sockets and more

    async def timed() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        await attack(port, stop)

    asyncio.run(timed())


async def run_attack(
    attack: Attack, pid: int, port: int, secret: str, seconds: float, recovery_s: float = RECOVERY_S
) -> Outcome:
    """``attack`` for ``seconds`` with the signed client and the watcher; then RSS's way back.

    The attack runs in a process of its own, so that its thousand sockets do not slow down the
    client that measures the service."""
    out = Outcome(start_rss_kib=rss_kib(pid))
    attacker = multiprocessing.get_context("fork").Process(
        target=_attack_process, args=(attack, port, seconds), daemon=True
    )
    attacker.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(signed_client(port, secret, stop, out)),
        asyncio.create_task(watch(pid, port, stop, out)),
    ]
    started = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, attacker.join, seconds + 30)
    if attacker.is_alive():
        attacker.kill()
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))  # an attack that gave up early
    stop.set()
    await asyncio.gather(*tasks)
    ended = time.monotonic()
    while time.monotonic() - ended < recovery_s:
        if rss_kib(pid) <= out.start_rss_kib + RECOVERED_WITHIN_KIB:
            out.recovered_s = time.monotonic() - ended
            break
        await asyncio.sleep(0.5)
    return out


def delivered_ids(jsonl: Path) -> set[str]:
    if not jsonl.exists():
        return set()
    return {orjson.loads(line)["workos"]["id"] for line in jsonl.read_bytes().splitlines() if line.strip()}


def count_lost(out: Outcome, jsonl: Path, wait_s: float = 15.0) -> int:
    """Acknowledged ids not (yet, after ``wait_s``) in the JSON-lines sink's file."""
    deadline = time.monotonic() + wait_s
    while True:
        missing = set(out.acknowledged) - delivered_ids(jsonl)
        if not missing or time.monotonic() > deadline:
            out.lost = len(missing)
            return out.lost
        time.sleep(0.2)


@contextlib.contextmanager
def _service(workdir: Path, port: int, env: dict[str, str]) -> Iterator[int]:
    from bench.harness.processes import Server
    from bench.harness.service import SERVE_ARGV, service_env

    full = {**service_env(workdir, port), "JSONL_OUTPUT": str(workdir / "records.jsonl"), **env}
    server = Server("attacks", SERVE_ARGV, full, workdir, port).start("/healthz")
    try:
        assert server.proc is not None
        yield server.proc.pid
    finally:
        server.stop()


def main() -> None:
    from bench.harness.processes import free_port
    from bench.harness.service import SECRET

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each attack")
    parser.add_argument("--only", help="run only the attacks whose name contains this")
    args = parser.parse_args()
    header = (
        "| attack | signed webhooks 200 | p99 | lost | peak RSS | peak fds | /healthz max | recovered |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for label, env in (
        ("defaults", {}),
        ("FORWARDER_MAX_CONNECTIONS=200", {"FORWARDER_MAX_CONNECTIONS": "200"}),
    ):
        print(f"\n{label}\n\n{header}", flush=True)
        for name, attack in ATTACKS.items():
            if args.only and args.only not in name:
                continue
            with tempfile.TemporaryDirectory(prefix="attacks-") as tmp:
                port = free_port()
                with _service(Path(tmp), port, env) as pid:
                    out = asyncio.run(run_attack(attack, pid, port, SECRET, args.seconds))
                    count_lost(out, Path(tmp) / "records.jsonl")
                print(out.row(name), flush=True)


if __name__ == "__main__":
    main()
