"""``forwarder.read_thread``: a loop's blocking calls on a thread of its own, in order, and the
thread ends with its user (a delivery loop's, when the loop returns)."""

from __future__ import annotations

import asyncio
import functools
import threading
from pathlib import Path

import pytest

from forwarder.journal import Journal
from forwarder.read_thread import ReadThread
from tests.unit.test_delivery_loop import ScriptedSink, delivery_loop, ids, records, running, wait_until


def _threads(name: str) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == name]


async def _gone(name: str) -> None:
    await wait_until(lambda: not _threads(name), f"thread {name} to end")


async def test_calls_run_in_order_on_the_named_thread_and_answer_their_result() -> None:
    reads = ReadThread("test-reads")
    seen: list[tuple[int, str]] = []

    def call(number: int) -> int:
        seen.append((number, threading.current_thread().name))
        return number * 10

    answers = [await reads.run(functools.partial(call, n)) for n in range(5)]

    assert answers == [0, 10, 20, 30, 40]
    assert seen == [(n, "test-reads") for n in range(5)]
    reads.stop()
    await _gone("test-reads")


async def test_an_exception_is_raised_in_the_caller_and_the_thread_serves_on() -> None:
    reads = ReadThread("test-raises")

    def fail() -> None:
        raise LookupError("no such record")

    with pytest.raises(LookupError, match="no such record"):
        await reads.run(fail)
    assert await reads.run(lambda: "still here") == "still here"
    reads.stop()
    await _gone("test-raises")


async def test_stop_lets_queued_calls_finish_and_a_later_call_starts_a_new_thread() -> None:
    reads = ReadThread("test-restart")
    release = threading.Event()
    task = asyncio.ensure_future(reads.run(functools.partial(release.wait, 5)))
    await asyncio.sleep(0.01)
    reads.stop()  # queued behind the call in progress: that call still answers
    release.set()
    assert await task is True
    await _gone("test-restart")

    assert await reads.run(lambda: threading.current_thread().name) == "test-restart"
    reads.stop()
    await _gone("test-restart")


async def test_a_delivery_loop_reads_on_its_own_thread_which_ends_with_the_loop(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks(["scripted"])
    try:
        sink = ScriptedSink()
        loop = delivery_loop(sink, journal)
        await journal.append(records(3))
        async with running(loop):
            await wait_until(lambda: len(sink.delivered) == 3, "3 records delivered")
            assert len(_threads("delivery-scripted")) == 1
        assert sink.delivered == ids(3)
        await _gone("delivery-scripted")
    finally:
        await journal.close()
