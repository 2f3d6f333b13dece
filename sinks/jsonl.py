"""JSON lines: one record per line on stdout or appended to a file.

``JSONL_OUTPUT``: ``stdout`` (default), ``off``, or a file path. A file is created 0600 (it
holds emails and IP addresses) and written with ``O_APPEND``, a batch at a time, so
``tail -f`` and log shippers see records promptly and ``copytruncate`` is safe. A record
always starts on a line of its own: a file that ends in a torn line (a crash or a full disk
in the middle of a write) gets its line ended before anything else is written. SIGHUP
reopens the file (``reopen``), for logrotate's rename-then-signal.

Records are written exactly as stored: the journal's compact JSON has no raw line breaks
(JSON escapes them inside strings), so any content, NUL, emoji and megabytes included, stays
on one line. A stored record that does hold a raw line break between its tokens is
re-encoded compactly; one that cannot be is the only record refused
(``PermanentError(event_ids=...)``), after the rest of the batch is written.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping, Sequence

import orjson

from sinks.base import ConfigError, EventFilter, PermanentError, Record, RetryableError, run_in_background

logger = logging.getLogger(__name__)


class _Stdout:
    def write(self, payload: bytes) -> None:
        sys.stdout.buffer.write(payload)
        sys.stdout.buffer.flush()

    def reopen(self) -> None:
        return None

    def close(self) -> None:
        return None


class _AppendFile:
    """A file written only at its end, that never leaves the next record on a torn line."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd = self._open()
        self._maybe_torn = True  # whatever wrote it last may have died mid-line

    def _open(self) -> int:
        fd = os.open(self._path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def write(self, payload: bytes) -> None:
        if self._maybe_torn:
            self._end_torn_line()
        self._maybe_torn = True  # until every byte is known written
        view = memoryview(payload)
        while view:
            view = view[os.write(self._fd, view) :]
        self._maybe_torn = False

    def _end_torn_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")
        self._maybe_torn = False

    def reopen(self) -> None:
        """Continue in a new file at the same path (logrotate renamed the old one)."""
        fd = self._open()
        os.close(self._fd)
        self._fd = fd
        self._maybe_torn = True

    def close(self) -> None:
        os.close(self._fd)


class JsonLinesSink:
    name = "jsonl"
    max_batch = 1000

    def __init__(self, output: _Stdout | _AppendFile, events: EventFilter) -> None:
        self._output = output
        self._lock = threading.Lock()  # a reopen never lands in the middle of a batch
        self.events = events

    async def send(self, batch: Sequence[Record]) -> None:
        try:
            refused = await run_in_background(self._write_batch, batch)
        except OSError as exc:
            raise RetryableError(f"{self.name}: cannot write JSON lines: {exc}") from exc
        if refused:
            raise PermanentError(
                f"{self.name}: {len(refused)} record(s) not written; first: {refused[0][1]}",
                event_ids=[event_id for event_id, _ in refused],
            )

    def _write_batch(self, batch: Sequence[Record]) -> list[tuple[str, str]]:
        """Write every record that is one line; return ``(event_id, reason)`` for the others."""
        lines, refused = [], []
        for record in batch:
            try:
                lines.append(_one_line(record.json))
            except (ValueError, TypeError) as exc:  # orjson's errors included
                refused.append(
                    (record.event_id, f"{self.name}: cannot write record {record.event_id}: {exc}")
                )
        with self._lock:
            self._output.write(b"".join(lines))
        return refused

    async def reopen(self) -> None:
        """Reopen the output file (SIGHUP); a failure is logged and the old file kept."""
        try:
            await run_in_background(self._reopen)
        except OSError as exc:
            logger.error(
                "cannot reopen the JSON lines file; still writing the old one", extra={"error": str(exc)}
            )
            return
        logger.info("reopened the JSON lines file", extra={"sink": self.name})

    def _reopen(self) -> None:
        with self._lock:
            self._output.reopen()

    async def close(self) -> None:
        self._output.close()


def _one_line(stored: bytes) -> bytes:
    """The stored JSON plus a newline; re-encoded compactly only if it holds a raw line break."""
    if b"\n" in stored or b"\r" in stored:
        stored = orjson.dumps(orjson.loads(stored))
    return stored + b"\n"


def create(env: Mapping[str, str]) -> JsonLinesSink | None:
    target = env.get("JSONL_OUTPUT", "stdout").strip()
    if target.lower() == "off":
        return None
    events = EventFilter.from_env(env, "JSONL")
    if target.lower() in {"", "stdout", "-"}:
        return JsonLinesSink(_Stdout(), events)
    try:
        return JsonLinesSink(_AppendFile(target), events)
    except OSError as exc:
        raise ConfigError("JSONL_OUTPUT", f"cannot open {target!r} for appending ({exc.strerror})") from exc
