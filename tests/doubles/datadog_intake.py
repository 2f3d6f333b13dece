"""A Datadog Logs intake (``POST /api/v2/logs``) that enforces the documented contract.

It checks ``DD-API-KEY``, decompresses gzip/deflate, enforces 1000 entries and 5 MB
uncompressed per request (413 otherwise) and checks that every entry deserializes as
datadog-api-client's ``HTTPLogItem`` (400 otherwise). A log over 1 MB, or dated more than
18 h ago, is accepted and noted in ``violations``, because the real intake answers 2xx and
then truncates or drops it silently: tests assert the sink never relies on that.

Failures on demand: ``fail_next`` queues answers (401, 413, 429 with ``Retry-After``, 500
...), ``down_for`` answers 503 for a while, ``poison_marker`` makes any request holding a
record whose message contains the marker answer 400, and ``api_key`` can be changed to
make the sink's key wrong (401) and then right again.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.v2.model.http_log_item import HTTPLogItem
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles import LoopbackServer

MAX_ENTRIES = 1000
# Decimal megabytes: the stricter reading of Datadog's "5 MB" and "1 MB".
MAX_UNCOMPRESSED_BYTES = 5_000_000
MAX_LOG_BYTES = 1_000_000
# Datadog keeps logs dated at most 18 h in the past and about 2 h in the future.
MAX_PAST_S = 18 * 3600
MAX_FUTURE_S = 2 * 3600


@dataclass(frozen=True)
class IntakeRequest:
    """One request as the intake saw it (what a test can assert on)."""

    status: int
    entries: int
    uncompressed_bytes: int
    wire_bytes: int
    content_encoding: str
    at: float
    origin: str
    """``DD-EVP-ORIGIN`` and ``DD-EVP-ORIGIN-VERSION`` as sent, empty when missing."""
    origin_version: str


@dataclass
class _Answer:
    status: int
    headers: dict[str, str]
    body: str


class DatadogIntake(LoopbackServer):
    def __init__(
        self, api_key: str = "test-api-key", *, max_uncompressed_bytes: int = MAX_UNCOMPRESSED_BYTES
    ) -> None:
        super().__init__(Starlette(routes=[Route("/api/v2/logs", self._handle, methods=["POST"])]))
        self.api_key = api_key
        self.max_uncompressed_bytes = max_uncompressed_bytes
        self.poison_marker: str | None = None
        self.violations: list[str] = []
        self._received: list[dict[str, Any]] = []
        self._requests: list[IntakeRequest] = []
        self._queued: list[_Answer] = []
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._api = ApiClient(Configuration())

    @property
    def url(self) -> str:
        return f"{self.base_url}/api/v2/logs"

    # --- what arrived -----------------------------------------------------------------------
    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._received)

    def ids(self) -> list[str]:
        return [item["workos"]["id"] for item in self.received()]

    def requests(self) -> list[IntakeRequest]:
        with self._lock:
            return list(self._requests)

    # --- failures on demand -----------------------------------------------------------------
    def fail_next(self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None) -> None:
        body = orjson.dumps({"errors": [{"status": str(status), "title": f"injected {status}"}]}).decode()
        with self._lock:
            self._queued.extend(_Answer(status, dict(headers or {}), body) for _ in range(times))

    def down_for(self, seconds: float) -> None:
        with self._lock:
            self._down_until = time.monotonic() + seconds

    # --- the intake -------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        wire = await request.body()
        encoding = request.headers.get("content-encoding", "")
        answer, raw, entries = self._judge(request, wire, encoding)
        with self._lock:
            self._requests.append(
                IntakeRequest(
                    answer.status,
                    entries,
                    len(raw),
                    len(wire),
                    encoding,
                    time.time(),
                    request.headers.get("dd-evp-origin", ""),
                    request.headers.get("dd-evp-origin-version", ""),
                )
            )
        return Response(answer.body, answer.status, answer.headers, media_type="application/json")

    def _judge(self, request: Request, wire: bytes, encoding: str) -> tuple[_Answer, bytes, int]:
        with self._lock:
            if time.monotonic() < self._down_until:
                return _Answer(503, {}, '{"errors":["Service Unavailable"]}'), b"", 0
            if self._queued:
                return self._queued.pop(0), b"", 0
        if request.headers.get("dd-api-key") != self.api_key:
            return _error(401, "Unauthorized: API key is missing or invalid"), b"", 0
        try:
            raw = _decompress(wire, encoding)
        except (OSError, zlib.error, EOFError) as exc:
            return _error(400, f"cannot decompress body ({encoding}): {exc}"), b"", 0
        if len(raw) > self.max_uncompressed_bytes:
            return _error(413, f"payload of {len(raw)} bytes is over {self.max_uncompressed_bytes}"), raw, 0
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return _error(400, f"body is not JSON: {exc}"), raw, 0
        if not isinstance(items, list):
            return _error(400, "body must be a JSON array of logs"), raw, 0
        if len(items) > MAX_ENTRIES:
            return _error(413, f"{len(items)} entries is over {MAX_ENTRIES}"), raw, len(items)
        for index, item in enumerate(items):
            problem = self._problem(item)
            if problem:
                return _error(400, f"entry {index}: {problem}"), raw, len(items)
        with self._lock:
            for item in items:
                if not _within_date_window(item.get("date"), time.time()):
                    self.violations.append(f"{_id(item)}: date {item.get('date')} is dropped by Datadog")
                size = len(orjson.dumps(item))
                if size > MAX_LOG_BYTES:
                    self.violations.append(
                        f"{item.get('workos', {}).get('id')}: {size} bytes, truncated by Datadog"
                    )
            self._received.extend(items)
        return _Answer(202, {}, "{}"), raw, len(items)

    def _problem(self, item: Any) -> str | None:
        try:
            parsed = self._api.deserialize(orjson.dumps(item).decode(), (HTTPLogItem,), True)
        except Exception as exc:  # the client raises TypeError or its own ApiTypeError/ApiValueError
            return f"not an HTTPLogItem: {exc}"
        if not isinstance(parsed, HTTPLogItem) or parsed._unparsed:
            return "not an HTTPLogItem"
        marker = self.poison_marker
        if marker and marker in str(item.get("message", "")):
            return f"rejected record ({marker})"
        return None


def _within_date_window(date: Any, now: float) -> bool:
    if isinstance(date, int | float):
        moment = date / 1000
    elif isinstance(date, str):
        moment = datetime.fromisoformat(date).timestamp()
    else:
        return True  # no date: Datadog uses the intake time
    return now - MAX_PAST_S <= moment <= now + MAX_FUTURE_S


def _id(item: Mapping[str, Any]) -> Any:
    return (item.get("workos") or {}).get("id")


def _decompress(wire: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(wire)
    if encoding == "deflate":
        return zlib.decompress(wire)
    return wire


def _error(status: int, detail: str) -> _Answer:
    return _Answer(status, {}, orjson.dumps({"errors": [{"status": str(status), "detail": detail}]}).decode())
