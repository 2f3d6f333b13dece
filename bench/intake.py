"""A fast Datadog Logs intake double for the benchmark: answers 202 and counts records.

Unlike ``tests/doubles/datadog_intake.py`` (which validates every entry against the Datadog
client models) this one must never be the bottleneck, so it is a bare asyncio protocol on
uvloop with httptools: gunzip, one orjson parse per request to count the array, answer.

``POST /api/v2/logs``  count the records; answer 202 (or the status set by ``/mode``).
``POST /mode?status=503``  answer that status from now on (503 simulates a dead intake).
``GET /stats``  ``{"records", "requests", "failed_requests", "bytes", "first_at", "last_at"}``.

``python -m bench.intake PORT``; prints ``ready`` on stdout once listening.
"""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from typing import cast
from urllib.parse import parse_qs, urlsplit

import httptools
import orjson
import uvloop


class Counts:
    def __init__(self) -> None:
        self.status = 202
        self.records = 0
        self.requests = 0
        self.failed_requests = 0
        self.bytes = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def as_json(self) -> bytes:
        return orjson.dumps(
            {
                "records": self.records,
                "requests": self.requests,
                "failed_requests": self.failed_requests,
                "bytes": self.bytes,
                "first_at": self.first_at,
                "last_at": self.last_at,
                "status": self.status,
            }
        )


_REASONS = {200: b"OK", 202: b"Accepted", 400: b"Bad Request", 404: b"Not Found", 503: b"Unavailable"}


class IntakeProtocol(asyncio.Protocol):
    def __init__(self, counts: Counts) -> None:
        self._counts = counts
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._gzip = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._gzip = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-encoding" and value.lower() == b"gzip":
            self._gzip = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        method = self._parser.get_method()
        url = urlsplit(self._url.decode("latin-1"))
        counts = self._counts
        if method == b"POST" and url.path == "/api/v2/logs":
            status, body = self._logs(counts)
        elif method == b"POST" and url.path == "/mode":
            counts.status = int(parse_qs(url.query).get("status", ["202"])[0])
            status, body = 200, counts.as_json()
        elif url.path == "/stats":
            status, body = 200, counts.as_json()
        else:
            status, body = 404, b"{}"
        assert self._transport is not None
        self._transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (status, _REASONS.get(status, b"Status"), len(body), body)
        )

    def _logs(self, counts: Counts) -> tuple[int, bytes]:
        counts.requests += 1
        if counts.status >= 300:
            counts.failed_requests += 1
            return counts.status, b'{"errors":["intake unavailable (bench)"]}'
        raw = b"".join(self._body)
        counts.bytes += len(raw)
        payload = zlib.decompress(raw, wbits=31) if self._gzip else raw
        counts.records += len(orjson.loads(payload))
        now = time.time()
        counts.last_at = now
        if counts.first_at is None:
            counts.first_at = now
        return 202, b"{}"


async def serve(port: int) -> None:
    counts = Counts()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: IntakeProtocol(counts), "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    uvloop.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
