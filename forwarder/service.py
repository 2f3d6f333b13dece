"""The one process: HTTP endpoints, the journal, one delivery loop per sink, background sources.

``build_app`` does everything that can fail on configuration (sinks, journal, secrets)
before the server binds its port, so a bad setting exits with a message instead of a
half-started sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from forwarder import failpoints, metrics
from forwarder.config import ConfigError, Settings, duration, switch
from forwarder.delivery import DeliveryLoop
from forwarder.detections.consumer import DetectionLoop
from forwarder.detections.settings import detection_settings
from forwarder.engines import SQLiteEngine, engine_for
from forwarder.journal import Journal, JournalUnavailable
from forwarder.masking import scrub
from forwarder.memberships_store import open_memberships
from forwarder.read_thread import PERIODIC_READS
from forwarder.signature import Verifier
from forwarder.sources import load_sources, memberships_api
from forwarder.sources.webhook import Receive, Scope, Send, WebhookEndpoint
from forwarder.supervisor import Supervised, start
from sinks.base import Sink, load_sinks

logger = logging.getLogger("forwarder.service")

_HOUSEKEEPING_INTERVAL_S = 1.0
_GAUGES_MAX_AGE_S = 1.0
"""How old the journal's gauges may be when ``/metrics`` renders them (they were read every
second until they were read for scrapes)."""
_GAUGES_WAIT_S = 1.0
"""How long a scrape waits for the journal's gauges before it renders the last values."""


def open_journal(settings: Settings) -> Journal:
    try:
        engine = engine_for(
            settings.journal_url,
            synchronous=settings.sqlite_synchronous,
            max_bytes=settings.journal_max_bytes,
        )
    except ValueError as exc:
        raise ConfigError(
            "FORWARDER_JOURNAL_URL",
            f"{exc}; use sqlite:///path/to/journal.sqlite3 or postgresql://user@host:5432/database",
        ) from exc
    except OSError as exc:
        # Creating the SQLite directory: a path under a regular file, or no permission.
        raise ConfigError(
            "FORWARDER_DATA_DIR",
            f"cannot create the journal's directory ({exc.strerror}: {exc.filename}); point"
            " FORWARDER_DATA_DIR (or FORWARDER_JOURNAL_URL) at a directory this user can write",
        ) from None
    failures: tuple[type[BaseException], ...] = (OSError, *engine.errors)
    try:
        return Journal(engine, backlog_limit=settings.backlog_limit)
    except failures as exc:
        variable = "FORWARDER_DATA_DIR" if isinstance(engine, SQLiteEngine) else "FORWARDER_JOURNAL_URL"
        error = scrub(str(exc), settings.journal_url)
        raise ConfigError(
            variable,
            f"cannot open the journal at {engine.location} ({error}); check it exists and is writable",
        ) from None


