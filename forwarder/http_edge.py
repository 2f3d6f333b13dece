"""The HTTP edge: what an unauthenticated client can hold of the service, and for how long.

The webhook endpoint faces the internet, and anyone can connect without a valid signature.
uvicorn's httptools protocol bounds none of this: the parser buffers a header value that never
ends, a connection that never sends its first request, or stops inside its headers or its
body, stays open forever (``timeout_keep_alive`` only runs between requests), nothing caps open
connections or the request bodies held in memory, and a client may pipeline requests it never
reads the answers of.

``EdgeProtocol`` is a subclass of that protocol which adds, per connection:

- a cap on the request line plus headers (``FORWARDER_MAX_HEADER_BYTES``): never more than the
  cap is fed to the parser, and beyond it the answer is ``431`` and the connection closes;
- a deadline for the request head (``FORWARDER_HEADER_TIMEOUT``), counted from the connection
  or the first byte of the next request: ``408`` if part of a head came, else a silent close;
- a deadline for the body (``FORWARDER_BODY_TIMEOUT`` from the end of the head) and a minimum
  body rate (``FORWARDER_MIN_BODY_RATE``, 500 bytes/s after a grace of ``BODY_RATE_GRACE_S``,
  as Apache's ``mod_reqtimeout`` ``MinRate``): ``408`` either way; a declared
  ``Content-Length`` over ``FORWARDER_MAX_BODY_BYTES`` is ``413`` before any body is read, and
  the bytes after a head are capped (chunked trailers are buffered by the parser like headers);
- a bound on the body bytes of all requests still arriving (``FORWARDER_MAX_BUFFERED_BYTES``):
  at the bound the connections that have gone longest without sending a byte are cut, and if
  none has been quiet for ``QUIET_S``, the request that needs the room is answered ``503`` with
  ``Retry-After``;
- at most ``MAX_PIPELINED`` requests queued behind the one the application holds, and an
  answer the client does not read within ``FORWARDER_BODY_TIMEOUT`` ends the connection;
- idle keep-alive connections closed (``FORWARDER_KEEPALIVE_TIMEOUT``);
- a cap on open connections (``FORWARDER_MAX_CONNECTIONS``): at the cap, a new connection
  takes the place of the one that has gone longest without progress and has no whole request
  in the application (idle, a head or a body still arriving, an answer not read), so slow
  clients cannot lock out a webhook; only if every connection has a whole request in flight
  is the new one answered ``503`` and closed. A webhook whose body has arrived is never cut.

After every ``408``, ``413`` and ``431`` the answer says ``connection: close``, the service
stops reading and sends its FIN at once, and the socket is closed ``LINGER_S`` later.
Every rejection is counted in ``workos_forwarder_http_rejected_total{reason}``, and uvicorn's
own warning for a request that does not parse is logged at most once a second.

The webhook is the hot path, so no timer is armed per request: a request only records its
deadline, and one sweep per server (a tenth of the shortest timeout, at most every 0.5 s)
closes the connections that are late. Counting head bytes is an addition per read; a webhook
whose head and body arrive in one read never touches the body bookkeeping.
A request whose head and body have arrived belongs to the application and is never timed out
here: the journal and the webhook bound their own work.

It relies on ``HttpToolsProtocol`` attributes that uvicorn has kept since 0.30 (``cycle``,
``pipeline``, ``connections``, ``flow``); ``tests/test_http_edge.py`` and
``tests/test_attacks.py`` exercise each limit against the real server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from forwarder import metrics
from forwarder.logs import RateLimitedLog

if TYPE_CHECKING:
    from forwarder.config import Settings

logger = logging.getLogger("forwarder.http")

RESERVED_DESCRIPTORS = 128
"""Descriptors kept out of the connection cap: about 30 at rest (journal and its WAL, the
JSONL file, the event loop, logs), plus sink and PostgreSQL connections and headroom."""
LINGER_S = 1.0
"""After a 408, 413 or 431, how long the socket stays open, unread, before it is closed:
time for the client to read the answer before the reset that unread data causes."""
BODY_RATE_GRACE_S = 2.0
"""The minimum body rate applies from this long after the head: a body of a few kilobytes,
the usual webhook, is never measured, and one lost segment (a retransmission after 200 ms to
1 s) does not cut a sender. Apache's example grants 20 s, inside a 20-40 s window; here the
whole body has ``FORWARDER_BODY_TIMEOUT`` (10 s)."""
BODY_BACKSTOP_S = 1.0
"""The edge's body deadline is this much after the webhook's own (``FORWARDER_BODY_TIMEOUT``),
so the webhook answers and counts its 408 itself; the edge's catches every other path."""
QUIET_S = 1.0
"""At the buffered-bytes bound, a body still arriving is cut for another only once it has sent
nothing for this long: two senders both pushing at full speed do not cut each other."""
MAX_PIPELINED = 2
"""Requests one connection may queue behind the one the application holds; past that it is
closed. WorkOS, Prometheus and Kubernetes probes never pipeline. Each queued request is work
the event loop does in a burst: 1,000 connections pipelining 8 ``GET /metrics`` each delayed
``/healthz`` by 2 s, and by under 0.5 s at 2."""
RETRY_AFTER_S = 1
REJECTION_REASONS = (
    "header_too_large",
    "header_timeout",
    "body_timeout",
    "body_too_slow",
    "body_too_large",
    "invalid_request",
    "evicted",
    "over_capacity",
    "read_timeout",
)
"""Every label value of ``workos_forwarder_http_rejected_total``: a fixed set."""

