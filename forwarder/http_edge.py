"""The HTTP edge: what an unauthenticated client can hold of the service, and for how long.

The webhook endpoint faces the internet, and anyone can connect without a valid signature.
uvicorn's httptools protocol bounds none of this: the parser buffers a header value that never
ends (four such connections grew RSS by 250 MB in 20 s), a connection that never sends its first
request, or stops inside its headers, stays open forever (``timeout_keep_alive`` only runs
between requests), and nothing caps open connections, so a thousand idle sockets exhaust the
descriptors and every webhook is refused.

``EdgeProtocol`` is a subclass of that protocol which adds, per connection:

- a cap on the request line plus headers (``FORWARDER_MAX_HEADER_BYTES``): never more than the
  cap is fed to the parser, and beyond it the answer is ``431`` and the connection closes;
- a deadline for the request head (``FORWARDER_HEADER_TIMEOUT``), counted from the connection
  or the first byte of the next request: ``408`` if part of a head came, else a silent close;
- a deadline for the whole request, body included: header plus body timeout from its first
  byte (``FORWARDER_BODY_TIMEOUT`` is the webhook's own, tighter, deadline for the body), and a
  cap on the bytes after the head (chunked trailers are buffered by the parser like headers);
- idle keep-alive connections closed (``FORWARDER_KEEPALIVE_TIMEOUT``);
- a cap on open connections (``FORWARDER_MAX_CONNECTIONS``): at the cap, a new connection
  takes the place of the one that has waited longest with no request in the application (an
  idle keep-alive or a head still arriving), so idle sockets cannot lock out a webhook; only if
  every connection has a request in flight is the new one answered ``503`` and closed.

The webhook is the hot path, so no timer is armed per request: a request only records its
deadline, and one sweep per server (a tenth of the shortest timeout, at most every 0.5 s)
closes the connections that are late. Counting head bytes is an addition per read.
A request whose head and body have arrived belongs to the application and is never timed out
here: the journal and the webhook bound their own work.

It relies on ``HttpToolsProtocol`` attributes that uvicorn has kept since 0.30 (``cycle``,
``pipeline``, ``connections``, ``flow``); ``tests/test_http_edge.py`` exercises each limit
against the real server.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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

_HEAD, _BODY, _DONE, _CLOSING = 0, 1, 2, 3
"""Phases of a connection: receiving a head (or waiting for the first request); receiving the
body; request received (the application holds it, or the connection is idle); answered with
an error and lingering before the close."""
_NEVER = math.inf


@dataclass(frozen=True)
class EdgeLimits:
    """The bounds of one server. The defaults are the service's, so ``bench/floor.py`` runs the
    same protocol with the same costs."""

    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    max_body_bytes: int = 1024 * 1024
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
            keepalive_timeout_s=settings.keepalive_timeout_s,
            max_connections=settings.max_connections,
        )

    @property
    def request_timeout_s(self) -> float:
        """Head and body of one request, from its first byte."""
        return self.header_timeout_s + self.body_timeout_s

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


def _answer(status: int, phrase: bytes, error: str, detail: str) -> bytes:
    body = orjson.dumps({"error": error, "detail": detail})
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        status,
        phrase,
        len(body),
    )
    return head + b"connection: close\r\n\r\n" + body


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
)


class _Server:
    """What the connections of one server share: the limits, the sweep, the eviction order."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        # Copied out of ``limits`` for the hot path: one attribute read each, no property.
        self.max_header_bytes = limits.max_header_bytes
        self.max_after_head_bytes = limits.max_after_head_bytes
        self.header_timeout_s = limits.header_timeout_s
        self.request_timeout_s = limits.request_timeout_s
        self.keepalive_timeout_s = limits.keepalive_timeout_s
        self.body_timeout_s = limits.body_timeout_s
        self.tick_s = min(max(min(limits.header_timeout_s, limits.keepalive_timeout_s) / 10, 0.05), 0.5)
        self.connections: set[EdgeProtocol] = set()
        self.victims: deque[EdgeProtocol] = deque()
        self.warn = RateLimitedLog(logger, interval_s=10.0)
        self._sweep_handle: asyncio.TimerHandle | None = None
        self.over_header_cap = _answer(
            431,
            b"Request Header Fields Too Large",
            "headers_too_large",
            f"request line and headers over {limits.max_header_bytes} bytes",
        )
        self.over_body_cap = _answer(
            413, b"Content Too Large", "too_large", f"request over {limits.max_after_head_bytes} bytes"
        )
        self.head_late = _answer(
            408,
            b"Request Timeout",
            "timeout",
            f"request head not received within {limits.header_timeout_s:g} s",
        )
        self.request_late = _answer(
            408,
            b"Request Timeout",
            "timeout",
            f"request not received within {limits.request_timeout_s:g} s",
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
                if not connection.transport.is_closing():
                    connection.check(now)
        except Exception:  # a bug here must not end every deadline of the server
            logger.exception("HTTP deadline sweep failed; it runs again at the next tick")
        self._sweep_handle = loop.call_later(self.tick_s, self._sweep, loop) if self.connections else None

    def make_room(self) -> bool:
        """Close the connection waiting longest with no request in the application.

        Eviction order is computed once for up to ``max_connections`` evictions, so a flood of
        new connections costs a sort per cap's worth of connections, not a scan per connection.
        """
        for attempt in range(2):
            while self.victims:
                victim = self.victims.popleft()
                if victim in self.connections and victim.evictable():
                    self.connections.discard(victim)
                    victim.transport.close()
                    self.warn.warning(
                        "evicted",
                        "connection cap reached: closed the connection idle the longest",
                        max_connections=self.limits.max_connections,
                    )
                    return True
            if attempt == 0:
                ranked = sorted(
                    (connection for connection in self.connections if connection.evictable()),
                    key=lambda connection: connection.waiting_since(),
                )
                self.victims = deque(ranked)
        self.warn.warning(
            "refused",
            "connection cap reached with a request in flight on every connection: answered 503",
            max_connections=self.limits.max_connections,
        )
        return False


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
    __slots__ = ("_body_bytes", "_deadline", "_head_bytes", "_limits", "phase")
    _limits: _Server
    phase: int
    _deadline: float
    """When the current phase must have ended: the head, header timeout after the connection or
    the request's first read; the body, body timeout after that; idle, keep-alive timeout."""
    _head_bytes: int
    _body_bytes: int

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

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        cycle = self.cycle
        if phase == _BODY:
            if cycle.response_complete:
                # Answered before its body ended (413 on Content-Length, 408, 405): the rest is
                # not read, and the connection closes once the client had time to read the answer.
                self._reject(None)
                return
            size = self._body_bytes + len(data)
            if size > self._limits.max_after_head_bytes:
                self._over_body_cap()
                return
            self._body_bytes = size
        elif phase == _CLOSING:
            return  # what was already read of a refused request: dropped, never parsed
        else:  # a head: under way, or beginning with this read (after _DONE)
            size = len(data) if phase == _DONE else self._head_bytes + len(data)
            if size > self._limits.max_header_bytes:
                self._feed_up_to_cap(data)
                return
            self._head_bytes = size
        _base_data_received(self, data)
        # The common webhook, head and body in one read, leaves here after one store: no clock.
        latest = self.cycle
        if latest is not cycle:  # a head ended in this read
            if not latest.more_body:
                self.phase = _DONE
                self._deadline = _NEVER
                return
            if phase == _HEAD:
                self._deadline += self._limits.body_timeout_s
            else:  # the request began in this read
                self._deadline = self.loop.time() + self._limits.request_timeout_s
            self.phase = _BODY
            self._body_bytes = 0
        elif phase == _DONE:  # a head began in this read and has not ended
            self.phase = _HEAD
            self._deadline = self.loop.time() + self._limits.header_timeout_s
        elif phase == _BODY and not latest.more_body:
            self.phase = _DONE
            self._deadline = _NEVER

    def _feed_up_to_cap(self, data: bytes) -> None:
        """Feed the parser only as far as the cap: if the head has not ended there, it is too
        large, and the parser never holds more than the cap of it."""
        view = memoryview(data)
        room = self._limits.max_header_bytes - (0 if self.phase == _DONE else self._head_bytes)
        self.data_received(view[:room])  # type: ignore[arg-type]
        if self.transport.is_closing():
            return
        if self.phase == _HEAD:
            self._reject(self._limits.over_header_cap)
        else:
            self.data_received(view[room:])  # type: ignore[arg-type]

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's two lines per upgrade request would suggest installing a WebSocket
        library; here there is simply no WebSocket endpoint, and a client may not flood logs."""
        self._limits.warn.warning("upgrade", "upgrade request ignored: the service has no WebSocket endpoint")

    def _app_idle(self) -> bool:
        """No request of this connection is in the application (answered, or none yet)."""
        cycle = self.cycle
        return (cycle is None or cycle.response_complete) and not self.pipeline

    def waiting_since(self) -> float:
        """When the connection began to wait in its phase, for the eviction order: derived from
        the deadline, so that the hot path records one time, not two. Lingering ones go first;
        a connection whose idleness the sweep has not yet seen, last."""
        phase, limits = self.phase, self._limits
        if phase == _CLOSING:
            return -_NEVER
        if phase == _HEAD:
            return self._deadline - limits.header_timeout_s
        if phase == _BODY:
            return self._deadline - limits.request_timeout_s
        return self._deadline - limits.keepalive_timeout_s

    def evictable(self) -> bool:
        return self.phase == _CLOSING or self._app_idle()

    def check(self, now: float) -> None:
        """Called by the sweep: close or answer a connection past its deadline."""
        phase = self.phase
        if phase == _DONE:
            if not self._app_idle():
                self._deadline = _NEVER  # the application's, bounded by its own deadlines
            elif self._deadline == _NEVER:
                self._deadline = now + self._limits.keepalive_timeout_s
            elif now >= self._deadline:
                self.transport.close()
            return
        if now < self._deadline:
            return
        if phase == _HEAD and self._head_bytes and self._app_idle():
            self._reject(self._limits.head_late)
        elif phase == _BODY and not self.cycle.response_started and not self.pipeline:
            self._disconnect_application()
            self._reject(self._limits.request_late)
        else:  # nothing received, already answered, or lingering: nothing more to say
            self.transport.close()

    def _over_body_cap(self) -> None:
        if not self.cycle.response_started and not self.pipeline:
            self._disconnect_application()
            self._reject(self._limits.over_body_cap)
        else:
            self.transport.close()

    def _disconnect_application(self) -> None:
        """The application's ``receive`` returns ``http.disconnect`` and its ``send`` writes
        nothing: the answer on the wire is ours."""
        cycle = self.cycle
        cycle.disconnected = True
        cycle.message_event.set()

    def _reject(self, answer: bytes | None) -> None:
        """Answer (unless answered already), close our side, stop reading, and close the socket
        ``LINGER_S`` later.

        Closing at once, with unread data, would send a reset that can destroy the answer
        before the client reads it. Reading on to drain would let a client keep the loop busy
        discarding gigabytes; with reads paused, what it can still send is the socket buffers.
        """
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

    class BoundEdgeProtocol(EdgeProtocol):
        _server = _Server(limits)

    return BoundEdgeProtocol
