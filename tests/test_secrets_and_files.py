"""Secrets stay secret and files holding events stay private: URL masking, file modes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from forwarder.masking import MASK, mask_url, scrub
from tests.samples import make_event
from tests.service import Service, free_port

StartService = Callable[..., Service]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/events", "postgresql://app:***@db:5432/events"),
        (
            "postgresql://app@db/events?password=s3cret&sslmode=require",
            "postgresql://app@db/events?password=***&sslmode=require",
        ),
        ("postgresql://db/events?sslpassword=s3cret", "postgresql://db/events?sslpassword=***"),
        ("https://user:pa%40ss@intake.example/api/v2/logs", "https://user:***@intake.example/api/v2/logs"),
        ("http://[::1]:4318/v1/logs?api_key=s3cret", "http://[::1]:4318/v1/logs?api_key=***"),
        ("http://proxy:3128", "http://proxy:3128"),
        (
            "sqlite:////var/lib/workos-forwarder/journal.sqlite3",
            "sqlite:////var/lib/workos-forwarder/journal.sqlite3",
        ),
        ("https://api.workos.com", "https://api.workos.com"),
        ("http://host:notaport/", MASK),
    ],
)
def test_mask_url_hides_passwords_and_secret_parameters_and_keeps_the_rest(url: str, shown: str) -> None:
    assert mask_url(url) == shown


# "~Q" first: a password that is also a piece of the URL ("events") would be a false alarm.
PASSWORDS = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=4).map(
    lambda text: f"~Q{text}"
)


@given(password=PASSWORDS)
def test_no_password_survives_masking(password: str) -> None:
    """Any password, written into the URL as a URL must carry it (percent-encoded)."""
    quoted = quote(password, safe="")
    for url in (
        f"postgresql://app:{quoted}@db:5432/events",
        f"postgresql://app@db/events?password={quoted}",
    ):
        for shown in (mask_url(url), scrub(f"connection to {url} failed: bad password {password!r}", url)):
            assert password not in shown and quoted not in shown


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000 while the service starts: it must make its files private on its own."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_directory_and_journal_files_are_private_whatever_the_umask(
    start_service: StartService, tmp_path: Path, permissive_umask: None
) -> None:
    data = tmp_path / "fresh" / "data"
    service = start_service(FORWARDER_DATA_DIR=str(data), JSONL_OUTPUT="off")
    assert service.post(make_event("user.created")).status_code == 200

    assert mode(data) == 0o700
    journal = sorted(data.glob("journal.sqlite3*"))
    assert {path.name for path in journal} >= {"journal.sqlite3", "journal.sqlite3-wal"}
    assert {path.name: mode(path) for path in journal} == {path.name: 0o600 for path in journal}


def test_an_existing_data_directory_readable_by_others_is_reported(
    start_service: StartService, tmp_path: Path
) -> None:
    shared = tmp_path / "svc"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    service = start_service(JSONL_OUTPUT="off")
    assert service.post(make_event("user.created")).status_code == 200

    assert "the data directory is readable by other users" in service.stderr_path.read_text()
    assert mode(shared / "journal.sqlite3") == 0o600


def test_journal_password_is_shown_nowhere(start_service: StartService, tmp_path: Path) -> None:
    """Unreachable journal at start: the error names the URL without its password (either form)."""
    closed = free_port()
    url = f"postgresql://app:hunter2secret@127.0.0.1:{closed}/test?password=hunter2secret&connect_timeout=2"
    service = Service(
        data_dir=tmp_path / "svc", env={"FORWARDER_JOURNAL_URL": url, "WORKOS_WEBHOOK_SECRET": "s"}
    )
    result = service.cli("serve")

    assert result.returncode != 0
    assert "FORWARDER_JOURNAL_URL" in result.stderr
    assert "127.0.0.1" in result.stderr
    assert "hunter2secret" not in result.stderr + result.stdout
