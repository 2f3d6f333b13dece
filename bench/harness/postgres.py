"""A PostgreSQL schema of its own for one benchmark (or test) run, dropped afterwards.

The tests use it too (``tests/postgres.py``): the bench must not import from ``tests/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import quote

import psycopg


@contextlib.contextmanager
def scratch_schema(server: str, name: str) -> Iterator[str]:
    """Create schema ``name`` on ``server`` and yield a journal URL that works inside it.

    Raises ``psycopg.OperationalError`` when the server cannot be reached (after 3 s).
    """
    with psycopg.connect(server, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{server}?options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")
