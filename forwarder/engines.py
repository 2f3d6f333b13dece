"""The SQL engines the journal runs on: embedded SQLite, or PostgreSQL for several replicas.

The journal writes its statements once, with ``?`` placeholders and the ``ON CONFLICT``
syntax both engines share. An engine supplies what really differs: how to connect, the
schema's types, how a write transaction starts, how big the store is, and a *lease*: the
lock that lets exactly one process deliver to a given sink while others stand by.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from forwarder.dedup_key import POSTGRES_DEDUP_KEY, dedup_key
from forwarder.masking import mask_url

logger = logging.getLogger("forwarder.engines")

SCHEMA_VERSION = 3
"""1: ``events.seq`` a plain SQLite rowid (numbers reused once the table is empty); 2: never
reused; 3: deduplicated by ``event_key`` (``forwarder.dedup_key``), not a unique text id."""

_EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq {sequence},
    event_key BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    created_at {real},
    received_at {real} NOT NULL,
    record {blob} NOT NULL
)"""
_EVENTS_COLUMNS = "seq, event_key, event_id, event_type, created_at, received_at, record"
_MIGRATION_BATCH = 100_000
"""Records a migration step copies or keys in one transaction: about a second's work."""

_TABLES = (
    _EVENTS
    + """;
DROP INDEX IF EXISTS events_received_at;
CREATE INDEX IF NOT EXISTS events_key ON events (event_key);
CREATE TABLE IF NOT EXISTS cursors (
    sink TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id {serial} PRIMARY KEY,
    sink TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    record {blob} NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at {real} NOT NULL,
    state TEXT NOT NULL DEFAULT 'dead',
    UNIQUE (sink, event_id)
);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS memberships (
    user_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    source TEXT NOT NULL,
    active INTEGER NOT NULL,
    changed_at {real} NOT NULL,
    seen_at {real} NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (user_id, organization_id)
);
CREATE INDEX IF NOT EXISTS memberships_version ON memberships (version);
"""
)


_SQLITE_TYPES = {
    "sequence": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "serial": "INTEGER",
    "real": "REAL",
    "blob": "BLOB",
}


class Lease(Protocol):
    """Held while this process is the one delivering to a sink."""

    def alive(self) -> bool: ...

    def release(self) -> None: ...


class Engine(Protocol):
    location: str
    """Where the journal lives, for logs and ``/status`` (never with a password)."""
    errors: tuple[type[Exception], ...]
    """Exceptions that mean "the store failed", turned into 503s and retries."""
    begin: str
    prune_batch: int
    """Records one retention round deletes, in one transaction."""

    def connect(self, *, writer: bool) -> Any: ...

    def create_schema(self, conn: Any) -> None:
        """Create missing tables and bring an older journal's schema up to ``SCHEMA_VERSION``."""
        ...

    def sequence_high_water(self, conn: Any) -> int:
        """The last sequence number handed out (0 if none): the next record gets a higher one."""
        ...

    def raise_sequence(self, conn: Any, floor: int) -> None:
        """Make the next sequence number greater than ``floor``; never lowers it."""
        ...

    def sql(self, statement: str) -> str:
        """The statement with this engine's placeholders."""
        ...

    def stored_ids(self, keys: int) -> str:
        """(event_key, event_id) of the records stored under ``keys`` dedup keys (``?`` each)."""
        ...

    def serialize_writers(self, conn: Any) -> None:
        """Make concurrent writers (other processes) commit in sequence order."""
        ...

    def size_bytes(self, conn: Any) -> int: ...

    def claim(self, sink: str) -> Lease | None:
        """Take the delivery lease for ``sink``, or None when another process holds it."""
        ...

    def after_commit(self, conn: Any) -> None:
        """Upkeep after a commit, once its callers have their answer (SQLite: bound the WAL).

        Never raises: the commit is durable whatever happens here.
        """
        ...


class _FileLease:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def alive(self) -> bool:
        return True

    def release(self) -> None:
        os.close(self._fd)


