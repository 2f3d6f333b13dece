"""Reads of the journal: one connection per thread, replaced when it has gone stale.

Delivery loops, retention and ``/status`` read through ``asyncio.to_thread``, so reads run
on several threads at once and never wait for the writer (SQLite's WAL, PostgreSQL's
MVCC); a connection must not be shared between threads, hence one each.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from forwarder.engines import Engine
from forwarder.group_commit import JournalUnavailable

T = TypeVar("T")


class ReadConnections:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of ``statement`` (written with ``?`` placeholders), on this thread's connection."""
        sql = self._engine.sql(statement)
        return self.run(lambda conn: conn.execute(sql, params).fetchall())

    def run(self, read: Callable[[Any], T]) -> T:
        """``read(connection)`` on this thread's read connection, opened on first use.

        A connection that has gone stale (the server restarted, a proxy dropped it) is
        replaced, and the read tried once more on a fresh one before it fails with
        JournalUnavailable.
        """
        engine = self._engine
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                return read(conn)
            except engine.errors:
                self._drop(conn)
        conn = None
        try:
            conn = self._local.conn = engine.connect(writer=False)
            return read(conn)
        except engine.errors as exc:
            self._drop(conn)
            raise JournalUnavailable(f"journal read failed: {exc}") from exc

    def _drop(self, conn: Any) -> None:
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