_HEAD, _BODY, _DONE, _CLOSING = 0, 1, 2, 3
"""Phases of a connection: receiving a head (or waiting for the first request); receiving the
body; request received (the application holds it, or the connection is idle); answered with
an error, or closed, and lingering before the socket goes."""
_NEVER = math.inf


@dataclass(frozen=True)
class EdgeLimits:
    """The bounds of one server. The defaults are the service's, so ``bench/floor.py`` runs the
    same protocol with the same costs."""

    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_body_bytes: int = 256 * 1024
    min_body_rate: int = 500
    max_buffered_bytes: int = 32 * 1024 * 1024
    keepalive_timeout_s: float = 5.0
    max_connections: int = 1000
    backlog: int = 2048

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_body_bytes=settings.max_body_bytes,
            min_body_rate=settings.min_body_rate,
            max_buffered_bytes=settings.max_buffered_bytes,
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_connections=settings.max_connections,
        )

    @property
    def max_after_head_bytes(self) -> int:
        """Body, chunk framing and trailers. Twice the body cap leaves room for chunk sizes;
        the webhook answers 413 past the body cap itself, long before this closes anything."""
        return 2 * self.max_body_bytes + self.max_header_bytes


DEFAULT_LIMITS = EdgeLimits()


def uvicorn_options(limits: EdgeLimits) -> dict[str, Any]:
    """The ``uvicorn.Config`` options that enforce ``limits``.

    No WebSocket endpoint exists, and an upgraded connection would leave these bounds:
    ``ws="none"``. uvicorn's own keep-alive timer stays (whole seconds); the sweep closes idle
    connections it misses, such as one answered before its body ended.
    """
    return {
        "http": edge_protocol(limits),
        "ws": "none",
        "timeout_keep_alive": math.ceil(limits.keepalive_timeout_s),
        "backlog": limits.backlog,
    }


def raise_descriptor_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now in force.

    Many distributions start services with a soft limit of 1,024 under a hard limit hundreds
    of times larger: the connection cap should be the operator's choice, not that accident.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        # Linux refuses an unlimited soft limit; fs.nr_open is the real ceiling.
        try:
            with open("/proc/sys/fs/nr_open") as handle:
                target = int(handle.read())
        except (OSError, ValueError):
            return soft
    if soft != resource.RLIM_INFINITY and soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        logger.warning(
            "cannot raise the descriptor limit", extra={"soft": soft, "hard": hard, "error": str(exc)}
        )
        return soft
    logger.info("descriptor limit raised to the hard limit", extra={"soft_before": soft, "soft": target})
    return target


