"""A Splunk HTTP Event Collector that enforces HEC's documented contract (REFERENCE.md §15).

* ``POST /services/collector/event``: ``Authorization: Splunk <token>`` (missing: 401 code
  2; wrong: 403 code 4); gzip with ``Content-Encoding: gzip``; a body of JSON event objects
  one after another (empty: 400 code 5 "No data"; not JSON objects: 400 code 6 with
  ``invalid-event-number``; an object without ``event``: 400 code 12, blank: code 13); an
  ``index`` other than the ones it has: 400 code 7. HEC parses events in order and stops at
  the first bad one: the events before it are kept, as Splunk does.
* Indexer acknowledgment (``ack=True``): a request without ``X-Splunk-Request-Channel``
  answers 400 code 10; each accepted request answers an ``ackId`` (per channel, from 0), and
  ``POST /services/collector/ack?channel=`` with ``{"acks": [ids]}`` answers which are
  indexed. An event counts as indexed (``indexed()``) only once its ack is due; with
  ``ack_after_queries`` the first queries answer false, as a busy indexer does.
* ``GET /services/collector/health``: 200 code 17 "HEC is healthy" (503 code 9 while busy).
* Busy on demand: ``busy_ratio`` (0..1) answers that share of event posts 503 code 9
  "Server is busy", at random (seeded).
"""

from __future__ import annotations

import gzip
import json
import random
import threading
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles import LoopbackServer


def _answer(status: int, code: int, text: str, **extra: Any) -> Response:
    return Response(
        orjson.dumps({"text": text, "code": code, **extra}), status, media_type="application/json"
    )


class SplunkHec(LoopbackServer):
    def __init__(
        self,
        token: str = "11111111-2222-3333-4444-555555555555",
        *,
        indexes: tuple[str, ...] = ("main", "workos"),
        ack: bool = False,
        ack_after_queries: int = 0,
        busy_ratio: float = 0.0,
        seed: int = 25,
    ) -> None:
        super().__init__(
            Starlette(
                routes=[
                    Route("/services/collector/event", self._event, methods=["POST"]),
                    Route("/services/collector/ack", self._ack, methods=["POST"]),
                    Route("/services/collector/health", self._health, methods=["GET"]),
                ]
            )
        )
        self.token = token
        self.indexes = indexes
        self.ack = ack
        self.ack_after_queries = ack_after_queries
        self.busy_ratio = busy_ratio
        self.poison_marker: str | None = None
        """An event whose record holds this text is refused as invalid data (400 code 6)."""
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._kept: list[dict[str, Any]] = []
        self._pending: dict[tuple[str, int], tuple[list[dict[str, Any]], int]] = {}
        self._next_ack: dict[str, int] = {}
        self.statuses: list[int] = []
        self.headers_seen: list[dict[str, str]] = []

    # --- what arrived -----------------------------------------------------------------------
    def indexed(self) -> list[dict[str, Any]]:
        """Events Splunk indexed: all accepted ones, or with ack on, the acknowledged ones."""
        with self._lock:
            return list(self._kept)

    def ids(self) -> list[str]:
        return [event["event"]["workos"]["id"] for event in self.indexed()]

    # --- the collector ----------------------------------------------------------------------
    async def _event(self, request: Request) -> Response:
        wire = await request.body()
        with self._lock:
            self.headers_seen.append(dict(request.headers))
        response = self._judge(request, wire)
        with self._lock:
            self.statuses.append(response.status_code)
        return response

    def _judge(self, request: Request, wire: bytes) -> Response:
        authorization = request.headers.get("authorization", "")
        if not authorization:
            return _answer(401, 2, "Token is required")
        if authorization != f"Splunk {self.token}":
            return _answer(403, 4, "Invalid token")
        channel = request.headers.get("x-splunk-request-channel", "")
        if self.ack and not channel:
            return _answer(400, 10, "Data channel is missing")
        with self._lock:
            if self.busy_ratio and self._random.random() < self.busy_ratio:
                return _answer(503, 9, "Server is busy")
        try:
            body = gzip.decompress(wire) if request.headers.get("content-encoding") == "gzip" else wire
        except (OSError, EOFError):
            return _answer(400, 6, "Invalid data format")
        events, problem = _parse(body, self.indexes, self.poison_marker)
        if not events and problem is None:
            return _answer(400, 5, "No data")
        with self._lock:
            if self.ack:
                ack_id = self._next_ack.get(channel, 0)
                self._next_ack[channel] = ack_id + 1
                self._pending[(channel, ack_id)] = (events, self.ack_after_queries)
            else:
                self._kept.extend(events)
        if problem is not None:
            return problem
        if self.ack:
            return _answer(200, 0, "Success", ackId=ack_id)
        return _answer(200, 0, "Success")

    async def _ack(self, request: Request) -> Response:
        channel = request.query_params.get("channel") or request.headers.get("x-splunk-request-channel", "")
        if request.headers.get("authorization") != f"Splunk {self.token}":
            return _answer(403, 4, "Invalid token")
        if not self.ack:
            return _answer(400, 14, "ACK is disabled")
        if not channel:
            return _answer(400, 10, "Data channel is missing")
        try:
            asked = orjson.loads(await request.body())["acks"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _answer(400, 6, "Invalid data format")
        answers = {}
        with self._lock:
            for ack_id in asked:
                pending = self._pending.get((channel, ack_id))
                if pending is None:
                    answers[str(ack_id)] = False
                    continue
                events, queries_left = pending
                if queries_left > 0:
                    self._pending[(channel, ack_id)] = (events, queries_left - 1)
                    answers[str(ack_id)] = False
                    continue
                del self._pending[(channel, ack_id)]
                self._kept.extend(events)
                answers[str(ack_id)] = True
        return Response(orjson.dumps({"acks": answers}), 200, media_type="application/json")

    async def _health(self, request: Request) -> Response:
        return _answer(200, 17, "HEC is healthy")


def _parse(
    body: bytes, indexes: tuple[str, ...], poison: str | None
) -> tuple[list[dict[str, Any]], Response | None]:
    """The events before the first bad one, and the answer for that one (None when all are good)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return [], _answer(400, 6, "Invalid data format", **{"invalid-event-number": 0})
    events: list[dict[str, Any]] = []
    position, number = 0, 0
    decoder = json.JSONDecoder()
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return events, None
        try:
            event, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return events, _answer(400, 6, "Invalid data format", **{"invalid-event-number": number})
        if not isinstance(event, dict):
            return events, _answer(400, 6, "Invalid data format", **{"invalid-event-number": number})
        if "event" not in event:
            return events, _answer(400, 12, "Event field is required", **{"invalid-event-number": number})
        if event["event"] in ("", None, {}):
            return events, _answer(400, 13, "Event field cannot be blank", **{"invalid-event-number": number})
        if "time" in event and (
            not isinstance(event["time"], int | float) or isinstance(event["time"], bool)
        ):
            return events, _answer(400, 6, "Invalid data format", **{"invalid-event-number": number})
        if "index" in event and event["index"] not in indexes:
            return [], _answer(400, 7, "Incorrect index", **{"invalid-event-number": number})
        if poison and poison in orjson.dumps(event["event"]).decode():
            return events, _answer(400, 6, "Invalid data format", **{"invalid-event-number": number})
        events.append(event)
        number += 1
