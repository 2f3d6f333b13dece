"""A WorkOS Events API (``GET /events``) that follows the documented contract, on loopback.

Parameters as documented: ``events`` (comma-joined types, required, unknown types answer
422), ``limit`` 1..100 (default 10), ``after`` / ``before`` (event-id cursors), ``range_start``
/ ``range_end`` (ISO-8601 UTC with ``Z``; start and end both exclusive, the stricter reading
of "created after"), ``organization_id`` and ``order`` (asc, desc or normal; accepted and, as
reported of the live API, ignored). Answers ``{"object": "list", "data": [...],
"list_metadata": {"before": ..., "after": ...}}`` with ``after`` null on the last page.

Knobs a test turns: ``newest_first`` serves the list newest-first (``after`` then pages back
in time, as WorkOS lists in desc order do), ``page_delay_s`` slows every answer,
``rate_limit(n, retry_after)`` answers the next n requests 429 with ``Retry-After``,
``fail_next(status, body=...)`` queues other failures (or a broken ``200``), ``add``
publishes events between polls, and ``add_raw`` publishes one served as given bytes (JSON that
no decoder of the forwarder reads, see ``too_deep``). Every request is recorded (params, answer,
time) for assertions.

For the membership lookups: ``GET /user_management/organization_memberships`` lists
``memberships`` (organization membership objects) filtered by ``user_id`` and ``statuses``
(comma-joined), ``limit`` per page with an ``after`` cursor (a membership id); a ``user_id``
in ``missing_users`` is answered 404 as WorkOS answers an unknown user, and ``fail_next`` /
``rate_limit`` apply to it too (the Events API poller should be off in such a test). Its
requests are recorded in ``membership_requests``.

For ``doctor``: ``GET /connections`` and ``GET /directories`` list ``connections`` and
``directories`` (``limit`` honoured, same key check), and every answer carries this double's
own ``Date`` header, ``clock_offset_s`` away from the real time (a WorkOS whose clock differs
from this host's).
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from forwarder.catalog import KNOWN_EVENT_TYPES
from tests.doubles import LoopbackServer
from tests.samples import make_event

API_KEY = "sk_test_emulator_0123456789"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_counter = itertools.count()
# A mix of types, security signals and API-only ones among them (vault.*, action.*).
SAMPLE_TYPES = (
    "authentication.password_failed",
    "authentication.sso_succeeded",
    "user.created",
    "organization_membership.updated",
    "dsync.user.updated",
    "vault.data.read",
    "action.authentication.denied",
    "authentication.radar_risk_detected",
)


def event_id(created_ms: int) -> str:
    """A ULID-shaped id (time first) like WorkOS's, unique within the test run."""
    number = (created_ms << 80) | next(_counter)
    chars = "".join(_CROCKFORD[(number >> shift) & 31] for shift in range(125, -1, -5))
    return f"event_{chars[:26]}"


def api_events(count: int, *, start: float | None = None, spacing_s: float = 0.01) -> list[dict[str, Any]]:
    """``count`` events, oldest first, created ``spacing_s`` apart from ``start`` (default: just now)."""
    first = time.time() - count * spacing_s if start is None else start
    events = []
    for index in range(count):
        created_ms = round((first + index * spacing_s) * 1000)
        created_at = datetime.fromtimestamp(created_ms / 1000, UTC).isoformat(timespec="milliseconds")
        events.append(
            make_event(
                SAMPLE_TYPES[index % len(SAMPLE_TYPES)],
                id=event_id(created_ms),
                created_at=created_at.replace("+00:00", "Z"),
            )
        )
    return events


def too_deep(event: dict[str, Any], depth: int = 1_100) -> bytes:
    """``event`` as JSON with ``depth`` arrays nested in ``data.nested``: valid JSON, but past the
    1,024 levels orjson decodes, so the page that holds it does not decode whole."""
    marked = orjson.dumps({**event, "data": {**event["data"], "nested": "NESTED"}})
    return marked.replace(b'"NESTED"', b"[" * depth + b"]" * depth)


@dataclass(frozen=True)
class ApiRequest:
    params: dict[str, str]
    status: int
    returned: int
    at: float


def _parse_time(raw: str) -> float:
    if not raw.endswith("Z"):
        raise ValueError("must be UTC with a Z suffix")
    return datetime.fromisoformat(raw[:-1] + "+00:00").timestamp()