def fit_to_descriptors(limits: EdgeLimits, soft_limit: int) -> EdgeLimits:
    """Lower the connection cap and the listen backlog so that both fit in ``soft_limit``.

    The cap counts connections the protocol has seen; a burst can also hold up to ``backlog``
    descriptors accepted but not yet handed to it. Both together stay below the limit minus
    ``RESERVED_DESCRIPTORS``, so the journal and the sinks can always open a file or a socket.
    """
    if soft_limit == resource.RLIM_INFINITY:
        return limits
    spare = soft_limit - RESERVED_DESCRIPTORS
    backlog = min(limits.backlog, max(spare // 4, 16))
    cap = max(min(limits.max_connections, spare - backlog), 1)
    if cap < limits.max_connections:
        logger.warning(
            "FORWARDER_MAX_CONNECTIONS lowered to fit the descriptor limit; raise the hard limit "
            "(ulimit -Hn, systemd LimitNOFILE, docker --ulimit nofile) to allow more",
            extra={"max_connections": cap, "configured": limits.max_connections, "soft_limit": soft_limit},
        )
    return replace(limits, max_connections=cap, backlog=backlog)


def _answer(status: int, phrase: bytes, error: str, detail: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"error": error, "detail": detail})
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        phrase,
        len(body),
    )
    return head + extra + b"connection: close\r\n\r\n" + body


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: %d\r\nconnection: close\r\n\r\n"
    % RETRY_AFTER_S
)


