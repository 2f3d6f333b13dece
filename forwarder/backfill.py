"""``workos-forwarder backfill``: fetch past events from the Events API into the journal.

Fetching and storing are the poller's own (``forwarder.sources.events_sync.EventsSync``): the
same normalization, the same id-keyed journal, the same page-by-page durable position. This
module adds what a person at a terminal needs: dates, a progress line, a summary at the end
and failures that say what to fix.

The position is kept under a state key derived from the arguments, so an interrupted run
(Ctrl-C, kill, crash) resumes when the same command is run again. Running it twice, or while
``serve`` runs on the same journal (SQLite WAL, the journal's busy timeout), never delivers
an event twice: the journal keeps one row per event id and sinks read rows, not requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TextIO

import click
import orjson

from forwarder.config import ConfigError, Settings, load_environment
from forwarder.journal import JournalUnavailable
from forwarder.memberships import MembershipMap
from forwarder.memberships_store import MembershipSettings, MembershipStore
from forwarder.sources.events_api import ApiSettings, event_types
from forwarder.sources.events_api_client import RETENTION_DAYS, ApiRejected, ApiUnavailable, EventsApiClient
from forwarder.sources.events_sync import EventsSync, PageResult, query_digest

_NON_TTY_PROGRESS_EVERY_S = 5.0


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date; use 2026-11-01 or 2026-11-01T12:00:00Z (UTC unless a zone is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class _Progress:
    """A progress line on stderr (redrawn on a terminal, every few seconds otherwise)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._started = time.monotonic()
        self._last_line = self._started
        self._drawn = False
        self.fetched = self.new = self.known = self.skipped = self.pages = 0
        self.newest: str | None = None

    def page(self, result: PageResult) -> None:
        self.pages += 1
        self.fetched += result.fetched
        self.new += result.new
        self.known += result.known
        self.skipped += result.skipped
        self.newest = result.newest or self.newest
        now = time.monotonic()
        if self._tty:
            self._stream.write(f"\r\x1b[K{self.line()}")
            self._stream.flush()
            self._drawn = True
        elif now - self._last_line >= _NON_TTY_PROGRESS_EVERY_S:
            self._last_line = now
            self._echo(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        at = f", at {self.newest}" if self.newest else ""
        return (
            f"{self.fetched:,} events, {self.pages:,} pages, {self.fetched / elapsed:,.0f} events/s"
            f" (new {self.new:,}, already known {self.known:,}){at}"
        )

    def notice(self, reason: str, seconds: float | None = None) -> None:
        self._echo(f"  {reason}; waiting {seconds:.3g} s" if seconds is not None else f"  {reason}")

    def _echo(self, text: str) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._drawn = False
        click.echo(text, file=self._stream)

    def summary(self) -> str:
        elapsed = time.monotonic() - self._started
        skipped = f", skipped {self.skipped:,} (each logged above with its reason)" if self.skipped else ""
        return (
            f"fetched {self.fetched:,}, new {self.new:,}, already known {self.known:,}{skipped}"
            f" ({self.pages:,} pages in {elapsed:.1f} s, {self.fetched / max(elapsed, 1e-6):,.0f} events/s)"
        )

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._drawn = False


@click.command()
@click.option(
    "--since",
    required=True,
    metavar="DATE",
    callback=_date,
    help="Fetch events created after this: 2026-11-01 or 2026-11-01T12:00:00Z (UTC unless a zone is given).",
)
@click.option(
    "--until", metavar="DATE", callback=_date, help="...and before this [default: open-ended, up to now]."
)
@click.option(
    "--events",
    "events_spec",
    metavar="GLOB,...",
    help="Event types or globs, comma-separated (authentication.*) [default: WORKOS_EVENTS, else all known].",
)
@click.option(
    "--organization", metavar="ID", help="Only this organization's events [default: WORKOS_ORGANIZATION_ID]."
)
def backfill(
    since: datetime, until: datetime | None, events_spec: str | None, organization: str | None
) -> None:
    """Fetch past events from the WorkOS Events API into the journal, and so to every sink.

    Safe to run while `serve` runs on the same journal, and safe to run twice: events already
    in the journal are counted as already known, never delivered again. An interrupted run
    resumes where it stopped when the same command is run again. Needs WORKOS_API_KEY.
    """
    now = datetime.now(UTC)
    if since >= now:
        raise click.BadParameter("is in the future", param_hint="--since")
    if until is not None and until <= since:
        raise click.BadParameter("must be later than --since", param_hint="--until")
    try:
        env = load_environment()
        settings = Settings.from_env(env, require_secret=False)
        memberships = MembershipSettings.from_env(env)
        api = ApiSettings.from_env(env)
        if api is None:
            raise ConfigError(
                "WORKOS_API_KEY",
                "not set; backfill reads the Events API with a secret key (sk_...) from the WorkOS "
                "dashboard, API Keys",
            )
    except ConfigError as exc:
        click.echo(f"workos-forwarder: configuration error: {exc}", err=True)
        sys.exit(2)
    try:
        types = event_types(events_spec, "--events") if events_spec else api.types
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    organization = organization or api.organization_id

    oldest_kept = now - timedelta(days=RETENTION_DAYS)
    if since < oldest_kept:
        click.echo(
            f"warning: --since is {(now - since).days} days ago, but the Events API keeps events for "
            f"{RETENTION_DAYS} days (newer WorkOS docs: 90, at most {RETENTION_DAYS} days per request). "
            f"Events created before {oldest_kept:%Y-%m-%d %H:%M} UTC are probably gone: they will be "
            "missing from this backfill and cannot be recovered from the API. If the API refuses the "
            f"range, run it in windows of at most {RETENTION_DAYS} days with --since/--until.",
            err=True,
        )
    window = f"{since:%Y-%m-%dT%H:%M:%SZ} .. {f'{until:%Y-%m-%dT%H:%M:%SZ}' if until else 'now'}"
    click.echo(f"backfill {window}: {len(types)} event type(s) from {api.url}", err=True)
    progress = _Progress(sys.stderr)
    try:
        code = asyncio.run(_run(settings, memberships, api, types, organization, since, until, progress))
    except KeyboardInterrupt:
        progress.close()
        click.echo(f"interrupted after {progress.summary()}; run the same command again to resume", err=True)
        sys.exit(130)
    except ConfigError as exc:
        click.echo(f"workos-forwarder: configuration error: {exc}", err=True)
        sys.exit(2)
    sys.exit(code)


def state_key(
    since: datetime, until: datetime | None, types: tuple[str, ...], organization: str | None
) -> str:
    """One resumable position per distinct backfill (same arguments, same key)."""
    window = orjson.dumps([_ms(since), _ms(until) if until else None, query_digest(types, organization)])
    return f"events_api:backfill:{hashlib.sha256(window).hexdigest()[:16]}"


async def _run(
    settings: Settings,
    memberships: MembershipSettings,
    api: ApiSettings,
    types: tuple[str, ...],
    organization: str | None,
    since: datetime,
    until: datetime | None,
    progress: _Progress,
) -> int:
    from forwarder.service import open_journal

    journal = open_journal(settings)
    if memberships.max_rows:  # past memberships teach the running service's map too
        MembershipStore(journal, MembershipMap(memberships.max_rows), memberships)
    client = EventsApiClient(
        api.url, api.api_key, on_wait=progress.notice, max_retry_after_s=settings.max_retry_after_s
    )
    sync = EventsSync(
        client,
        journal,
        settings.normalize,
        key=state_key(since, until, types, organization),
        types=types,
        organization_id=organization,
        start_ms=_ms(since),
        end_ms=_ms(until) if until else None,
        once=True,
    )
    try:
        saved = await asyncio.to_thread(sync.saved_state)
        if saved is not None and saved.done:
            progress.notice(
                "a run with the same arguments completed before; fetching again (events already in "
                "the journal are counted as already known and not delivered twice)"
            )
        elif saved is not None:
            progress.notice("resuming an interrupted run with the same arguments")
        while True:
            try:
                async for result in sync.pages():
                    progress.page(result)
                break
            except JournalUnavailable as exc:
                # serve holds the write lock, or the disk is full: the position is safe, wait.
                progress.notice(f"journal not writable now ({exc})", exc.retry_after_s)
                await asyncio.sleep(exc.retry_after_s)
    except (ApiRejected, ApiUnavailable) as exc:
        progress.close()
        again = (
            "fix it and run the same command again"
            if isinstance(exc, ApiRejected)
            else "run the same command again"
        )
        click.echo(f"workos-forwarder backfill: {exc}", err=True)
        click.echo(f"stopped after {progress.summary()}; {again}: it resumes where it stopped", err=True)
        return 1
    finally:
        await client.aclose()
        await journal.close()
    progress.close()
    click.echo(f"backfill complete: {progress.summary()}")
    return 0