class _Invalid(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        self.status = status
        self.message = message
        self.field = field


class WorkOSEventsAPI:
    def __init__(self, *, api_key: str = API_KEY, newest_first: bool = False, page_delay_s: float = 0.0):
        self.api_key = api_key
        self.newest_first = newest_first
        self.page_delay_s = page_delay_s
        self.requests: list[ApiRequest] = []
        self._events: list[dict[str, Any]] = []
        self._created: dict[str, float] = {}
        self._raw: dict[str, bytes] = {}
        self._listings: dict[tuple[Any, ...], tuple[list[dict[str, Any]], list[tuple[float, str]]]] = {}
        self._failures: list[tuple[int, dict[str, str], bytes | None]] = []
        self._lock = threading.Lock()
        self.connections: list[dict[str, Any]] = []
        self.directories: list[dict[str, Any]] = []
        self.clock_offset_s = 0.0
        self.memberships: list[dict[str, Any]] = []
        self.missing_users: set[str] = set()
        self.membership_requests: list[ApiRequest] = []
        routes = [
            Route("/events", self._list, methods=["GET"]),
            Route("/user_management/organization_memberships", self._memberships, methods=["GET"]),
            Route("/connections", self._resources, methods=["GET"]),
            Route("/directories", self._resources, methods=["GET"]),
        ]
        self._server = LoopbackServer(Starlette(routes=routes))

    @property
    def url(self) -> str:
        return self._server.base_url

    def start(self) -> WorkOSEventsAPI:
        self._server.start()
        # Answers carry this double's own Date (see ``clock_offset_s``); uvicorn's would be a
        # second one, so it is turned off (the server re-reads the flag every second).
        server = self._server._server
        assert server is not None
        server.config.date_header = False
        server.server_state.default_headers = list(server.config.encoded_headers)
        return self

    def stop(self) -> None:
        self._server.stop()

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        """Publish events: visible from the next request on."""
        with self._lock:
            for event in events:
                if event["id"] not in self._created:
                    self._created[event["id"]] = _parse_time(event["created_at"])
                    self._events.append(event)
            self._events.sort(key=self._key)
            self._listings.clear()

    def add_raw(self, event: dict[str, Any], raw: bytes) -> None:
        """Publish ``event`` (its id, type, time and organization select it) served as ``raw``."""
        with self._lock:
            self._raw[event["id"]] = raw
        self.add([event])

    def rate_limit(self, requests: int = 1, retry_after: str = "1") -> None:
        with self._lock:
            self._failures.extend((429, {"retry-after": retry_after}, None) for _ in range(requests))

    def fail_next(
        self, status: int, headers: dict[str, str] | None = None, body: bytes | None = None
    ) -> None:
        """Answer the next request ``status``, with ``body`` if given (else an error message)."""
        with self._lock:
            self._failures.append((status, headers or {}, body))

    def page_requests(self) -> list[ApiRequest]:
        return [request for request in self.requests if request.status == 200]

    async def _list(self, request: Request) -> Response:
        params = dict(request.query_params)
        if self.page_delay_s:
            await asyncio.sleep(self.page_delay_s)
        status, headers, body, returned = self._answer(request, params)
        self.requests.append(ApiRequest(params, status, returned, time.time()))
        return Response(body, status, self._dated(headers), media_type="application/json")

    async def _resources(self, request: Request) -> Response:
        """``GET /connections`` or ``/directories``: a list page of at most ``limit`` items."""
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            body: dict[str, Any] = {"message": "Unauthorized", "code": "unauthorized"}
            return Response(orjson.dumps(body), 401, self._dated({}), media_type="application/json")
        items = self.connections if request.url.path == "/connections" else self.directories
        limit = int(request.query_params.get("limit", "10"))
        body = {"object": "list", "data": items[:limit], "list_metadata": {"before": None, "after": None}}
        return Response(orjson.dumps(body), 200, self._dated({}), media_type="application/json")

    async def _memberships(self, request: Request) -> Response:
        params = dict(request.query_params)
        status, headers, body, returned = self._membership_answer(request, params)
        self.membership_requests.append(ApiRequest(params, status, returned, time.time()))
        return Response(orjson.dumps(body), status, self._dated(headers), media_type="application/json")

    def _membership_answer(
        self, request: Request, params: dict[str, str]
    ) -> tuple[int, dict[str, str], dict[str, Any], int]:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, {"message": "Unauthorized", "code": "unauthorized"}, 0
        with self._lock:
            if self._failures:
                status, headers, _ = self._failures.pop(0)
                return status, headers, {"message": f"emulated {status}"}, 0
        user_id = params.get("user_id", "")
        if user_id in self.missing_users:
            return 404, {}, {"message": f"User not found: '{user_id}'.", "code": "entity_not_found"}, 0
        statuses = set(filter(None, params.get("statuses", "").split(",")))
        listed = [
            membership
            for membership in self.memberships
            if (not user_id or membership["user_id"] == user_id)
            and (not statuses or membership["status"] in statuses)
        ]
        begin = 0
        if "after" in params:
            ids = [membership["id"] for membership in listed]
            if params["after"] not in ids:
                return 400, {}, {"message": f"after: no membership {params['after']!r}"}, 0
            begin = ids.index(params["after"]) + 1
        limit = int(params.get("limit", "10"))
        page = listed[begin : begin + limit]
        more = begin + len(page) < len(listed)
        metadata = {"before": None, "after": page[-1]["id"] if page and more else None}
        return 200, {}, {"object": "list", "data": page, "list_metadata": metadata}, len(page)

    def _dated(self, headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "date": formatdate(time.time() + self.clock_offset_s, usegmt=True)}

    def _answer(self, request: Request, params: dict[str, str]) -> tuple[int, dict[str, str], bytes, int]:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, orjson.dumps({"message": "Unauthorized", "code": "unauthorized"}), 0
        with self._lock:
            if self._failures:
                status, headers, raw = self._failures.pop(0)
                return status, headers, raw or orjson.dumps({"message": f"emulated {status}"}), 0
            try:
                page, after = self._page(params)
            except _Invalid as exc:
                errors = [{"field": exc.field, "code": "invalid"}] if exc.field else []
                return exc.status, {}, orjson.dumps({"message": exc.message, "errors": errors}), 0
        body = {
            "object": "list",
            "data": [orjson.Fragment(self._raw[e["id"]]) if e["id"] in self._raw else e for e in page],
            "list_metadata": {"before": page[0]["id"] if page else None, "after": after},
        }
        return 200, {}, orjson.dumps(body), len(page)

    def _page(self, params: dict[str, str]) -> tuple[list[dict[str, Any]], str | None]:
        types = [name for name in params.get("events", "").split(",") if name]
        if not types:
            raise _Invalid(422, "events is required", "events")
        unknown = sorted(set(types) - KNOWN_EVENT_TYPES)
        if unknown:
            raise _Invalid(422, f"unknown event types: {', '.join(unknown)}", "events")
        try:
            limit = int(params.get("limit", "10"))
        except ValueError:
            raise _Invalid(422, "limit must be a number", "limit") from None
        if not 1 <= limit <= 100:
            raise _Invalid(422, "limit must be between 1 and 100", "limit")
        if params.get("order", "asc") not in ("asc", "desc", "normal"):
            raise _Invalid(422, "order must be asc, desc or normal", "order")
        try:
            start = _parse_time(params["range_start"]) if "range_start" in params else None
            end = _parse_time(params["range_end"]) if "range_end" in params else None
        except ValueError as exc:
            raise _Invalid(422, f"range_start/range_end: {exc}", "range_start") from None
        listed, keys = self._listing(frozenset(types), start, end, params.get("organization_id"))
        for name in ("after", "before"):
            if name in params and params[name] not in self._created:
                raise _Invalid(400, f"{name}: no event {params[name]!r}", name)
        if "after" in params:
            begin = self._slot(params["after"], keys)
            page = listed[begin : begin + limit]
        elif "before" in params:
            end = self._slot(params["before"], keys, after=False)
            begin = max(end - limit, 0)
            page = listed[begin:end]
        else:
            begin, page = 0, listed[:limit]
        more = begin + len(page) < len(listed)
        return page, page[-1]["id"] if page and more else None

    def _key(self, event: dict[str, Any]) -> tuple[float, str]:
        return (self._created[event["id"]], event["id"])

    def _listing(
        self, types: frozenset[str], start: float | None, end: float | None, organization: str | None
    ) -> tuple[list[dict[str, Any]], list[tuple[float, str]]]:
        """The filtered list in serving order and its keys, oldest first (cached until ``add``)."""
        cache_key = (types, start, end, organization)
        if cache_key not in self._listings:
            listed = [
                event
                for event in self._events
                if event["event"] in types
                and (start is None or self._created[event["id"]] > start)
                and (end is None or self._created[event["id"]] < end)
                and (organization is None or event["data"].get("organization_id") == organization)
            ]
            keys = [self._key(event) for event in listed]
            if self.newest_first:
                listed.reverse()
            self._listings[cache_key] = (listed, keys)
        return self._listings[cache_key]

    def _slot(self, event_id: str, keys: list[tuple[float, str]], *, after: bool = True) -> int:
        """Index in the served list just after (or at, for ``before``) the cursor event, which may
        be filtered out of this list: then where it would sit."""
        key = (self._created[event_id], event_id)
        if self.newest_first:
            ahead = len(keys) - bisect.bisect_right(keys, key)
        else:
            ahead = bisect.bisect_left(keys, key)
        present = key in keys[bisect.bisect_left(keys, key) : bisect.bisect_right(keys, key)]
        return ahead + 1 if present and after else ahead