class RateLimitedWarnings(logging.Filter):
    """At most one warning per second per message on a logger a client can make write.

    uvicorn logs "Invalid HTTP request received." once per request that does not parse: ten
    thousand malformed requests wrote ten thousand lines. The line that does pass says how many
    were suppressed before it.
    """

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__()
        self._interval = interval_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        key = str(record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.suppressed = suppressed
        return True


_UVICORN_WARNINGS = RateLimitedWarnings()


def _limit_uvicorn_warnings() -> None:
    uvicorn_logger = logging.getLogger("uvicorn.error")
    if _UVICORN_WARNINGS not in uvicorn_logger.filters:
        uvicorn_logger.addFilter(_UVICORN_WARNINGS)


class _Server:
    """What the connections of one server share: the limits, the sweep, the eviction order,
    the body bytes held and the rejection counters."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        # Copied out of ``limits`` for the hot path: one attribute read each, no property.
        self.max_header_bytes = limits.max_header_bytes
        self.max_after_head_bytes = limits.max_after_head_bytes
        self.header_timeout_s = limits.header_timeout_s
        self.keepalive_timeout_s = limits.keepalive_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.max_body_bytes = limits.max_body_bytes
        self.min_body_rate = limits.min_body_rate
        self.max_buffered_bytes = limits.max_buffered_bytes
        self.tick_s = min(max(min(limits.header_timeout_s, limits.keepalive_timeout_s) / 10, 0.05), 0.5)
        self.connections: set[EdgeProtocol] = set()
        self.victims: deque[EdgeProtocol] = deque()
        self.bodies: set[EdgeProtocol] = set()
        """Connections whose body is still arriving."""
        self.buffered = 0
        """Body bytes received by the connections of ``bodies``."""
        self._no_quiet_body_until = 0.0
        self.warn = RateLimitedLog(logger, interval_s=10.0)
        self.rejected = {reason: metrics.HTTP_REJECTED.labels(reason) for reason in REJECTION_REASONS}
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.over_header_cap = _answer(
            431,
            b"Request Header Fields Too Large",
            "headers_too_large",
            f"request line and headers over {limits.max_header_bytes} bytes",
        )
        self.over_body_cap = _answer(
            413, b"Content Too Large", "too_large", f"body over {limits.max_body_bytes} bytes"
        )
        self.head_late = _answer(
            408,
            b"Request Timeout",
            "timeout",
            f"request head not received within {limits.header_timeout_s:g} s",
        )
        self.body_late = _answer(
            408,
            b"Request Timeout",
            "timeout",
            f"body not received within {limits.body_timeout_s:g} s",
        )
        self.body_slow = _answer(
            408,
            b"Request Timeout",
            "too_slow",
            f"body slower than {limits.min_body_rate} bytes/s",
        )
        self.buffers_full = _answer(
            503,
            b"Service Unavailable",
            "busy",
            "too many request bodies arriving at once; retry",
            b"retry-after: %d\r\n" % RETRY_AFTER_S,
        )

    def watch(self, protocol: EdgeProtocol) -> None:
        """Run the sweep while the server has connections."""
        if self._sweep_handle is None:
            self.connections = protocol.connections  # type: ignore[assignment]
            self._sweep_handle = protocol.loop.call_later(self.tick_s, self._sweep, protocol.loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        try:
            for connection in tuple(self.connections):
                connection.check(now)
        except Exception:  # a bug here must not end every deadline of the server
            logger.exception("HTTP deadline sweep failed; it runs again at the next tick")
        self._sweep_handle = loop.call_later(self.tick_s, self._sweep, loop) if self.connections else None

    def make_room(self) -> bool:
        """Close the connection waiting longest with no whole request in the application.

        Eviction order is computed once for up to ``max_connections`` evictions, so a flood of
        new connections costs a sort per cap's worth of connections, not a scan per connection.
        """
        for attempt in range(2):
            while self.victims:
                victim = self.victims.popleft()
                if victim in self.connections and victim.evictable():
                    self.connections.discard(victim)
                    victim.cut("evicted")
                    self.warn.warning(
                        "evicted",
                        "connection cap reached: closed the connection that made no progress the longest",
                        max_connections=self.limits.max_connections,
                    )
                    return True
            if attempt == 0:
                ranked = sorted(
                    (connection for connection in self.connections if connection.evictable()),
                    key=lambda connection: connection.waiting_since(),
                )
                self.victims = deque(ranked)
        self.rejected["over_capacity"].inc()
        self.warn.warning(
            "refused",
            "connection cap reached with a whole request in flight on every connection: answered 503",
            max_connections=self.limits.max_connections,
        )
        return False

    def relieve(self, needing: EdgeProtocol, now: float) -> None:
        """At the buffered-bytes bound: cut the bodies that have been quiet the longest (at
        least ``QUIET_S``) until the bound is met again, with a quarter of it to spare so that
        the next reads do not come back here at once."""
        if now < self._no_quiet_body_until:
            return
        target = self.max_buffered_bytes * 3 // 4
        quiet = sorted(
            (body for body in self.bodies if body is not needing and now - body.last_read >= QUIET_S),
            key=lambda body: body.last_read,
        )
        for body in quiet:
            if self.buffered <= target:
                break
            body.cut("evicted")
        if self.buffered > self.max_buffered_bytes:
            quietest = min((body.last_read for body in self.bodies if body is not needing), default=now)
            self._no_quiet_body_until = quietest + QUIET_S
        if quiet:
            self.warn.warning(
                "buffered",
                "request bodies at FORWARDER_MAX_BUFFERED_BYTES: cut the ones quiet the longest",
                max_buffered_bytes=self.max_buffered_bytes,
            )


# The base method, called directly: ``super()`` allocates a proxy object on every call.
_base_data_received = HttpToolsProtocol.data_received


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of ``EdgeLimits``; see the module docstring.

    Everything happens in ``data_received``, which sees each read before the parser and the
    request cycles after it: overriding ``on_headers_complete`` and ``on_message_complete`` as
    well cost about 1,300 CPU instructions per request each (a Python call from C).
    Use ``edge_protocol(limits)``: each server gets a subclass bound to its own shared state.
    """

    _server: ClassVar[_Server]

    # Slots, not instance attributes: uvicorn's protocol already sets 28, and CPython 3.11 shares
    # the keys of at most 30 among instances. Past that every ``self.x`` of the protocol, uvicorn's
    # own included, loses its specialized lookup (about 2,500 more instructions per request).
    # ``_limits`` repeats the class's ``_server`` because CPython 3.11 does not specialize a
    # class attribute read through an instance: about 500 instructions a read.
    __slots__ = ("_body_bytes", "_deadline", "_head_bytes", "_limits", "body_started", "last_read", "phase")
    _limits: _Server
    phase: int
    _deadline: float
    """When the current phase must have ended: the head, header timeout after the connection or
    the request's first read; the body, body timeout after its head; idle, keep-alive timeout;
    lingering, the close."""
    _head_bytes: int
    _body_bytes: int
    """Bytes after the head of a body still arriving, counted in the server's ``buffered``."""
    body_started: float
    last_read: float
    """When the body began to arrive, and its latest read: the rate and the eviction order."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        server = self._server
        if len(self.connections) >= server.limits.max_connections and not server.make_room():
            self.transport = transport
            self.phase = _CLOSING
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._limits = server
        self.phase = _HEAD
        self._head_bytes = 0
        self._body_bytes = 0
        self._deadline = self.loop.time() + server.header_timeout_s
        server.watch(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase == _BODY:
            self._end_body()
        self.phase = _CLOSING
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        cycle = self.cycle
        if phase == _BODY:
            self._body_read(data)
            return
        if phase == _CLOSING:
            return  # what was already read of a refused request: dropped, never parsed
        # A head: under way, or beginning with this read (after _DONE).
        size = len(data) if phase == _DONE else self._head_bytes + len(data)
        if size > self._limits.max_header_bytes:
            self._feed_up_to_cap(data)
            return
        self._head_bytes = size
        _base_data_received(self, data)
        # The common webhook, head and body in one read, leaves here after one store: no clock.
        latest = self.cycle
        if latest is not cycle:  # a head ended in this read
            self._head_ended(latest)
        elif phase == _DONE:  # a head began in this read and has not ended
            self.phase = _HEAD
            self._deadline = self.loop.time() + self._limits.header_timeout_s

    def _head_ended(self, latest: Any) -> None:
        """The head of ``latest`` has been parsed: too deep a pipeline closes the connection; a
        request whose body came with its head is the application's; else its body is counted."""
        if self.pipeline and len(self.pipeline) > MAX_PIPELINED:
            self._too_many_pipelined()
        elif not latest.more_body:
            self.phase = _DONE
            self._deadline = _NEVER
        else:
            self._begin_body(latest)

    def _begin_body(self, cycle: Any) -> None:
        """A head ended and its body has not: refuse a declared length over the cap at once,
        else start counting the body's bytes, time and rate."""
        server = self._limits
        for name, value in cycle.scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > server.max_body_bytes:
                    self._disconnect_application()
                    self._reject(server.over_body_cap, "body_too_large")
                    return
                break
        now = self.loop.time()
        self.phase = _BODY
        self._deadline = now + server.body_timeout_s + BODY_BACKSTOP_S
        self.body_started = self.last_read = now
        received = len(cycle.body)  # what came with the head, not yet handed to the application
        self._body_bytes = received
        server.buffered += received
        server.bodies.add(self)
        if server.buffered > server.max_buffered_bytes:
            self._make_buffer_room(now)

    def _body_read(self, data: bytes) -> None:
        """A read while a body arrives (never the one-read webhook): cap it, count it against
        the bytes all bodies may hold, then parse it."""
        cycle = self.cycle
        if cycle.response_complete:
            # Answered before its body ended (405, an answer that did not read the body): the
            # rest is not read, and the connection closes once the client had time to read it.
            self._reject(None, None)
            return
        server = self._limits
        size = self._body_bytes + len(data)
        if size > server.max_after_head_bytes:
            self._over_body_cap()
            return
        self._body_bytes = size
        server.buffered += len(data)
        now = self.last_read = self.loop.time()
        if server.buffered > server.max_buffered_bytes:
            self._make_buffer_room(now)
            if self.phase != _BODY:
                return
        _base_data_received(self, data)
        latest = self.cycle
        if latest is not cycle or not latest.more_body:
            self._end_body()
            if latest is cycle:
                self.phase = _DONE
                self._deadline = _NEVER
            else:  # the body ended, and the next request's head with it
                self._head_ended(latest)

    def _make_buffer_room(self, now: float) -> None:
        server = self._limits
        server.relieve(self, now)
        if server.buffered > server.max_buffered_bytes:
            if not self.cycle.response_started and not self.pipeline:
                self._disconnect_application()
                self._reject(server.buffers_full, "over_capacity")
            else:
                self.cut("over_capacity")

    def _end_body(self) -> None:
        server = self._limits
        server.buffered -= self._body_bytes
        self._body_bytes = 0
        server.bodies.discard(self)

    def _feed_up_to_cap(self, data: bytes) -> None:
        """Feed the parser only as far as the cap: if the head has not ended there, it is too
        large, and the parser never holds more than the cap of it."""
        view = memoryview(data)
        room = self._limits.max_header_bytes - (0 if self.phase == _DONE else self._head_bytes)
        self.data_received(view[:room])  # type: ignore[arg-type]
        if self.transport.is_closing() or self.phase == _CLOSING:
            return
        if self.phase == _HEAD:
            self._reject(self._limits.over_header_cap, "header_too_large")
        else:
            self.data_received(view[room:])  # type: ignore[arg-type]

    def _too_many_pipelined(self) -> None:
        """More requests queued than ``MAX_PIPELINED``: they are dropped, the one in the
        application finishes, and the connection closes."""
        self.pipeline.clear()
        self._limits.warn.warning(
            "pipelined",
            "a connection pipelined more requests than the service queues: closed",
            max_pipelined=MAX_PIPELINED,
        )
        self.cut("over_capacity")

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's two lines per upgrade request would suggest installing a WebSocket
        library; here there is simply no WebSocket endpoint, and a client may not flood logs."""
        self._limits.warn.warning("upgrade", "upgrade request ignored: the service has no WebSocket endpoint")

    def send_400_response(self, msg: str) -> None:
        """A request that does not parse: counted, answered by uvicorn (its warning is
        rate-limited by ``RateLimitedWarnings``)."""
        self._limits.rejected["invalid_request"].inc()
        self.phase = _CLOSING
        self._deadline = self.loop.time() + LINGER_S
        super().send_400_response(msg)

    def _app_idle(self) -> bool:
        """No request of this connection is in the application (answered, or none yet)."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.pipeline

    def waiting_since(self) -> float:
        """When the connection last made progress, for the eviction order: derived from the
        deadline where it can be, so that the hot path records one time, not two. Lingering
        ones go first; a connection whose idleness the sweep has not yet seen, last."""
        phase, limits = self.phase, self._limits
        if phase == _CLOSING:
            return -_NEVER
        if phase == _HEAD:
            return self._deadline - limits.header_timeout_s
        if phase == _BODY:
            return self.last_read
        if not self._app_idle():  # an answer the client does not read
            return self._deadline - limits.body_timeout_s
        return self._deadline - limits.keepalive_timeout_s

    def evictable(self) -> bool:
        """Anything but a whole request in the application, unless its answer has stalled
        because the client does not read it."""
        phase = self.phase
        if phase != _DONE or self._app_idle():
            return True
        return self.flow.write_paused and self.cycle.response_started

    def check(self, now: float) -> None:
        """Called by the sweep: close or answer a connection past its deadline."""
        phase = self.phase
        if phase == _CLOSING or self.transport.is_closing():
            self._finish_closing(now)
        elif phase == _DONE:
            self._check_done(now)
        elif phase == _BODY:
            self._check_body(now)
        elif now >= self._deadline:
            if self._head_bytes and self._app_idle():
                self._reject(self._limits.head_late, "header_timeout")
            else:  # nothing received: nothing to answer
                self._limits.rejected["header_timeout"].inc()
                self._close()

    def _check_done(self, now: float) -> None:
        if not self._app_idle():
            if not self.flow.write_paused:
                self._deadline = _NEVER  # the application's, bounded by its own deadlines
            elif self._deadline == _NEVER:  # an answer the client is not reading
                self._deadline = now + self._limits.body_timeout_s
            elif now >= self._deadline:
                self.cut("read_timeout")
        elif self._deadline == _NEVER:
            self._deadline = now + self._limits.keepalive_timeout_s
        elif now >= self._deadline:
            self._close()

    def _check_body(self, now: float) -> None:
        server = self._limits
        if self.cycle.response_complete:  # answered before the body ended, and nothing since
            self._reject(None, None)
        elif now >= self._deadline:
            self._late(server.body_late, "body_timeout")
        elif server.min_body_rate and now - self.body_started > BODY_RATE_GRACE_S:
            owed = (now - self.body_started - BODY_RATE_GRACE_S) * server.min_body_rate
            if self._body_bytes < owed:
                self._late(server.body_slow, "body_too_slow")

    def _late(self, answer: bytes, reason: str) -> None:
        if not self.cycle.response_started and not self.pipeline:
            self._disconnect_application()
            self._reject(answer, reason)
        else:
            self.cut(reason)

    def _over_body_cap(self) -> None:
        self._late(self._limits.over_body_cap, "body_too_large")

    def _disconnect_application(self) -> None:
        """The application's ``receive`` returns ``http.disconnect`` and its ``send`` writes
        nothing: the answer on the wire is ours."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.message_event.set()

    def cut(self, reason: str) -> None:
        """End the connection now, counted under ``reason``; the application's request, if
        any, sees a disconnect. Unsent answers are dropped (an unread answer is why some go)."""
        self._limits.rejected[reason].inc()
        if self.cycle is not None and not self.cycle.response_complete:
            self._disconnect_application()
        if self.phase == _BODY:
            self._end_body()
        self.phase = _CLOSING
        self._deadline = self.loop.time() + LINGER_S
        transport = self.transport
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def _close(self) -> None:
        """Close, letting what is written go first; ``_finish_closing`` aborts if it cannot."""
        self.phase = _CLOSING
        self._deadline = self.loop.time() + LINGER_S
        self.transport.close()

    def _finish_closing(self, now: float) -> None:
        """A lingering or closing connection: close it at its deadline, and abort one whose
        unread answer keeps it open (a closed transport waits for its buffer to drain)."""
        if self.phase != _CLOSING:  # closed by uvicorn (``connection: close``, keep-alive)
            self.phase = _CLOSING
            self._deadline = now + LINGER_S
        elif now >= self._deadline:
            transport = self.transport
            if transport.is_closing():
                transport.abort()
            else:
                self._close()

    def _reject(self, answer: bytes | None, reason: str | None) -> None:
        """Answer (unless answered already), close our side, stop reading, and close the socket
        ``LINGER_S`` later.

        Closing at once, with unread data, would send a reset that can destroy the answer
        before the client reads it. Reading on to drain would let a client keep the loop busy
        discarding gigabytes; with reads paused, what it can still send is the socket buffers.
        """
        if reason is not None:
            self._limits.rejected[reason].inc()
        if self.phase == _BODY:
            self._end_body()
        self.phase = _CLOSING
        self._deadline = self.loop.time() + LINGER_S
        transport = self.transport
        if answer is not None:
            transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            transport.close()
        self.flow.pause_reading()


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """A protocol class for one server (``uvicorn.Config(http=...)``), sharing one sweep."""
    _limit_uvicorn_warnings()

    class BoundEdgeProtocol(EdgeProtocol):
        _server = _Server(limits)

    return BoundEdgeProtocol