class Forwarder:
    """Owns the journal, the sinks, their delivery loops and the background sources."""

    def __init__(self, settings: Settings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.sinks: list[Sink] = load_sinks(env)
        detections = detection_settings(env)
        self.journal = open_journal(settings)
        self.memberships = open_memberships(env, self.journal)
        self.options = replace(
            settings.normalize, memberships=self.memberships.memberships if self.memberships else None
        )
        """How events are normalized here: the settings', with the membership map that attributes them."""
        self.detections = (
            DetectionLoop(detections, self.journal, settings.normalize) if detections is not None else None
        )
        self.sources = load_sources(env, self.journal, self.options)
        if self.memberships is not None and (lookups := memberships_api.create(env, self.memberships)):
            self.sources.append(lookups)
        self.ready_requires_sinks = switch(env, "FORWARDER_READY_REQUIRES_SINKS", False)
        self.prune_interval_s = duration(env, "FORWARDER_PRUNE_INTERVAL", "60s")
        self.drain_delay_s = duration(env, "FORWARDER_DRAIN_DELAY", "0s")
        self.draining = False
        """Set on the first SIGTERM (or ``stop``): /readyz fails from then on, /healthz does not."""
        try:
            self._failpoints = failpoints.parse(env.get("FORWARDER_FAILPOINTS", ""))
        except ValueError as exc:
            raise ConfigError("FORWARDER_FAILPOINTS", f"{exc}; leave it unset outside rehearsals") from exc
        self.loops: list[DeliveryLoop] = []
        self.tasks: list[Supervised] = []
        self._delivery_tasks: list[asyncio.Task[None]] = []
        self._other_tasks: list[asyncio.Task[None]] = []
        self._source_tasks: list[asyncio.Task[None]] = []
        self._reopening: set[asyncio.Task[None]] = set()
        self._gauges_reading: asyncio.Future[None] | None = None
        self._gauges_read_at = -math.inf

    async def start(self) -> None:
        """Start every background task under supervision (``forwarder.supervisor``)."""
        await self.journal.register_sinks(sink.name for sink in self.sinks)
        for sink in self.sinks:
            loop = DeliveryLoop(
                sink,
                self.journal,
                max_attempts=self.settings.max_attempts,
                max_retry_after_s=self.settings.max_retry_after_s,
            )
            self.loops.append(loop)
            self._delivery_tasks.append(self._start(f"delivery:{sink.name}", loop.run, loop.crashed))
        if self.detections is not None:
            self._delivery_tasks.append(self._start("detections", self.detections.run))
        self._other_tasks.append(self._start("housekeeping", self._housekeeping))
        self._other_tasks.append(self._start("retention", self._retention))
        if self.memberships is not None:
            self._other_tasks.append(self._start("memberships", self.memberships.run))
        for source in self.sources:
            self._source_tasks.append(self._start(f"source:{source.name}", source.run))
        # Armed once running: a rehearsal exercises recovery, not a failed start.
        failpoints.arm(self._failpoints)
        # SIGHUP ends a process by default; here it asks sinks to reopen their files (logrotate).
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests)
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._reopen_outputs)
        logger.info(
            "forwarder started",
            extra={
                "sinks": [sink.name for sink in self.sinks],
                "sources": ["webhook", *(source.name for source in self.sources)],
                "journal": self.journal.location,
            },
        )

    def _start(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        on_failure: Callable[[str], None] | None = None,
    ) -> asyncio.Task[None]:
        task = Supervised(name)
        self.tasks.append(task)
        return start(task, body, on_failure=on_failure)

    def _reopen_outputs(self) -> None:
        logger.info("SIGHUP: reopening sink outputs")
        for sink in self.sinks:
            reopen = getattr(sink, "reopen", None)
            if reopen is not None:
                task = asyncio.create_task(reopen(), name=f"reopen:{sink.name}")
                self._reopening.add(task)
                task.add_done_callback(self._reopening.discard)

    async def stop(self) -> None:
        """Stop sources, let sinks drain for a bounded time, then close everything."""
        self.draining = True
        for task in self._source_tasks:
            task.cancel()
        await asyncio.gather(*self._source_tasks, return_exceptions=True)
        for loop in self.loops:
            loop.stop()
        if self.detections is not None:
            self.detections.stop()
        delivery = self._delivery_tasks
        _, pending = (
            await asyncio.wait(delivery, timeout=self.settings.shutdown_timeout_s) if delivery else ((), ())
        )
        for task in [*delivery, *self._other_tasks]:
            task.cancel()
        await asyncio.gather(*delivery, *self._other_tasks, return_exceptions=True)
        if pending:
            logger.warning(
                "sinks still had records at shutdown; they resume from the journal on restart",
                extra={"sinks": [task.get_name().removeprefix("delivery:") for task in pending]},
            )
        for sink in self.sinks:
            try:
                await asyncio.wait_for(sink.close(), self.settings.shutdown_timeout_s)
            except Exception:
                logger.exception("sink did not close cleanly", extra={"sink": sink.name})
        await self.journal.close()
        logger.info("forwarder stopped")

    async def _housekeeping(self) -> None:
        """Every second: the writer is alive, the journal writable, no cursor above the sequence."""
        while True:
            self.journal.ensure_writer()
            try:
                if self.journal.last_error is not None:
                    await self.journal.probe()  # notice when the journal writes again
            except JournalUnavailable:
                pass
            metrics.JOURNAL_WRITABLE.set(0 if self.journal.last_error is not None else 1)
            try:
                await self.journal.check_sequence()
            except JournalUnavailable as exc:
                logger.warning("housekeeping could not read the journal", extra={"error": str(exc)})
            await asyncio.sleep(_HOUSEKEEPING_INTERVAL_S)

    async def read_gauges(self) -> None:
        """Set the gauges read from the journal (its size, each sink's lag and dead letters),
        for a scrape of ``/metrics``: nothing else reads them, and reading them every second
        whether or not anyone scraped was most of what the service did at rest.

        At most one read per ``_GAUGES_MAX_AGE_S``, shared by the scrapes that come during it;
        scrapes closer together render the values of the last read. A scrape waits for a read
        ``_GAUGES_WAIT_S`` at most: a journal that does not answer must not hold up
        ``/metrics``, which is where that shows. A failed read leaves the last values.
        """
        reading = self._gauges_reading
        if reading is None or reading.done():
            if time.monotonic() - self._gauges_read_at < _GAUGES_MAX_AGE_S:
                return
            self._gauges_read_at = time.monotonic()
            reading = self._gauges_reading = asyncio.ensure_future(self._read_gauges())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(reading), _GAUGES_WAIT_S)

    async def _read_gauges(self) -> None:
        try:
            await PERIODIC_READS.run(self._refresh_gauges)
        except JournalUnavailable as exc:
            logger.warning("could not read the journal's gauges for /metrics", extra={"error": str(exc)})
        except Exception:
            logger.exception("reading the journal's gauges failed")

    async def _retention(self) -> None:
        """Every minute: delete what every sink has delivered and is older than the retention."""
        while True:
            await asyncio.sleep(self.prune_interval_s)
            try:
                removed = await self.journal.prune(self.settings.retention_s)
            except JournalUnavailable as exc:
                logger.warning("retention could not prune now", extra={"error": str(exc)})
                continue
            if removed:
                logger.info("retention pruned delivered records", extra={"count": removed})

    def _refresh_gauges(self) -> None:
        stats = self.journal.stats()
        metrics.JOURNAL_EVENTS.set(stats.events)
        metrics.JOURNAL_BYTES.set(stats.bytes)
        if self.detections is not None:
            events, seconds = self.journal.lag(self.detections.position())
            metrics.DETECTION_LAG_EVENTS.set(events)
            metrics.DETECTION_LAG_SECONDS.set(seconds)
        dead = self.journal.dead_letter_counts()
        for name, lag in self._lags().items():
            metrics.SINK_LAG_EVENTS.labels(name).set(lag["lag_events"])
            metrics.SINK_LAG_SECONDS.labels(name).set(lag["lag_seconds"])
            metrics.DEAD_LETTERS.labels(name).set(dead.get(name, 0))

    def _lags(self) -> dict[str, dict[str, float]]:
        """Each sink's lag in records and seconds, from the cursor that counts.

        A replica standing by for a sink (another one holds its lease) measures from the
        shared cursor the active replica saves, not from its own idle one: otherwise every
        standby reports the whole journal as lag and the lag alert fires on it.
        """
        saved = self.journal.cursors() if any(loop.status.role != "active" for loop in self.loops) else {}
        lags = {}
        for loop in self.loops:
            name = loop.status.name
            cursor = loop.status.cursor if loop.status.role == "active" else saved.get(name, 0)
            events, seconds = self.journal.lag(cursor)
            lags[name] = {"lag_events": events, "lag_seconds": seconds}
        return lags

    def status(self) -> dict[str, Any]:
        stats = self.journal.stats()
        dead = self.journal.dead_letter_counts()
        lags = self._lags()
        sinks = {
            loop.status.name: {
                **asdict(loop.status),
                **lags[loop.status.name],
                "dead_letters": dead.get(loop.status.name, 0),
            }
            for loop in self.loops
        }
        return {
            "journal": {
                "location": self.journal.location,
                "events": stats.events,
                "bytes": stats.bytes,
                "head": stats.head,
                "backlog": self.journal.backlog(),
                "backlog_limit": self.journal.backlog_limit,
                "last_error": self.journal.last_error,
            },
            "sinks": sinks,
            "sources": {source.name: source.status() for source in self.sources},
            "detections": self.detections.status() if self.detections is not None else None,
            "tasks": {task.name: asdict(task) for task in self.tasks},
        }

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        problems: list[str] = []
        if self.draining:
            problems.append("draining: shutting down; send traffic elsewhere")
        if not self.journal.writer_alive:
            problems.append("journal: the writer thread is not running")
        problems.extend(f"task {task.name}: {task.stopped}" for task in self.tasks if task.stopped)
        if self.journal.last_error is not None:
            try:
                await self.journal.probe()
            except JournalUnavailable as exc:
                problems.append(f"journal: {exc}")
        backlog = await asyncio.to_thread(self.journal.backlog)
        if backlog >= self.journal.backlog_limit:
            problems.append(f"journal: backlog {backlog} at its limit {self.journal.backlog_limit}")
        unhealthy = {
            loop.status.name: loop.status.last_error for loop in self.loops if not loop.status.healthy
        }
        if unhealthy and self.ready_requires_sinks:
            problems.extend(f"sink {name}: {error}" for name, error in unhealthy.items())
        return not problems, {"ready": not problems, "problems": problems, "unhealthy_sinks": unhealthy}


