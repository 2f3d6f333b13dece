"""The delivery loop against a scripted sink, on a real journal: every outcome a sink can give.

``ScriptedSink`` is a test double of a destination: a real object implementing the sink
protocol of ``sinks.base`` that answers each ``send`` as its script says (deliver, raise,
hang), then delivers; records whose id is in ``poison`` fail every batch they are in.
Backoff is capped at 10 ms, so the retry paths run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import pytest

from forwarder.delivery import DeliveryLoop
from forwarder.engines import engine_for
from forwarder.journal import Journal
from forwarder.records import NewRecord
from sinks.base import EventFilter, PermanentError, Record, RetryableError, Sink
from tests.postgres import SERVER, journal_schema_or_skip

HANG = "hang"
"""A script step: ``send`` never returns by itself (the loop's send timeout must end it)."""
Step = BaseException | asyncio.Event | str
"""Raise the exception; wait for the event, then deliver; ``HANG``."""


class ScriptedSink:
    def __init__(
        self,
        *,
        script: Sequence[Step] = (),
        poison: Sequence[str] = (),
        max_batch: int = 100,
        send_timeout_s: float = 5.0,
    ) -> None:
        self.name = "scripted"
        self.events = EventFilter()
        self.max_batch = max_batch
        self.linger_s = 0.0
        self.send_timeout_s = send_timeout_s
        self.script = list(script)
        self.poison = set(poison)
        self.calls: list[tuple[float, list[str]]] = []
        """(monotonic time, event ids) of every ``send``."""
        self.delivered: list[str] = []
        self.abandoned = 0

    async def send(self, batch: Sequence[Record]) -> None:
        ids = [record.event_id for record in batch]
        self.calls.append((time.monotonic(), ids))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, PermanentError) and step.event_ids is not None:
            self.delivered += [event_id for event_id in ids if event_id not in step.event_ids]
            raise step
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, asyncio.Event):
            await step.wait()
        if step == HANG:
            try:
                await asyncio.Event().wait()
            finally:
                self.abandoned += 1
        refused = [event_id for event_id in ids if event_id in self.poison]
        if refused:
            raise PermanentError(f"cannot take {refused[0]}")
        self.delivered += ids

    async def close(self) -> None:
        return None


_RECORD = b'{"date":"2026-01-02T03:04:05+00:00","source":"workos"}'


def records(count: int, *, start: int = 0) -> list[NewRecord]:
    """Records as normalization stores them: replays read the time from the record's ``date``."""
    return [NewRecord(f"event_{i:04d}", "user.created", None, _RECORD) for i in range(start, start + count)]


def gaps(sink: ScriptedSink) -> list[float]:
    """Seconds between consecutive sends."""
    times = [at for at, _ in sink.calls]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(loop: DeliveryLoop) -> AsyncIterator[None]:
    """The loop runs inside the block; it is stopped (and has drained) after it."""
    task = asyncio.create_task(loop.run())
    try:
        yield
    finally:
        loop.stop()
        await asyncio.wait_for(task, 10)


def delivery_loop(sink: Sink, journal: Journal, *, max_attempts: int = 3, **options: float) -> DeliveryLoop:
    options = {"poll_interval_s": 0.01, "backoff_cap_s": 0.01, "max_retry_after_s": 0.3, **options}
    return DeliveryLoop(sink, journal, max_attempts=max_attempts, **options)  # type: ignore[arg-type]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    journal = Journal(tmp_path / "journal.sqlite3")
    await journal.register_sinks(["scripted"])
    yield journal
    await journal.close()


def ids(count: int, *, start: int = 0) -> list[str]:
    return [record.event_id for record in records(count, start=start)]


async def test_every_record_is_delivered_once_in_order_and_the_cursor_saved(journal: Journal) -> None:
    sink = ScriptedSink(max_batch=100)
    loop = delivery_loop(sink, journal)
    await journal.append(records(250))

    async with running(loop):
        await wait_until(lambda: len(sink.delivered) == 250, "250 records delivered")

    assert sink.delivered == ids(250)
    assert [len(batch) for _, batch in sink.calls] == [100, 100, 50]
    last = journal.read_after(0, 1000)[-1].seq
    assert journal.cursors() == {"scripted": last}
    assert (loop.status.role, loop.status.cursor, loop.status.healthy) == ("active", last, True)


async def test_a_retryable_error_is_retried_until_it_succeeds_and_nothing_is_lost(journal: Journal) -> None:
    sink = ScriptedSink(script=[RetryableError("503 from intake"), RetryableError("503 from intake")])
    loop = delivery_loop(sink, journal)
    await journal.append(records(5))

    async with running(loop):
        await wait_until(lambda: len(sink.delivered) == 5, "the batch delivered")

    assert [batch for _, batch in sink.calls] == [ids(5)] * 3  # the same batch, nothing dropped
    assert journal.dead_letters() == []
    assert loop.status.last_error == "503 from intake"
    assert (loop.status.healthy, loop.status.failing_since) == (True, None)


