"""A loopback TCP proxy in front of a real HTTP double that misbehaves on demand.

Modes (``proxy.mode = ...``, applied to every connection accepted afterwards; call
``reset()`` to drop the connections already held):

* ``pass``: bytes flow both ways, unchanged, to ``upstream`` (a real intake or receiver);
* ``hang``: accepts the connection, reads the request and never answers;
* ``trickle``: answers ``HTTP/1.1 202`` one byte every ``trickle_delay_s`` and never
  finishes (an endless header after ``Content-Length: 64``), so each read succeeds and only
  a deadline on the whole request can end it; nothing reaches the upstream; a client cut
  off it sees an incomplete response, never a success;
* ``cut``: reads the request, sends a ``202`` status line and headers announcing a body,
  part of that body, and closes the connection; nothing reaches the upstream;
* ``cut_headers``: the same, closing in the middle of the headers (before the blank line).
  Python's ``http.client`` (under ``requests``) takes end of file there for the end of the
  headers and returns the ``202``; ``h11`` (under ``httpx``) raises.

Plain threads and blocking sockets, so it misbehaves at the TCP level and is not
constrained by any HTTP framework. Every thread ends when ``stop()`` closes its sockets.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

Mode = Literal["pass", "hang", "trickle", "cut", "cut_headers"]

TRICKLE_HEAD = b"HTTP/1.1 202 Accepted\r\nContent-Length: 64\r\nContent-Type: application/json\r\nX-Trickle: "
CUT_RESPONSE = b'HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"sta'
CUT_HEADERS_RESPONSE = b"HTTP/1.1 202 Accepted\r\nContent-Type: applica"


class MisbehavingProxy:
    def __init__(self, upstream_port: int, *, mode: Mode = "pass", trickle_delay_s: float = 0.1) -> None:
        self.upstream_port = upstream_port
        self.mode: Mode = mode
        self.trickle_delay_s = trickle_delay_s
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.accepted: dict[str, int] = {"pass": 0, "hang": 0, "trickle": 0, "cut": 0, "cut_headers": 0}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control ----------------------------------------------------------------------------
    def start(self) -> Self:
        self._listener.listen(64)
        self._thread = threading.Thread(target=self._accept_loop, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def reset(self) -> None:
        """Close every connection held now (the client sees a reset or EOF)."""
        with self._lock:
            held = list(self._open)
            self._open.clear()
        for sock in held:
            _close(sock)

    def stop(self) -> None:
        self._stopped.set()
        _close(self._listener)
        self.reset()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    # --- the connections --------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            mode = self.mode
            with self._lock:
                self.accepted[mode] += 1
                self._open.add(client)
            handlers = {
                "pass": self._pass,
                "hang": self._hang,
                "trickle": self._trickle,
                "cut": self._cut,
                "cut_headers": self._cut_headers,
            }
            threading.Thread(target=self._guarded, args=(handlers[mode], client), daemon=True).start()

    def _guarded(self, handler: Callable[[socket.socket], None], client: socket.socket) -> None:
        try:
            handler(client)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(client)
            _close(client)

    def _alive(self, sock: socket.socket) -> bool:
        with self._lock:
            return sock in self._open and not self._stopped.is_set()

    def _hang(self, client: socket.socket) -> None:
        client.settimeout(0.2)
        while self._alive(client):
            try:
                if not client.recv(65536):
                    return
            except TimeoutError:
                continue

    def _read_some(self, client: socket.socket) -> bool:
        """Wait for the request to start arriving, then take what is there; False on EOF."""
        client.settimeout(0.2)
        while self._alive(client):
            try:
                if not client.recv(65536):
                    return False
                break
            except TimeoutError:
                continue
        time.sleep(0.05)
        client.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while client.recv(65536):
                pass
        client.setblocking(True)
        return self._alive(client)

    def _trickle(self, client: socket.socket) -> None:
        if not self._read_some(client):
            return
        index = 0
        while self._alive(client):
            byte = TRICKLE_HEAD[index : index + 1] if index < len(TRICKLE_HEAD) else b"a"
            client.sendall(byte)
            index += 1
            time.sleep(self.trickle_delay_s)

    def _cut(self, client: socket.socket) -> None:
        if self._read_some(client):
            client.sendall(CUT_RESPONSE)

    def _cut_headers(self, client: socket.socket) -> None:
        if self._read_some(client):
            client.sendall(CUT_HEADERS_RESPONSE)

    def _pass(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        with self._lock:
            self._open.add(upstream)
        try:
            pair = {client: upstream, upstream: client}
            while self._alive(client) and self._alive(upstream):
                readable, _, _ = select.select(list(pair), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        finally:
            with self._lock:
                self._open.discard(upstream)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
