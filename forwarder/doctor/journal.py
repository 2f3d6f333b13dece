"""Check 3: the journal takes writes, how fast the disk makes them durable, and the room left.

The write is the journal's own readiness probe (a real write of a few events' size, rolled
back), on the journal ``serve`` would open. Durability cost is measured apart, because a
rolled-back write never reaches the disk: an ``fsync`` of a small file in the journal's
directory for SQLite, and for PostgreSQL a commit that writes only its commit record.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from forwarder.config import ConfigError, Settings
from forwarder.doctor.report import Check, failed, passed, warned
from forwarder.engines import PostgresEngine, SQLiteEngine
from forwarder.journal import Journal, JournalUnavailable
from forwarder.masking import mask_url, scrub
from forwarder.service import open_journal

SLOW_FSYNC_MS = 20.0
"""Above this, each group commit (and so each webhook's answer) waits noticeably on the disk."""
LOW_FREE_BYTES = 1 << 30
"""Without a journal cap, warn when less than this is free: a sink outage fills the disk."""
_FSYNC_SAMPLES = 3


async def check_journal(settings: Settings) -> list[Check]:
    try:
        journal = await asyncio.to_thread(open_journal, settings)
    except ConfigError as exc:
        return [failed("journal", str(exc), f"fix {exc.variable}: the location must exist and be writable")]
    except OSError as exc:  # the directory cannot be created (engine set-up is outside open_journal's net)
        return [
            failed(
                "journal",
                f"cannot prepare the journal at {mask_url(settings.journal_url)}: {exc.strerror}",
                "point FORWARDER_DATA_DIR (or FORWARDER_JOURNAL_URL) at a writable directory",
            )
        ]
    try:
        return await _checks(journal, settings)
    finally:
        await journal.close()


async def _checks(journal: Journal, settings: Settings) -> list[Check]:
    variable = "FORWARDER_DATA_DIR" if isinstance(journal.engine, SQLiteEngine) else "FORWARDER_JOURNAL_URL"
    started = time.perf_counter()
    try:
        await journal.probe()
    except JournalUnavailable as exc:
        detail = scrub(str(exc), settings.journal_url)
        return [failed("journal", f"a write at {journal.location} failed: {detail}", f"check {variable}")]
    took_ms = (time.perf_counter() - started) * 1000
    results = [passed("journal", f"one write at {journal.location} rolled back ({took_ms:.1f} ms)")]
    engine = journal.engine
    if isinstance(engine, SQLiteEngine):
        results.append(await asyncio.to_thread(_sqlite_fsync, engine.path.parent))
        size = (await asyncio.to_thread(journal.stats)).bytes
        results.append(
            disk_room(shutil.disk_usage(engine.path.parent).free, size, settings.journal_max_bytes)
        )
    elif isinstance(engine, PostgresEngine):
        results.extend(await asyncio.to_thread(_postgres, engine))
    return results


def _sqlite_fsync(directory: Path) -> Check:
    timings = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".doctor-fsync-") as probe:
        for _ in range(_FSYNC_SAMPLES):
            probe.write(b"\0" * 4096)
            probe.flush()
            started = time.perf_counter()
            os.fsync(probe.fileno())
            timings.append((time.perf_counter() - started) * 1000)
    return fsync_verdict(sorted(timings)[len(timings) // 2], "fsync in the data dir", SQLITE_SLOW_FIX)


SQLITE_SLOW_FIX = (
    "put FORWARDER_DATA_DIR on a local SSD (not a network volume), or accept the risk with "
    "FORWARDER_SQLITE_SYNCHRONOUS=normal"
)
POSTGRES_SLOW_FIX = "point FORWARDER_JOURNAL_URL at a server closer to this host or on faster storage"


def fsync_verdict(median_ms: float, what: str, fix: str) -> Check:
    """PASS up to ``SLOW_FSYNC_MS``, WARN above: every acknowledged webhook waits for it."""
    detail = f"{what}: {median_ms:.1f} ms (median of {_FSYNC_SAMPLES})"
    if median_ms > SLOW_FSYNC_MS:
        return warned(
            "journal fsync", f"{detail}, over {SLOW_FSYNC_MS:g} ms: webhook answers wait on the disk", fix
        )
    return passed("journal fsync", detail)


def disk_room(free_bytes: int, journal_bytes: int, max_bytes: int) -> Check:
    """Free space against what the journal may still grow by (``FORWARDER_JOURNAL_MAX_BYTES``)."""
    free = f"{_size(free_bytes)} free, journal {_size(journal_bytes)}"
    if max_bytes:
        headroom = max(max_bytes - journal_bytes, 0)
        if free_bytes < headroom:
            return warned(
                "journal disk",
                f"{free}: the disk fills before the journal reaches FORWARDER_JOURNAL_MAX_BYTES "
                f"({_size(max_bytes)})",
                "lower FORWARDER_JOURNAL_MAX_BYTES below the free space, or free disk space",
            )
        return passed("journal disk", f"{free}, cap FORWARDER_JOURNAL_MAX_BYTES={_size(max_bytes)}")
    if free_bytes < LOW_FREE_BYTES:
        return warned(
            "journal disk",
            f"{free} and no cap: a long sink outage fills the disk",
            "set FORWARDER_JOURNAL_MAX_BYTES (webhooks then get 503 and WorkOS retries) or free disk space",
        )
    return passed("journal disk", f"{free}, no cap (FORWARDER_JOURNAL_MAX_BYTES unset)")


def _postgres(engine: PostgresEngine) -> list[Check]:
    """Server version and ``synchronous_commit``, and the time of one durable commit."""
    try:
        conn = engine.connect(writer=True)
    except engine.errors as exc:
        detail = scrub(str(exc), engine.url)
        return [failed("journal postgresql", f"{engine.location}: {detail}", "check FORWARDER_JOURNAL_URL")]
    with conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        synchronous = conn.execute("SHOW synchronous_commit").fetchone()[0]
        timings = []
        for _ in range(_FSYNC_SAMPLES):
            started = time.perf_counter()
            conn.execute("BEGIN")
            conn.execute("SELECT txid_current()")  # an id makes COMMIT write and flush its record
            conn.execute("COMMIT")
            timings.append((time.perf_counter() - started) * 1000)
    where = f"PostgreSQL {version.split()[0]} at {mask_url(engine.url)}, synchronous_commit={synchronous}"
    if synchronous == "off":
        server = warned(
            "journal postgresql",
            f"{where}: a server crash can lose events already acknowledged to WorkOS",
            "set synchronous_commit = on for the journal's database or role (ALTER ROLE ... SET)",
        )
    else:
        server = passed("journal postgresql", where)
    commit = fsync_verdict(sorted(timings)[len(timings) // 2], "durable commit", POSTGRES_SLOW_FIX)
    return [server, commit]


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
