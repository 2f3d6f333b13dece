"""A WorkOS Events API double for the backfill run, as a process the bench pins to a core.

``python -m bench.events_api COUNT`` publishes COUNT events of the benchmark mix
(``bench/events.py``), created 2 ms apart up to now, and prints ``<url> <oldest created_at>``
once it listens; it serves until terminated.

``GET /events`` answers what ``workos-forwarder backfill`` asks, as the live API does: the
``events`` types, ``limit`` (1-100), ``after`` (an event id), ``range_start``/``range_end``
(ISO-8601, both exclusive), oldest first, ``list_metadata.after`` null on the last page; a
wrong API key is answered 401. The tests' emulator (``tests/doubles/workos_api.py``) checks
every parameter and fails on demand; this one must only never be what limits the run, so
each event is encoded once and a page is joined from those bytes.
"""

from __future__ import annotations

import socket
import sys
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from bench.events import events

API_KEY = "sk_test_bench_0123456789"
SPACING_S = 0.002


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


class Listing:
    """The published events, oldest first, and the pages of them a query asks for."""

    def __init__(self, published: list[dict[str, Any]]) -> None:
        self.ids = [event["id"] for event in published]
        self.types = [event["event"] for event in published]
        self.created = [_epoch(event["created_at"]) for event in published]
        self.encoded = [orjson.dumps(event) for event in published]
        self.position = {event_id: index for index, event_id in enumerate(self.ids)}

    def page(self, params: dict[str, str]) -> bytes:
        types = {name for name in params.get("events", "").split(",") if name}
        if not types:
            raise _BadRequest(422, "events is required")
        try:
            limit = int(params.get("limit", "10"))
            start = _epoch(params["range_start"]) if "range_start" in params else None
            end = _epoch(params["range_end"]) if "range_end" in params else None
        except ValueError as exc:
            raise _BadRequest(422, f"limit, range_start or range_end: {exc}") from None
        if not 1 <= limit <= 100:
            raise _BadRequest(422, "limit must be between 1 and 100")
        begin = 0
        if "after" in params:
            if params["after"] not in self.position:
                raise _BadRequest(400, f"after: no event {params['after']!r}")
            begin = self.position[params["after"]] + 1

        def listed(index: int) -> bool:
            created = self.created[index]
            return (
                self.types[index] in types
                and (start is None or created > start)
                and (end is None or created < end)
            )

        chosen: list[int] = []
        index = begin
        while index < len(self.ids) and len(chosen) < limit:
            if listed(index):
                chosen.append(index)
            index += 1
        more = any(listed(rest) for rest in range(index, len(self.ids)))
        metadata = {
            "before": self.ids[chosen[0]] if chosen else None,
            "after": self.ids[chosen[-1]] if chosen and more else None,
        }
        return (
            b'{"object":"list","data":['
            + b",".join(self.encoded[i] for i in chosen)
            + b'],"list_metadata":'
            + orjson.dumps(metadata)
            + b"}"
        )


def make_app(listing: Listing) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        if scope["method"] != "GET" or scope["path"] != "/events":
            status, body = 404, b'{"message":"Not Found"}'
        elif headers.get(b"authorization") != f"Bearer {API_KEY}".encode():
            status, body = 401, b'{"message":"Unauthorized","code":"unauthorized"}'
        else:
            try:
                status, body = 200, listing.page(dict(parse_qsl(scope["query_string"].decode())))
            except _BadRequest as exc:
                status, body = exc.status, orjson.dumps({"message": str(exc)})
        head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": head})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    published = list(events(int(sys.argv[1]), seed=5, spacing_s=SPACING_S))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    # Listening already: a request sent from now on waits in the backlog until uvicorn runs.
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", published[0]["created_at"], flush=True)
    config = uvicorn.Config(
        make_app(Listing(published)), lifespan="off", log_level="warning", loop="uvloop", http="httptools"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
