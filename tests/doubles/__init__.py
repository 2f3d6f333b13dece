"""Test doubles of remote services: real HTTP servers on loopback, started by the tests.

``LoopbackServer`` runs an ASGI app with uvicorn in a background thread. It keeps its port
across ``stop()``/``start()``, so a test can take a destination down (connections refused)
and bring it back at the same address, as a restarted collector or intake would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn

T = TypeVar("T")


class LoopbackServer:
    def __init__(self, app: Any) -> None:
        self._app = app
        self.tls: tuple[str, str] | None = None
        """(certificate, key) PEM files: set before ``start`` to serve HTTPS."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        certificate, key = self.tls or (None, None)
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=certificate,
            ssl_keyfile=key,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"test server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection: clients now get 'connection refused'."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


async def eventually(check: Callable[[], T], *, timeout: float = 15.0, what: str = "condition") -> T:
    """Poll ``check`` without blocking the event loop until it is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {result!r})")
        await asyncio.sleep(0.02)
