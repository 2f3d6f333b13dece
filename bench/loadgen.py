"""A constant-rate HTTP/1.1 load generator with per-request latency (wrk is closed-loop).

wrk sends the next request as soon as the previous answer arrives, so when the server
stalls it simply sends less and the stall never shows up in its percentiles ("coordinated
omission"). Here request *i* is released at ``start + i / rate`` (on a 1 ms tick) whatever
happened before; if every connection is busy it waits in a queue and that wait counts in its
latency. Latency runs from the release to the last byte of the answer.

Raw asyncio protocols on uvloop, keep-alive, no pipelining (one request in flight per
connection), pre-signed requests from ``bench/events.py``: at 5,000 requests/s this costs
a fraction of a core, so it is not what limits a run.

``python -m bench.loadgen --port P --rate 5000 --duration 30 --connections 64 FILE``
prints one JSON line (prefix ``BENCH``) with counts and latency percentiles in microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import orjson
import uvloop

from bench.events import iter_requests

_TICK_S = 0.001


class _Connection(asyncio.Protocol):
    def __init__(self, generator: ConstantRate) -> None:
        self._generator = generator
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._released = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._generator.connection_lost(self)

    def send(self, request: bytes, released: float) -> None:
        assert self.transport is not None
        self._released = released
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self._buffer[:end]).lower()
        if b"\r\ntransfer-encoding: chunked" in head:
            # Our servers' answers are one chunk at most: the message ends at the last chunk.
            last = self._buffer.find(b"\r\n0\r\n\r\n", end)
            if last < 0:
                return
            size = last + 7
        else:
            length = 0
            marker = head.find(b"\r\ncontent-length:")
            if marker >= 0:
                stop = head.find(b"\r\n", marker + 2)
                length = int(head[marker + 17 : stop if stop >= 0 else None])
            size = end + 4 + length
            if len(self._buffer) < size:
                return
        status = int(head[9:12])
        del self._buffer[:size]
        self._generator.answered(self, status, time.perf_counter() - self._released)


class ConstantRate:
    def __init__(self, requests: Iterator[bytes], rate: float, duration: float, grace: float = 30.0) -> None:
        self._requests = requests
        self._rate = rate
        self._duration = duration
        self._grace = grace
        self._idle: collections.deque[_Connection] = collections.deque()
        self._queue: collections.deque[tuple[bytes, float]] = collections.deque()
        self.latencies: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.released = 0
        self.lost = 0
        self.max_queue = 0
        self._outstanding = 0

    def connection_lost(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)
        else:
            self.lost += 1

    def answered(self, connection: _Connection, status: int, latency: float) -> None:
        self._outstanding -= 1
        self.statuses[status] += 1
        self.latencies.append(latency)
        if self._queue:
            request, released = self._queue.popleft()
            self._outstanding += 1
            connection.send(request, released)
        else:
            self._idle.append(connection)

    async def run(self, host: str, port: int, connections: int) -> float:
        loop = asyncio.get_running_loop()
        for _ in range(connections):
            _, protocol = await loop.create_connection(lambda: _Connection(self), host, port)
            self._idle.append(protocol)
        total = int(self._rate * self._duration)
        interval = 1.0 / self._rate
        start = time.perf_counter()
        index = 0
        while index < total:
            now = time.perf_counter()
            due = min(int((now - start) / interval) + 1, total)
            while index < due:
                request = next(self._requests, None)
                if request is None:  # the file ran out: stop rather than send duplicates
                    total = index
                    break
                index += 1
                # The release time is now (the timer's own lateness is not the server's).
                if self._idle:
                    self._outstanding += 1
                    self._idle.popleft().send(request, now)
                else:
                    self._queue.append((request, now))
                    self.max_queue = max(self.max_queue, len(self._queue))
            self.released = index
            # Wake at most once a millisecond and release everything due: waking for every
            # request would cost the generator more than the requests themselves.
            await asyncio.sleep(max(start + index * interval - time.perf_counter(), _TICK_S))
        sent_for = time.perf_counter() - start
        deadline = time.perf_counter() + self._grace
        while (self._queue or self._outstanding) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        return sent_for


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


async def _main(args: argparse.Namespace) -> None:
    generator = ConstantRate(iter_requests(args.file), args.rate, args.duration, args.grace)
    sent_for = await generator.run(args.host, args.port, args.connections)
    ordered = sorted(generator.latencies)
    us = 1_000_000
    result = {
        "released": generator.released,
        "answered": len(ordered),
        "ok": sum(count for status, count in generator.statuses.items() if 200 <= status < 300),
        "statuses": {str(status): count for status, count in generator.statuses.items()},
        "sent_for_s": round(sent_for, 3),
        "rate": round(generator.released / sent_for, 1) if sent_for else 0.0,
        "lost_connections": generator.lost,
        "max_queue": generator.max_queue,
        "p50_us": round(_percentile(ordered, 0.50) * us),
        "p90_us": round(_percentile(ordered, 0.90) * us),
        "p99_us": round(_percentile(ordered, 0.99) * us),
        "p999_us": round(_percentile(ordered, 0.999) * us),
        "max_us": round((ordered[-1] if ordered else 0.0) * us),
    }
    sys.stdout.write("BENCH " + orjson.dumps(result).decode() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path, help="requests written by bench.events.write_requests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=5000.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds to wait for the last answers after the schedule [30]",
    )
    parser.add_argument("--connections", type=int, default=64)
    uvloop.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