def private_directory(directory: Path) -> None:
    """Create ``directory`` (and parents) readable by this user only; warn if it exists and is not.

    The journal holds emails and IP addresses. The SQLite files are 0600 in any case; an
    existing directory is the operator's, so it is reported rather than changed.
    """
    try:
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask; this is not
    except FileExistsError:
        mode = directory.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning(
                "the data directory is readable by other users; it holds events (emails, IPs): chmod 700 it",
                extra={"directory": str(directory), "mode": oct(mode)},
            )


def private_file(path: Path) -> None:
    """Create ``path`` 0600 if missing, or make it 0600: files holding events are not world-readable.

    SQLite gives its -wal and -shm files the database file's mode, so this covers all three.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


WAL_RESERVE_UNCAPPED = 4 * 1024 * 1024
"""The WAL's bound without ``FORWARDER_JOURNAL_MAX_BYTES``: enough for any webhook burst's
commits between two checkpoints, small beside any disk a journal lives on."""
WAL_RESERVE_MAX = 64 * 1024 * 1024
"""The most of a cap set aside for the WAL: a large cap is for events, not for a log that
only has to hold the commits between two checkpoints."""
_CHECKPOINT_MAX = 4 * 1024 * 1024
"""The WAL size that starts a checkpoint at most: SQLite's own default (1,000 pages)."""
_BUSY_TIMEOUT_MS = 10_000
_TRUNCATE_WAIT_MS = 50
"""How long the writer waits for readers of old WAL frames before a truncating checkpoint
gives up until the next commit: a delivery loop's read takes milliseconds, and every
webhook waits while the writer does."""