def build_app(settings: Settings, env: Mapping[str, str]) -> WebhookFirst:
    forwarder = Forwarder(settings, env)
    webhook = WebhookEndpoint(
        Verifier(settings.secrets, settings.signature_tolerance_s),
        forwarder.journal,
        forwarder.options,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    exposition = metrics.Exposition(metrics.REGISTRY)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"alive": True})

    async def readyz(request: Request) -> JSONResponse:
        ready, body = await forwarder.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    async def prometheus_metrics(request: Request) -> Response:
        await forwarder.read_gauges()
        body, content_type = exposition.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(forwarder.status))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await forwarder.start()
        try:
            yield
        finally:
            await forwarder.stop()

    async def metrics_plain(scope: Scope, receive: Receive, send: Send) -> None:
        accept = next((value for name, value in scope["headers"] if name == b"accept"), b"")
        await forwarder.read_gauges()
        body, content_type = exposition.render(accept.decode("latin-1"))
        headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    probes = [Route("/healthz", healthz), Route("/readyz", readyz)]
    operator = [Route("/status", status), Route("/metrics", prometheus_metrics)]
    if settings.admin_port is None:
        public = Starlette(
            routes=[Route(settings.webhook_path, webhook, methods=["POST"]), *probes, *operator],
            lifespan=lifespan,
        )
        public.state.forwarder = forwarder
        return WebhookFirst(public, settings.webhook_path, webhook, {"/metrics": metrics_plain})
    # With an admin listener the public port keeps the webhook and the probes; /metrics and
    # /status answer 404 there.
    public = Starlette(
        routes=[Route(settings.webhook_path, webhook, methods=["POST"]), *probes], lifespan=lifespan
    )
    public.state.forwarder = forwarder
    return AdminSplit(public, settings.webhook_path, webhook, Starlette(routes=[*probes, *operator]))


