"""A PostgreSQL schema of its own for one test or benchmark run, dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from bench.harness.postgres import scratch_schema

SERVER = os.environ.get("FORWARDER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def journal_schema_or_skip(prefix: str) -> Iterator[tuple[str, str]]:
    """(journal URL, schema name) of a scratch schema named ``prefix_<random>`` on the test server.

    Unreachable server: the test is skipped with a loud reason, or fails when
    ``FORWARDER_REQUIRE_SERVICES=1`` (CI), so a missing PostgreSQL never passes silently.
    """
    with contextlib.ExitStack() as stack:
        schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
        try:
            url = stack.enter_context(scratch_schema(SERVER, schema))
        except psycopg.OperationalError as exc:
            reason = f"PostgreSQL is not reachable at {SERVER}: {exc}"
            if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
                pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but {reason}")
            pytest.skip(f"SKIPPING POSTGRESQL TESTS: {reason}")
        yield url, schema