@dataclass(frozen=True, slots=True)
class WalBudget:
    """How an SQLite journal's disk is shared between the database file and its WAL.

    ``max_page_count`` caps the database file only; the WAL (and its ``-shm`` index) grows
    beside it with every commit until a checkpoint copies its pages into the database and
    the next writer starts it over. So a quarter of the cap (at most ``WAL_RESERVE_MAX``) is
    kept back for it: commits start a checkpoint past a quarter of that reserve
    (``wal_autocheckpoint``), a WAL started over is cut back to that size
    (``journal_size_limit``), and one that still grew past half the reserve, because a
    reader held old frames or one transaction was large, is checkpointed and truncated to
    zero (``wal_checkpoint(TRUNCATE)``) as soon as no reader needs it.
    """

    reserve: int
    """Bytes the WAL may take."""
    checkpoint: int
    """WAL bytes past which a commit checkpoints, and the size a WAL started over is cut to."""
    truncate_above: int
    """WAL bytes past which the writer checkpoints and truncates it after a commit."""
    database: int
    """Bytes the database file may take (``max_page_count``); 0 for no cap."""

    @classmethod
    def of(cls, max_bytes: int) -> WalBudget:
        """The split of ``max_bytes`` (``FORWARDER_JOURNAL_MAX_BYTES``; 0: no cap, the WAL
        still bounded by ``WAL_RESERVE_UNCAPPED``)."""
        reserve = min(max_bytes // 4, WAL_RESERVE_MAX) if max_bytes else WAL_RESERVE_UNCAPPED
        return cls(
            reserve=reserve,
            checkpoint=min(reserve // 4, _CHECKPOINT_MAX),
            truncate_above=reserve // 2,
            database=max_bytes - reserve if max_bytes else 0,
        )


class SQLiteEngine:
    """One file in WAL mode; readers never block the writer, other processes may write too."""

    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    begin = "BEGIN IMMEDIATE"

    def __init__(self, path: Path, *, synchronous: str = "full", max_bytes: int = 0) -> None:
        self.path = path
        self.location = str(path)
        self.wal = path.with_name(path.name + "-wal")
        self._wal_name = str(self.wal)  # os.stat of a str: the cheapest check, once per commit
        self.budget = WalBudget.of(max_bytes)
        # A deleted record rewrites its page into the WAL: a round of a few KiB per record
        # must fit in the half of the reserve a truncating checkpoint leaves free.
        self.prune_batch = max(self.budget.truncate_above // 4096, 100)
        self._synchronous = synchronous.upper()
        private_directory(path.parent)
        private_file(path)

    def connect(self, *, writer: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        if writer:
            # Statement journals in memory: a group commit's multi-row INSERT spilled its undo
            # pages to a temporary file, a third of the writer's pwrite calls (48,700 a second
            # at 6,000 webhooks/s, 30,300 without). It holds one statement's pages at most.
            conn.execute("PRAGMA temp_store=MEMORY")
            # Per connection: every writer (serve, backfill, dlq) keeps the WAL within budget.
            budget = self.budget
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA journal_size_limit={budget.checkpoint}")
            conn.execute(f"PRAGMA wal_autocheckpoint={max(budget.checkpoint // page_size, 1)}")
            if budget.database:
                conn.execute(f"PRAGMA max_page_count={max(budget.database // page_size, 1)}")
        else:
            conn.execute("PRAGMA query_only=1")
        return conn

    def after_commit(self, conn: sqlite3.Connection) -> None:
        """Checkpoint and truncate the WAL once it has grown past half its reserve.

        The checkpoints commits start on their own (``wal_autocheckpoint``) are passive: a
        reader still on an older snapshot keeps the WAL from starting over, and under steady
        reads it can grow without end. This one waits ``_TRUNCATE_WAIT_MS`` at most for such
        readers (new ones read the database file and do not hold it), and tries again after
        the next commit if they are still there. One ``stat`` per commit when under the bound.
        """
        try:
            if os.stat(self._wal_name).st_size <= self.budget.truncate_above:
                return
        except OSError:  # no WAL (yet): nothing to bound
            return
        try:
            conn.execute(f"PRAGMA busy_timeout={_TRUNCATE_WAIT_MS}")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:  # a full disk: the next commit fails and says so
            logger.debug("WAL checkpoint failed", extra={"journal": self.location, "error": str(exc)})
            return
        if busy:
            logger.debug("WAL checkpoint waits for readers", extra={"journal": self.location})

    @staticmethod
    @functools.cache
    def stored_ids(keys: int) -> str:
        # One seek of the key's index each: SQLite plans an IN list so whatever its statistics.
        return f"SELECT event_key, event_id FROM events WHERE event_key IN ({', '.join('?' * keys)})"

    def create_schema(self, conn: sqlite3.Connection) -> None:
        self._migrate_events(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _TABLES.format(**_SQLITE_TYPES).split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate_events(self, conn: sqlite3.Connection) -> None:
        """Copy an older ``events`` table into the current one; SQLite cannot alter a key or
        drop a constraint in place.

        Version 1 numbered records with a plain rowid: SQLite hands out MAX(seq) + 1, so once
        retention emptied the table, new records were numbered below every sink's cursor and
        never delivered (AUTOINCREMENT keeps the highest number ever used). Versions 1 and 2
        deduplicated on a unique text ``event_id``, whose index grew dear (``forwarder.dedup_key``).

        The copy goes into ``events_new`` in committed batches, each resuming after the last
        record copied, so a process stopped halfway (a startup probe giving up on a week of
        journal) goes on where it stopped. The swap is one short transaction that copies what
        arrived since, keeps the sequence's high water and renames the table.
        """
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if not columns or "event_key" in columns:
            return
        (count,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        about = {"journal": self.location, "records": count, "schema_version": SCHEMA_VERSION}
        logger.warning("migrating the journal's events to the new schema; writes wait", extra=about)
        started = time.monotonic()
        conn.create_function("dedup_key", 2, dedup_key, deterministic=True)
        conn.execute(_EVENTS.format(**_SQLITE_TYPES).replace("events", "events_new", 1))
        conn.execute("CREATE INDEX IF NOT EXISTS events_key ON events_new (event_key)")
        copy = (
            f"INSERT INTO events_new ({_EVENTS_COLUMNS}) SELECT seq, dedup_key(event_id, created_at),"
            " event_id, event_type, created_at, received_at, record FROM events"
            " WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events_new) ORDER BY seq LIMIT ?"
        )
        try:
            while True:
                conn.execute("BEGIN IMMEDIATE")
                copied = conn.execute(copy, (_MIGRATION_BATCH,)).rowcount
                conn.execute("COMMIT")
                if copied < _MIGRATION_BATCH:
                    break
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(copy, (-1,))  # whatever another process added meanwhile
            numbered = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
            high_water = self.sequence_high_water(conn) if numbered else 0  # version 1: no AUTOINCREMENT
            conn.execute("DROP TABLE events")
            conn.execute("ALTER TABLE events_new RENAME TO events")
            self.raise_sequence(conn, high_water)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            # What was copied stays: the next start goes on from there.
            raise sqlite3.OperationalError(
                f"migrating the events table to schema version {SCHEMA_VERSION} copies it, and the copy"
                f" needs as much free disk (and FORWARDER_JOURNAL_MAX_BYTES room) as the table: {exc}"
            ) from exc
        logger.warning("journal migrated", extra={**about, "seconds": round(time.monotonic() - started, 1)})

    def sequence_high_water(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return int(row[0]) if row else 0

    def raise_sequence(self, conn: sqlite3.Connection, floor: int) -> None:
        if not conn.execute(
            "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'events'", (floor,)
        ).rowcount:
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)", (floor,))

    def sql(self, statement: str) -> str:
        return statement

    def serialize_writers(self, conn: sqlite3.Connection) -> None:
        return None  # BEGIN IMMEDIATE already takes the database's single write lock

    def size_bytes(self, conn: sqlite3.Connection) -> int:
        pages = (
            conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        )
        return pages + (self.wal.stat().st_size if self.wal.exists() else 0)

    def claim(self, sink: str) -> Lease | None:
        fd = os.open(self.path.with_name(f"{self.path.name}.{sink}.lease"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return _FileLease(fd)


class _SessionLease:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def alive(self) -> bool:
        try:
            self._conn.execute("SELECT 1")
        except Exception:
            return False
        return True

    def release(self) -> None:
        self._conn.close()


# Advisory lock keys are per database and schema, so journals side by side do not contend.
_LOCK_KEY = "hashtext(current_database() || '/' || current_schema() || '/' || %s)"


class PostgresEngine:
    """PostgreSQL for several replicas sharing one journal.

    Sequence numbers are handed out at insert time, so two transactions could commit out
    of order and a delivery cursor would skip the later-committing lower number. Every
    write transaction therefore takes one transaction-scoped advisory lock first: commits
    happen in sequence order, as with SQLite's single writer, and group commit keeps the
    cost at one lock per batch. Each sink is delivered by whichever replica holds its
    session advisory lock; the others stand by and take over if that connection drops.
    """

    begin = "BEGIN"
    prune_batch = 10_000

    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self.url = url
        self.location = mask_url(url)
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._statements: dict[str, str] = {}

    def connect(self, *, writer: bool) -> Any:
        conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        # The journal's statements are short index lookups. Where the planner misjudges one
        # (a table never analyzed), JIT compiled it on every run as well: tens of ms each.
        conn.execute("SET jit = off")
        return conn

    @staticmethod
    @functools.cache
    def stored_ids(keys: int) -> str:
        """One index lookup per key, whatever the table's statistics say.

        ``event_key IN (...)`` is planned from statistics, and a table that has none (never
        analyzed: autovacuum off, or the column just added by the migration) gets the default
        guess of 0.5% of the table per value: for a commit's 32 keys, a sequential scan of the
        whole table, on every commit (1 s a commit on 3,000,000 records, 27 webhooks/s). The
        lookup per key (``LATERAL``, kept from being flattened into a join by ``OFFSET 0``) can
        only be an index scan.
        """
        values = ", ".join(["(?::bigint)"] * keys)
        return (
            f"SELECT e.event_key, e.event_id FROM (VALUES {values}) AS k (key) CROSS JOIN LATERAL"
            " (SELECT event_key, event_id FROM events WHERE event_key = k.key OFFSET 0) AS e"
        )

    def create_schema(self, conn: Any) -> None:
        self._migrate_events(conn)
        conn.execute("BEGIN")
        self.serialize_writers(conn)
        serial = "BIGINT GENERATED BY DEFAULT AS IDENTITY"
        for statement in _TABLES.format(
            sequence=f"{serial} PRIMARY KEY", serial=serial, real="DOUBLE PRECISION", blob="BYTEA"
        ).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")

    def _migrate_events(self, conn: Any) -> None:
        """Key a journal of the previous release (``forwarder.dedup_key``) and drop its unique
        text index.

        Rows get their key in committed batches of ``_MIGRATION_BATCH`` sequence numbers, so a
        process stopped halfway goes on where it stopped; replicas of the previous release
        keep working meanwhile. The last step, under the writers' lock, keys what they added
        and drops the unique index: from then on their inserts fail and they answer 503, so
        WorkOS retries. Replace every replica at once.
        """
        nullable = dict(
            conn.execute(
                "SELECT column_name, is_nullable FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = 'events'"
            ).fetchall()
        )
        if not nullable or nullable.get("event_key") == "NO":  # no journal yet, or migrated
            return
        (low, high, count) = conn.execute("SELECT MIN(seq), MAX(seq), COUNT(*) FROM events").fetchone()
        about = {"journal": self.location, "records": count, "schema_version": SCHEMA_VERSION}
        logger.warning("migrating the journal's events to the new schema; writes wait", extra=about)
        started = time.monotonic()
        conn.execute("ALTER TABLE events ADD COLUMN IF NOT EXISTS event_key BIGINT")
        key_rows = f"UPDATE events SET event_key = {POSTGRES_DEDUP_KEY} WHERE event_key IS NULL"
        for first in range(low or 0, (high or 0) + 1, _MIGRATION_BATCH):
            conn.execute(f"{key_rows} AND seq >= %s AND seq < %s", (first, first + _MIGRATION_BATCH))
        conn.execute("BEGIN")
        self.serialize_writers(conn)
        conn.execute(key_rows)
        conn.execute("ALTER TABLE events ALTER COLUMN event_key SET NOT NULL")
        conn.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_event_id_key")
        conn.execute("COMMIT")
        # The new column has no statistics until autovacuum's next analyze (never, where it is off).
        conn.execute("ANALYZE events")
        logger.warning("journal migrated", extra={**about, "seconds": round(time.monotonic() - started, 1)})

    def _sequence(self, conn: Any) -> str:
        # An identity column's sequence only moves forward, whatever is deleted, unless
        # someone recreates the table or restarts the sequence by hand.
        return str(conn.execute("SELECT pg_get_serial_sequence('events', 'seq')").fetchone()[0])

    def sequence_high_water(self, conn: Any) -> int:
        last, called = conn.execute(f"SELECT last_value, is_called FROM {self._sequence(conn)}").fetchone()
        return int(last) if called else int(last) - 1

    def raise_sequence(self, conn: Any, floor: int) -> None:
        if self.sequence_high_water(conn) < floor:
            conn.execute("SELECT setval(%s, %s, true)", (self._sequence(conn), floor))

    def sql(self, statement: str) -> str:
        translated = self._statements.get(statement)
        if translated is None:
            translated = self._statements[statement] = statement.replace("?", "%s")
        return translated

    def serialize_writers(self, conn: Any) -> None:
        conn.execute(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})", ("writer",))

    def size_bytes(self, conn: Any) -> int:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname IN ('events', 'cursors', 'dead_letters', 'state', 'memberships')"
            " AND n.nspname = current_schema()"
        ).fetchone()
        return int(row[0])

    def after_commit(self, conn: Any) -> None:
        return None  # PostgreSQL bounds its own write-ahead log (max_wal_size)

    def claim(self, sink: str) -> Lease | None:
        conn = self.connect(writer=False)
        (taken,) = conn.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", (f"sink/{sink}",)).fetchone()
        if not taken:
            conn.close()
            return None
        return _SessionLease(conn)


def engine_for(url: str, *, synchronous: str = "full", max_bytes: int = 0) -> Engine:
    """``sqlite:///path`` or ``postgresql://...`` to an engine. Raises ValueError otherwise."""
    if url.startswith("sqlite:///"):
        return SQLiteEngine(
            Path(url.removeprefix("sqlite:///")), synchronous=synchronous, max_bytes=max_bytes
        )
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresEngine(url)
    raise ValueError(f"unsupported journal URL scheme {url.split(':', 1)[0]!r}")