_ALIVE = b'{"alive":true}'


async def healthz_plain(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /healthz`` without Starlette: a fifth of the CPU, so that a flood of cheap requests
    delays the probe less (answers as Starlette's route does)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_ALIVE))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _ALIVE})


class WebhookFirst:
    """Hand ``POST <webhook path>`` straight to the endpoint; everything else goes to Starlette.

    The webhook is the only hot path. Starlette's error and exception middleware, router and
    send wrappers cost about as much per request as verifying the signature, and the endpoint
    needs none of them (it answers every outcome itself; an unexpected error still becomes a
    500 from uvicorn). The route stays registered in Starlette, which still answers other
    methods on the path with 405.
    """

    def __init__(
        self,
        app: Starlette,
        webhook_path: str,
        webhook: WebhookEndpoint,
        plain_gets: Mapping[str, Callable[[Scope, Receive, Send], Awaitable[None]]] | None = None,
    ) -> None:
        self.app = app
        self._path = webhook_path
        self._webhook = webhook
        # ``GET`` routes an attacker can make the loop answer thousands of times at once
        # (pipelined, never read), answered without Starlette too.
        self._plain_gets = {"/healthz": healthz_plain, **(plain_gets or {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._path and scope["method"] == "POST":
            await self._webhook(scope, receive, send)
        elif scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in self._plain_gets:
            await self._plain_gets[scope["path"]](scope, receive, send)
        else:
            await self.app(scope, receive, send)


class AdminSplit(WebhookFirst):
    """``WebhookFirst`` for two listeners: requests that reach the admin port
    (``FORWARDER_ADMIN_PORT``) go to ``admin`` (probes, /status, /metrics), never to the webhook.

    uvicorn serves both sockets with one app and one event loop; ``scope["server"]`` is the
    local address the connection came to. ``server.serve`` sets ``admin_port`` once bound.
    """

    def __init__(self, app: Starlette, webhook_path: str, webhook: WebhookEndpoint, admin: Starlette) -> None:
        super().__init__(app, webhook_path, webhook)
        self.admin = admin
        self.admin_port: int | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["server"][1] == self.admin_port:
            await self.admin(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)
