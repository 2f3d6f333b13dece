"""One thread for the journal reads the service makes on a timer, cheaper than ``asyncio.to_thread``.

``asyncio.to_thread`` goes through ``concurrent.futures``: a future with its ``Condition``, a
work item, the pool's idle semaphore, and that future chained to an asyncio one, all of it
Python code. Callgrind counted about 130,000 CPU instructions per call (2026-12-07, uvloop),
for journal reads of 15,000-115,000. The service reads the journal every second whether or not
anything happens (the sequence check, the membership map's refresh), so those hops were most
of what it did at rest. Here a call is a queue put, the thread's wake-up and one
``call_soon_threadsafe`` back: about 37,000.

Calls run one at a time, in order: it is for short reads on a timer. One that blocks (a
journal that does not answer) holds up the ones behind it, which would wait on the same
journal anyway; the webhook and delivery paths do not use it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Call = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class ReadThread:
    """A daemon thread, started on first use, that runs the calls event loops hand it."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
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

    def _start(self) -> None:
        with self._starting:
            if not self._started:
                threading.Thread(target=self._serve, name=self._name, daemon=True).start()
                self._started = True

    def _serve(self) -> None:
        calls = self._calls
        while True:
            call, future, loop = calls.get()
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
