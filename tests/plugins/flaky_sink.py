"""A third-party sink, installed only by PYTHONPATH, that fails on command.

It proves two things: a sink shipped outside this repository is discovered through the
``workos_forwarder.sinks`` entry point, and a failing sink does not hold the others back.
Its behaviour is read from the file named by ``FLAKY_SINK_CONTROL`` on every send:
``ok``, ``retryable`` or ``permanent``; or, as a bug in a sink would, ``crash`` (KeyError),
``cancel`` (a CancelledError nobody asked for), ``hang`` (never returns) and ``poison ID``
(ValueError for any batch holding event ID). Delivered event ids are appended to
``FLAKY_SINK_OUT``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from sinks.base import EventFilter, PermanentError, Record, RetryableError


class FlakySink:
    name = "flaky"
    max_batch = 100
    send_timeout_s = 1.0

    def __init__(self, control: Path, out: Path) -> None:
        self.events = EventFilter()
        self._control = control
        self._out = out

    async def send(self, batch: Sequence[Record]) -> None:
        mode = self._control.read_text().strip() if self._control.exists() else "ok"
        if mode == "retryable":
            raise RetryableError("flaky sink told to fail (retryable)")
        if mode == "permanent":
            raise PermanentError("flaky sink told to reject everything")
        if mode == "crash":
            raise KeyError("flaky sink told to crash")
        if mode == "cancel":
            raise asyncio.CancelledError("flaky sink leaked a cancellation")
        if mode == "hang":
            await asyncio.Event().wait()
        if mode.startswith("poison ") and any(record.event_id == mode.split()[1] for record in batch):
            raise ValueError(f"flaky sink cannot take {mode.split()[1]}")
        with self._out.open("a") as out:
            out.writelines(record.event_id + "\n" for record in batch)

    async def close(self) -> None:
        return None


def create(env: Mapping[str, str]) -> FlakySink | None:
    control = env.get("FLAKY_SINK_CONTROL")
    if not control:
        return None
    return FlakySink(Path(control), Path(env["FLAKY_SINK_OUT"]))
