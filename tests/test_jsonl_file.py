"""The JSON-lines file over its lifetime: torn lines, logrotate, SIGHUP, file mode, a write error."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines() if path.exists() else []


def ids_in(path: Path) -> list[str]:
    return [orjson.loads(line)["workos"]["id"] for line in lines(path) if line.startswith(b'{"')]


def test_a_file_ending_in_a_torn_line_gets_the_next_record_on_a_line_of_its_own(
    start_service: StartService, tmp_path: Path
) -> None:
    """A SIGKILL or a full disk mid-write left half a record: the next one must not be glued to it."""
    output = tmp_path / "svc" / "records.jsonl"
    output.parent.mkdir()
    output.write_bytes(b'{"workos":{"id":"event_whole"}}\n{"workos":{"id":"event_to')
    service = start_service()
    event = make_event("user.created")

    assert service.post(event).status_code == 200

    wait_for(lambda: len(lines(output)) == 3, what="the new record on a third line")
    assert lines(output)[1] == b'{"workos":{"id":"event_to'
    assert orjson.loads(lines(output)[2])["workos"]["id"] == event["id"]


def test_sighup_reopens_the_file_after_logrotate_renamed_it_and_never_stops_the_service(
    start_service: StartService,
) -> None:
    service = start_service()
    before = [make_event("user.created") for _ in range(3)]
    for event in before:
        assert service.post(event).status_code == 200
    wait_for(lambda: len(ids_in(service.jsonl)) == 3, what="3 records in the file")
    rotated = service.jsonl.with_name("records.jsonl.1")
    service.jsonl.rename(rotated)
    assert service.proc is not None

    service.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: service.jsonl.exists(), what="a new file at the configured path")
    after = [make_event("user.updated") for _ in range(3)]
    for event in after:
        assert service.post(event).status_code == 200

    wait_for(lambda: len(ids_in(service.jsonl)) == 3, what="the new records in the new file")
    assert service.proc.poll() is None
    assert ids_in(rotated) == [event["id"] for event in before]
    assert ids_in(service.jsonl) == [event["id"] for event in after]
    assert "reopened the JSON lines file" in service.stderr_path.read_text()


def test_the_file_is_private_whatever_the_umask(start_service: StartService) -> None:
    previous = os.umask(0)
    try:
        service = start_service()
    finally:
        os.umask(previous)
    assert service.post(make_event("user.created")).status_code == 200
    wait_for(lambda: service.jsonl.exists(), what="the JSON lines file")
    assert stat.S_IMODE(service.jsonl.stat().st_mode) == 0o600


WRITE_PAST_A_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from forwarder.normalize import NormalizeOptions, normalize
    from sinks.base import RetryableError
    from sinks.jsonl import create
    from tests.samples import SAMPLES, stored

    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    records = stored([normalize(event, NormalizeOptions()) for event in SAMPLES.values()])

    async def main() -> None:
        sink = create({"JSONL_OUTPUT": path})
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            await sink.send(records)
        except RetryableError as exc:
            print("retryable:", exc.reason)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await sink.send(records)
        await sink.close()

    asyncio.run(main())
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ as on Linux")
def test_a_write_that_fails_half_way_leaves_no_glued_lines(tmp_path: Path) -> None:
    """A real short write (the file size limit, as a full disk would) then a retry: every line parses."""
    output = tmp_path / "records.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_A_FILE_SIZE_LIMIT, str(output), "3000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "retryable:" in done.stdout and "File too large" in done.stdout
    written = lines(output)
    torn = [line for line in written if not line.endswith(b"}")]
    assert len(torn) == 1  # the half record the limit cut, alone on its line
    whole = [orjson.loads(line) for line in written if line.endswith(b"}")]
    assert len(whole) >= 2 and whole[-1]["workos"]["id"]
