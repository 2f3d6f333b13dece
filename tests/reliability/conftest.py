"""Fixtures of the reliability suite: a PostgreSQL journal of its own, a small tmpfs.

PostgreSQL: skipped loudly when unreachable, failed instead with FORWARDER_REQUIRE_SERVICES=1.
tmpfs: ``mount_tmpfs`` mounts a real size-limited filesystem (root only) and unmounts it at
the end even when the test fails; it returns None when mounting is not permitted, and the
test decides what to fall back to.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.postgres import journal_schema_or_skip


def services_required() -> bool:
    return os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1"


@pytest.fixture
def pg_journal() -> Iterator[tuple[str, str]]:
    """(journal URL in a scratch schema, its application_name): terminate only these backends."""
    with journal_schema_or_skip("reliability") as (url, schema):
        yield f"{url}&application_name={schema}", schema


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
