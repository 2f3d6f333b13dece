"""A thread of its own for a loop's blocking journal calls, cheaper than ``asyncio.to_thread``.

``asyncio.to_thread`` goes through ``concurrent.futures``: a future with its ``Condition``, a
work item, the pool's idle semaphore, and that future chained to an asyncio one, all of it
Python code. Callgrind counted about 130,000 CPU instructions per call (2026-12-07, uvloop),
for journal reads of 15,000-115,000. Here a call is a queue put, the thread's wake-up and one
``call_soon_threadsafe`` back: about 37,000.

The service reads the journal every second whether or not anything happens (the sequence
check, the membership map's refresh): those go through ``PERIODIC_READS``. Each delivery
loop and the detection loop has its own thread for what it does per batch (the lease check,
the read, the evaluation): at a sidecar's rate of a few webhooks a second, a batch holds one
or two records, and two hops per batch and loop were most of what delivering cost.

Calls run one at a time, in order. One that blocks (a journal that does not answer) holds up
the ones behind it; each user awaits its calls one after another anyway.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_STOP = None


class ReadThread:
    """A daemon thread, started on first use, that runs the calls event loops hand it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._started = False
        self._starting = threading.Lock()

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` on the thread; its result, or its exception raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._started:
            self._start()
        self._calls.put((call, future, loop))
        return await future

    def stop(self) -> None:
        """End the thread once the calls queued before are done; a later ``run`` starts another."""
        with self._starting:
            if self._started:
                self._calls.put(_STOP)
                self._started = False

    def _start(self) -> None:
        with self._starting:
            if not self._started:
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
                self._started = True

    def _serve(self) -> None:
        calls = self._calls
        while (item := calls.get()) is not _STOP:
            call, future, loop = item
            try:
                result, error = call(), None
            except BaseException as exc:  # the caller's to handle, as with asyncio.to_thread
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the caller's loop closed: nobody waits any more
                continue


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile (shutdown)
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


PERIODIC_READS = ReadThread("periodic-reads")
"""The thread of the journal reads made on a timer: the sequence check, the membership map's
refresh, the gauges of a ``/metrics`` scrape."""
