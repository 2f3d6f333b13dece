"""Running the HTTP server: uvicorn on the bounded edge, the GC tuned for it, and the drain.

Apart from ``service`` so that the floor of the benchmark (``bench/floor.py``) runs on exactly
the same server options without building a forwarder.
"""

from __future__ import annotations

import gc
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any, Literal

import uvicorn

from forwarder import http_edge
from forwarder.config import ConfigError, Settings
from forwarder.service import AdminSplit, Forwarder, build_app

logger = logging.getLogger("forwarder.service")


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    lifespan: Literal["auto", "on", "off"],
    shutdown_timeout_s: float,
    limits: http_edge.EdgeLimits = http_edge.DEFAULT_LIMITS,
) -> uvicorn.Config:
    """The HTTP server options, shared with ``bench/floor.py`` so the floor runs on the same stack.

    The protocol, keep-alive and backlog come from ``forwarder.http_edge``: uvicorn's httptools
    protocol with bounds on request heads, deadlines and open connections.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        lifespan=lifespan,
        log_config=None,
        access_log=False,
        server_header=False,
        **http_edge.uvicorn_options(limits),
        timeout_graceful_shutdown=int(shutdown_timeout_s) or 1,
    )


def serve(settings: Settings, env: Mapping[str, str]) -> None:
    # Before anything opens a descriptor: the connection cap is fitted to the limit in force.
    soft_limit = http_edge.raise_descriptor_limit()
    sockets = None
    if settings.admin_port is not None:  # bound before the journal opens: a busy port exits at once
        sockets = [
            listen(settings.host, settings.port, "FORWARDER_PORT"),
            listen(settings.admin_host, settings.admin_port, "FORWARDER_ADMIN_PORT"),
        ]
    app = build_app(settings, env)
    config = server_config(
        app,
        settings.host,
        settings.port,
        lifespan="on",
        shutdown_timeout_s=settings.shutdown_timeout_s,
        limits=http_edge.fit_to_descriptors(http_edge.EdgeLimits.from_settings(settings), soft_limit),
    )
    if sockets is not None and isinstance(app, AdminSplit):
        app.admin_port = sockets[1].getsockname()[1]
        logger.info(
            "listening",
            extra={
                "public": f"{settings.host}:{sockets[0].getsockname()[1]}",
                "admin": f"{settings.admin_host}:{app.admin_port}",
            },
        )
    # Every request allocates a few hundred container objects that reference counting frees;
    # at the default threshold (700) the cyclic GC still ran young collections thousands of
    # times a second and full ones every few seconds (8% of the core in the benchmark).
    # Collect young objects every 10,000 net allocations instead, and freeze what exists now
    # (modules, the app, the sinks) so that a full collection never walks it again. Higher
    # thresholds (50,000) let the garbage of failed sink sends (exception cycles holding a
    # decoded batch) pile up: RSS grew 0.3 MB/s while a sink was down.
    gc.set_threshold(10_000, 10, 10)
    gc.freeze()
    DrainingServer(config, app.app.state.forwarder).run(sockets=sockets)


def listen(host: str, port: int, variable: str) -> socket.socket:
    """A bound TCP socket for uvicorn (which listens on it), or a ConfigError naming ``variable``.

    uvicorn binds ``host:port`` itself when it serves one listener; with the admin listener it
    is handed both sockets, so binding, and its error, are ours.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ConfigError(
            variable, f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose a free port"
        ) from None
    sock.set_inheritable(True)
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn, with readiness failing from the first SIGTERM and an optional drain delay.

    With ``FORWARDER_DRAIN_DELAY`` above zero the port stays open that long after SIGTERM,
    answering webhooks while /readyz says 503, so a load balancer or Kubernetes Service takes
    the instance out of rotation before connections are refused. A second signal ends the
    wait. Nothing is logged from the signal handler itself (logging is not reentrant there).
    """

    def __init__(self, config: uvicorn.Config, forwarder: Forwarder) -> None:
        super().__init__(config)
        self._forwarder = forwarder
        self._delayed: tuple[int, float] | None = None  # (signal, when to act on it)
        self._announced = False

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._forwarder.draining = True
        if self._delayed is None and self._forwarder.drain_delay_s > 0:
            self._delayed = (sig, time.monotonic() + self._forwarder.drain_delay_s)
            return
        self._delayed = None
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._delayed is not None:
            sig, stop_at = self._delayed
            if not self._announced:
                self._announced = True
                logger.info("draining: /readyz answers 503", extra={"delay_s": self._forwarder.drain_delay_s})
            if time.monotonic() >= stop_at:
                super().handle_exit(sig, None)  # uvicorn's own shutdown, as without a delay
        return await super().on_tick(counter)