async def test_retry_after_is_honoured_up_to_the_cap(journal: Journal) -> None:
    sink = ScriptedSink(
        script=[RetryableError("429", retry_after=0.2), RetryableError("429", retry_after=86_400)]
    )
    loop = delivery_loop(sink, journal, max_retry_after_s=0.3)
    await journal.append(records(1))

    async with running(loop):
        await wait_until(lambda: len(sink.delivered) == 1, "the record delivered", timeout_s=3)

    asked, capped = gaps(sink)
    assert asked >= 0.19  # timers may fire a hair early
    assert 0.29 <= capped < 1.5  # a day was asked for; the cap (0.3 s) applies


async def test_an_unhealthy_error_marks_the_sink_unhealthy_until_a_send_succeeds(journal: Journal) -> None:
    gate = asyncio.Event()
    sink = ScriptedSink(script=[RetryableError("403: check DD_API_KEY", unhealthy=True), gate])
    loop = delivery_loop(sink, journal)
    await journal.append(records(2))

    async with running(loop):
        await wait_until(lambda: len(sink.calls) == 2, "the retry")
        assert not loop.status.healthy
        assert "DD_API_KEY" in (loop.status.last_error or "")
        gate.set()
        await wait_until(lambda: len(sink.delivered) == 2, "the batch delivered")

    assert loop.status.healthy
    assert loop.status.last_success_at is not None


async def test_a_record_the_sink_cannot_take_is_isolated_and_the_others_delivered(journal: Journal) -> None:
    sink = ScriptedSink(poison=["event_0005"])
    loop = delivery_loop(sink, journal, max_attempts=3)
    await journal.append(records(10))

    async with running(loop):
        await wait_until(lambda: journal.dead_letter_counts() == {"scripted": 1}, "one dead letter")
        await wait_until(lambda: len(sink.delivered) == 9, "the other nine delivered")

    # A PermanentError says retrying will not help: the batch is halved at once, not retried.
    assert [batch for _, batch in sink.calls[:3]] == [ids(10), ids(5), ids(5, start=5)]
    assert sorted(sink.delivered) == [event_id for event_id in ids(10) if event_id != "event_0005"]
    (letter,) = journal.dead_letters()
    assert (letter.event_id, letter.reason, letter.attempts) == ("event_0005", "cannot take event_0005", 1)


async def test_a_batch_a_buggy_sink_fails_is_retried_before_it_is_halved(journal: Journal) -> None:
    sink = ScriptedSink(
        script=[KeyError("a bug"), KeyError("a bug"), KeyError("a bug")], poison=["event_0002"]
    )
    loop = delivery_loop(sink, journal, max_attempts=3)
    await journal.append(records(4))

    async with running(loop):
        await wait_until(lambda: journal.dead_letter_counts() == {"scripted": 1}, "one dead letter")
        await wait_until(lambda: len(sink.delivered) == 3, "the other three delivered")

    assert [batch for _, batch in sink.calls[:3]] == [ids(4)] * 3  # max_attempts of the whole batch
    assert journal.cursors() == {"scripted": journal.read_after(0, 100)[-1].seq}  # not held back


async def test_records_the_sink_names_go_straight_to_dead_letters(journal: Journal) -> None:
    refused = PermanentError("413: record too large", event_ids=["event_0001", "event_0003"])
    sink = ScriptedSink(script=[refused])
    loop = delivery_loop(sink, journal)
    await journal.append(records(5))

    async with running(loop):
        await wait_until(lambda: journal.dead_letter_counts() == {"scripted": 2}, "two dead letters")

    assert len(sink.calls) == 1  # no retry: the sink isolated them itself
    assert sink.delivered == ["event_0000", "event_0002", "event_0004"]
    assert [(d.event_id, d.reason, d.attempts) for d in journal.dead_letters()] == [
        ("event_0001", "413: record too large", 1),
        ("event_0003", "413: record too large", 1),
    ]


async def test_a_sink_that_raises_an_unexpected_error_is_retried(journal: Journal) -> None:
    sink = ScriptedSink(script=[KeyError("a bug in the sink")])
    loop = delivery_loop(sink, journal)
    await journal.append(records(3))

    async with running(loop):
        await wait_until(lambda: len(sink.delivered) == 3, "the batch delivered")

    assert len(sink.calls) == 2
    assert journal.dead_letters() == []
    assert loop.status.last_error == "KeyError: 'a bug in the sink'"


async def test_a_crash_reported_by_the_supervisor_is_red_until_a_send_succeeds(journal: Journal) -> None:
    sink = ScriptedSink()
    loop = delivery_loop(sink, journal)

    loop.crashed("InjectedFault: delivery.loop")

    assert not loop.status.healthy
    assert loop.status.last_error == "delivery loop failed: InjectedFault: delivery.loop"
    await journal.append(records(1))
    async with running(loop):
        await wait_until(lambda: loop.status.healthy, "healthy after a send")


