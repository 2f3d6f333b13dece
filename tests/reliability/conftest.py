"""Fixtures of the reliability suite: a PostgreSQL journal of its own, a small tmpfs.

PostgreSQL: skipped loudly when unreachable, failed instead with FORWARDER_REQUIRE_SERVICES=1.
tmpfs: ``mount_tmpfs`` mounts a real size-limited filesystem (root only) and unmounts it at
the end even when the test fails; it returns None when mounting is not permitted, and the
test decides what to fall back to.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tests.postgres import scratch_schema

SERVER = os.environ.get("FORWARDER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def services_required() -> bool:
    return os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1"


@pytest.fixture
def pg_journal() -> Iterator[tuple[str, str]]:
    """(journal URL in a scratch schema, its application_name): terminate only these backends."""
    name = f"reliability_{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_schema(SERVER, name))
        except psycopg.OperationalError as exc:
            reason = f"PostgreSQL is not reachable at {SERVER}: {exc}"
            if services_required():
                pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but {reason}")
            pytest.skip(f"SKIPPING POSTGRESQL RELIABILITY TESTS: {reason}")
        yield f"{url}&application_name={name}", name


MountTmpfs = Callable[[Path, str], str | None]


@pytest.fixture
def mount_tmpfs() -> Iterator[MountTmpfs]:
    """``mount(dir, size)``: a tmpfs of ``size`` (e.g. ``2m``) on ``dir``; None, or why it cannot."""
    mounted: list[Path] = []

    def mount(directory: Path, size: str) -> str | None:
        directory.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            return result.stderr.strip() or f"mount exited {result.returncode}"
        mounted.append(directory)
        return None

    yield mount
    for directory in reversed(mounted):
        subprocess.run(["umount", "-l", str(directory)], capture_output=True, timeout=10, check=False)


def resize_tmpfs(directory: Path, size: str) -> None:
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(directory)], check=True, capture_output=True, timeout=10
    )
