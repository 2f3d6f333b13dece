"""JSON lines: one record per line on stdout or appended to a file.

``JSONL_OUTPUT``: ``stdout`` (default), ``off``, or a file path. A file is opened in append
mode and flushed after each batch, so ``tail -f`` and log shippers see records promptly.

Records are written exactly as stored: the journal's compact JSON has no raw line breaks
(JSON escapes them inside strings), so any content, NUL, emoji and megabytes included, stays
on one line. A stored record that does hold a raw line break between its tokens is
re-encoded compactly; one that cannot be is the only record refused
(``PermanentError(event_ids=...)``), after the rest of the batch is written.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import orjson

from forwarder.config import ConfigError
from sinks.base import EventFilter, PermanentError, Record, RetryableError, run_in_background


class JsonLinesSink:
    name = "jsonl"
    max_batch = 1000

    def __init__(self, output: BinaryIO, events: EventFilter) -> None:
        self._output = output
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
        self._output.write(b"".join(lines))
        self._output.flush()
        return refused

    async def close(self) -> None:
        if self._output is not sys.stdout.buffer:
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
        return JsonLinesSink(sys.stdout.buffer, events)
    try:
        return JsonLinesSink(open(target, "ab"), events)
    except OSError as exc:
        raise ConfigError("JSONL_OUTPUT", f"cannot open {target!r} for appending ({exc.strerror})") from exc