async def test_a_send_that_hangs_is_abandoned_at_its_timeout_and_retried(journal: Journal) -> None:
    sink = ScriptedSink(script=[HANG], send_timeout_s=0.2)
    loop = delivery_loop(sink, journal)
    await journal.append(records(2))

    async with running(loop):
        await wait_until(lambda: len(sink.delivered) == 2, "the batch delivered")

    assert sink.abandoned == 1
    assert gaps(sink)[0] >= 0.19
    assert loop.status.last_error == "scripted: send did not finish within 0.2 s"
    assert sink.delivered == ids(2)  # once: the abandoned send delivered nothing


async def test_a_replay_goes_through_the_same_retries_and_leaves_the_dead_letters(journal: Journal) -> None:
    sink = ScriptedSink(poison=["event_0002"])
    loop = delivery_loop(sink, journal, max_attempts=1)
    await journal.append(records(4))

    async with running(loop):
        await wait_until(lambda: journal.dead_letter_counts() == {"scripted": 1}, "a dead letter")
        sink.poison.clear()  # the operator fixed the cause
        sink.script = [RetryableError("503 from intake")]  # and the destination hiccups once
        assert await journal.request_replay(sink="scripted") == 1
        await wait_until(lambda: journal.dead_letter_counts() == {}, "the dead letter replayed")

    replays = [batch for _, batch in sink.calls if batch == ["event_0002"]]
    assert len(replays) == 3  # dead-lettered alone, then the replay retried, not dead-lettered again
    assert sorted(sink.delivered) == ids(4)


async def test_a_replay_that_fails_again_stays_dead_with_its_new_reason(journal: Journal) -> None:
    sink = ScriptedSink(poison=["event_0000"])
    loop = delivery_loop(sink, journal, max_attempts=1)
    await journal.append(records(1))

    async with running(loop):
        await wait_until(lambda: journal.dead_letter_counts() == {"scripted": 1}, "a dead letter")
        sink.poison.clear()
        sink.script = [PermanentError("400: still invalid", event_ids=["event_0000"])]
        await journal.request_replay(sink="scripted")
        await wait_until(lambda: journal.dead_letters(state="dead") != [], "dead again")
        await wait_until(lambda: journal.dead_letters()[0].reason == "400: still invalid", "the reason")

    (letter,) = journal.dead_letters()
    assert (letter.state, letter.attempts) == ("dead", 2)
    assert sink.delivered == []


# -- leases: two replicas on one PostgreSQL journal ------------------------------------------


@pytest.fixture
def pg_url() -> Iterator[tuple[str, str]]:
    with journal_schema_or_skip("forwarder_unit") as found:
        yield found


def terminate_lease_session(schema: str, sink: str) -> None:
    """End the PostgreSQL session holding ``sink``'s delivery lease (as a network cut would)."""
    with psycopg.connect(SERVER, autocommit=True) as admin:
        # The lease is a session advisory lock on a bigint key: pg_locks splits it in two halves.
        pids = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint)"
            " = hashtext(current_database() || '/' || %s || '/' || %s)::bigint",
            (schema, f"sink/{sink}"),
        ).fetchall()
    assert pids == [(True,)], pids


async def test_a_replica_that_loses_its_lease_stands_by_and_the_other_takes_over_at_the_cursor(
    pg_url: tuple[str, str],
) -> None:
    url, schema = pg_url
    first_journal, second_journal = Journal(engine_for(url)), Journal(engine_for(url))
    await first_journal.register_sinks(["scripted"])
    first_sink, second_sink = ScriptedSink(), ScriptedSink()
    first = delivery_loop(first_sink, first_journal, poll_interval_s=5.0)
    try:
        async with running(first):
            await first_journal.append(records(5))
            await wait_until(lambda: len(first_sink.delivered) == 5, "the first replica delivering")
            await wait_until(lambda: first_journal.cursors()["scripted"] > 0, "its cursor saved")

            terminate_lease_session(schema, "scripted")
            other = None
            deadline = time.monotonic() + 5
            while other is None and time.monotonic() < deadline:  # free once the session has ended
                other = second_journal.claim("scripted")
            assert other is not None, "the lease was not freed by ending its session"
            await first_journal.append(records(5, start=5))
            await wait_until(lambda: first.status.role == "standby", "the first replica standing by")

            assert first_sink.delivered == ids(5)  # nothing sent without the lease
            other.release()
            second = delivery_loop(second_sink, second_journal)
            async with running(second):
                await wait_until(lambda: len(second_sink.delivered) == 5, "the second replica delivering")
    finally:
        await first_journal.close()
        await second_journal.close()

    assert second_sink.delivered == ids(5, start=5)  # from the saved cursor: nothing twice
    assert second.status.role == "active"
