"""A whole-request deadline for a ``requests`` session, which only has per-read timeouts.

requests (and urllib3 under it) applies its ``timeout`` to each socket operation. A server
that answers one byte every 0.1 s never trips it: the OTLP exporter's thread would wait
forever, and with it the sink and one of the shared background threads. ``DeadlineSession``
shuts down the socket of a request still running when its deadline passes; the blocked read
then fails at once, as a connection error the exporter retries or reports.

It tracks which socket each thread is using by giving urllib3's pools a connection class
that records its socket when a request is sent on it (connections are pooled and reused, so
recording at connect time would not do).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_in_use: dict[int, socket.socket] = {}
"""Thread id -> the socket that thread's current request is using."""
_lock = threading.Lock()


def _record(sock: socket.socket | None) -> None:
    if sock is not None:
        with _lock:
            _in_use[threading.get_ident()] = sock


class _TrackedHTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _record(self.sock)


class _TrackedHTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        _record(self.sock)


class _TrackedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _TrackedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection


class _TrackedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _TrackedHTTPPool, "https": _TrackedHTTPSPool}


def total_seconds(timeout: Any) -> float | None:
    """requests' ``timeout`` (seconds, or a (connect, read) pair) as one deadline, None if unbounded."""
    if isinstance(timeout, int | float):
        return float(timeout)
    if isinstance(timeout, tuple) and all(isinstance(part, int | float) for part in timeout):
        return float(sum(timeout))
    return None


class DeadlineSession(requests.Session):
    """A session whose requests end by their ``timeout`` in total, not per read.

    Each ``send`` gets the caller's ``timeout`` (the OTLP exporter passes its own) as the
    deadline for the whole request, body included; ``default_deadline_s`` applies when the
    caller gives none.
    """

    def __init__(self, *, default_deadline_s: float) -> None:
        super().__init__()
        self._default_deadline_s = default_deadline_s
        adapter = _TrackedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        deadline = total_seconds(kwargs.get("timeout")) or self._default_deadline_s
        thread = threading.get_ident()
        timer = threading.Timer(deadline, _cut, (thread,))
        timer.daemon = True
        timer.start()
        try:
            response = super().send(request, **kwargs)
        finally:
            timer.cancel()
            with _lock:
                _in_use.pop(thread, None)
                cut = thread in _cut_threads
                _cut_threads.discard(thread)
        if cut:
            # http.client may take the shut-down stream for the end of the headers and hand
            # back what looks like a complete answer: it is not one.
            raise requests.ConnectionError(
                f"no complete answer within {deadline:g} s", request=request, response=response
            )
        return response


_cut_threads: set[int] = set()
"""Threads whose request was cut by its deadline."""


def _cut(thread: int) -> None:
    with _lock:
        sock = _in_use.pop(thread, None)
        if sock is not None:
            _cut_threads.add(thread)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
