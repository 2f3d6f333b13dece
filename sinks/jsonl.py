"""JSON lines: one record per line on stdout or appended to a file.

``JSONL_OUTPUT``: ``stdout`` (default), ``off``, or a file path. A file is opened in append
mode and flushed after each batch, so ``tail -f`` and log shippers see records promptly.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import BinaryIO

from forwarder.config import ConfigError
from sinks.base import EventFilter, Record, RetryableError, run_in_background


class JsonLinesSink:
    name = "jsonl"
    max_batch = 1000

    def __init__(self, output: BinaryIO, events: EventFilter) -> None:
        self._output = output
        self.events = events

    async def send(self, batch: Sequence[Record]) -> None:
        payload = b"".join(record.json + b"\n" for record in batch)
        try:
            await run_in_background(self._write, payload)
        except OSError as exc:
            raise RetryableError(f"cannot write JSON lines: {exc}") from exc

    def _write(self, payload: bytes) -> None:
        self._output.write(payload)
        self._output.flush()

    async def close(self) -> None:
        if self._output is not sys.stdout.buffer:
            self._output.close()


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
