"""Does the journal slow down as it fills? ``python -m bench.journal_growth``.

A week of retention at 5 events/s is 3,000,000 records. This builds journals of that size
fast (the journal's own insert, in large transactions with fsync off; no HTTP), with every
record delivered (the sinks' cursors at the head), and then measures what the journal
acknowledges: ``--concurrency`` callers each appending one fresh record at a time through
``Journal.append_one``, the path a webhook takes, with the service's durability
(``synchronous=FULL``). The empty and the full journal are measured in turn, A B A B, so a
change in the machine's speed hits both alike.

Event ids are ``random`` (every insert lands at a random place in the dedup index) or
``ordered`` (ULIDs: a millisecond timestamp first, as WorkOS's ids are).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.events import events, write_requests
from bench.harness.load import loadgen, wrk
from bench.harness.processes import ProcessStats, Server, free_port
from bench.harness.service import SECRET, SERVE_ARGV, WEBHOOK_PATH, accepted, service_env
from forwarder import metrics
from forwarder.detections.consumer import CHECKPOINT_KEY
from forwarder.detections.engine import Engine as DetectionEngine
from forwarder.detections.settings import detection_settings
from forwarder.engines import Engine, SQLiteEngine, engine_for
from forwarder.group_commit import Transaction
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, journal_record
from forwarder.records import NewRecord

SINKS = ("datadog", "prometheus")
"""The sinks ``bench.run`` turns on; their cursors are set to the head of a built journal."""
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BUILD_BATCH = 20_000


def _ulid(ms: int, rng: random.Random) -> str:
    stamp = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
    return f"event_{stamp}{''.join(rng.choices(_CROCKFORD, k=16))}"


def event_ids(kind: str, rng: random.Random, start_ms: int) -> Iterator[str]:
    """Unique ids: ``ordered`` ULIDs from ``start_ms`` (about 5 a millisecond), or ``random``."""
    if kind == "random":
        while True:
            yield f"event_{''.join(rng.choices(_CROCKFORD, k=26))}"
    for n in itertools.count():
        yield _ulid(start_ms + n // 5, rng)


class Records:
    """Real normalized records (the bench's type mix), each given a fresh id of ``kind`` and a
    ``created_at`` from ``clock`` (the dedup key's high bits: ``forwarder.dedup_key``)."""

    def __init__(self, kind: str, seed: int | None, start_ms: int, clock: Callable[[], float]) -> None:
        options = NormalizeOptions()
        self._templates = [
            journal_record(orjson.loads(orjson.dumps(event)), options, delivery="webhook")
            for event in events(500, seed=seed or 1)
        ]
        # No seed: ids unlike any a journal already holds from an earlier run.
        self._ids = event_ids(kind, random.Random(seed if seed is not None else os.urandom(16)), start_ms)
        self._cycle = itertools.cycle(self._templates)
        self._clock = clock

    def next(self) -> NewRecord:
        template = next(self._cycle)
        event_id = next(self._ids)
        body = template.json.replace(template.event_id.encode(), event_id.encode())
        return NewRecord(event_id, template.event_type, self._clock(), body)


def build(url: str, count: int, kind: str) -> None:
    """A journal of ``count`` delivered records, written in large unsynced transactions."""
    engine = engine_for(url)
    journal = Journal(engine)
    asyncio.run(journal.close())
    conn = engine.connect(writer=True)
    if isinstance(engine, SQLiteEngine):
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
    else:
        conn.execute("SET synchronous_commit = off")
    week_ago = time.time() - 7 * 86_400
    built = itertools.count()
    # Created over the week before now, 5 a second, as the records of a week's retention were.
    records = Records(kind, seed=3, start_ms=int(week_ago * 1000), clock=lambda: week_ago + next(built) / 5)
    started = time.monotonic()
    for done in range(0, count, _BUILD_BATCH):
        tx = Transaction(conn, engine.sql)
        tx.execute(engine.begin)
        journal._append(tx, [records.next() for _ in range(min(_BUILD_BATCH, count - done))], None)
        tx.execute("COMMIT")
        if done and done % 500_000 == 0:
            print(f"  {done:,} records, {time.monotonic() - started:.0f} s", flush=True)
    delivered(engine, conn)
    if isinstance(engine, SQLiteEngine):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"built {count:,} {kind} records at {engine.location} in {time.monotonic() - started:.0f} s")


def delivered(engine: Engine, conn: Any) -> None:
    """Every record delivered and evaluated, as in a journal that has run for a week: the
    sinks' cursors and the detection engine's checkpoint at the head (without a checkpoint the
    engine would evaluate the whole journal when the service starts)."""
    (head,) = conn.execute("SELECT MAX(seq) FROM events").fetchone()
    upsert = " ON CONFLICT ({key}) DO UPDATE SET {value} = excluded.{value}"
    for sink in SINKS:
        conn.execute(
            engine.sql(
                "INSERT INTO cursors (sink, seq, updated_at) VALUES (?, ?, ?)"
                + upsert.format(key="sink", value="seq")
            ),
            (sink, head, time.time()),
        )
    settings = detection_settings({})
    assert settings is not None  # the default: detections on
    detections = DetectionEngine(settings.rules, settings.limits, seq=head)
    conn.execute(
        engine.sql(
            "INSERT INTO state (key, value, updated_at) VALUES (?, ?, ?)"
            + upsert.format(key="key", value="value")
        ),
        (CHECKPOINT_KEY, detections.snapshot(), time.time()),
    )


@dataclass
class Sample:
    acked_per_s: float
    commit_ms: float
    events_per_commit: float
    p99_ms: float
    cpu_us: float
    """Process CPU time per acknowledged record (less noisy than the rate on a shared machine)."""
    read_kb: float
    """Bytes read per record (SQLite page cache misses), from ``/proc/self/io``."""
    written_kb: float
    """Bytes written per record (WAL frames and checkpoints); for PostgreSQL, the WAL the server
    wrote (its own process, so ``/proc/self/io`` does not see it)."""


async def measure(engine: Engine, kind: str, seconds: float, concurrency: int) -> Sample:
    """Appends/s of ``concurrency`` callers appending one record each at a time."""
    journal = Journal(engine)
    await journal.register_sinks(SINKS)
    records = Records(kind, seed=None, start_ms=int(time.time() * 1000), clock=time.time)
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    commits = _commits()

    async def caller() -> None:
        while True:
            record = records.next()
            started = time.perf_counter()
            await journal.append_one(record)
            now = time.perf_counter()
            latencies.append(now - started)
            if time.monotonic() > stop:
                return

    wal = _server_wal(engine)
    io, cpu = _io(), time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu
    read, written = (after - before for after, before in zip(_io(), io, strict=True))
    if wal is not None:
        written = _server_wal(engine, since=wal) or 0
    for sink in SINKS:  # delivered, as before: a later run must not start with a backlog
        await journal.set_cursor(sink, journal.stats().head)
    await journal.close()
    acked = len(latencies)
    count, took = (after - before for after, before in zip(_commits(), commits, strict=True))
    latencies.sort()
    return Sample(
        acked_per_s=acked / elapsed,
        commit_ms=took / count * 1000 if count else 0.0,
        events_per_commit=acked / count if count else 0.0,
        p99_ms=latencies[int(acked * 0.99)] * 1000,
        cpu_us=cpu / acked * 1e6,
        read_kb=read / acked / 1024,
        written_kb=written / acked / 1024,
    )


def _io(pid: int | str = "self") -> tuple[int, int]:
    """Bytes process ``pid`` read and wrote through system calls so far."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"]), int(fields["wchar"])


def _server_wal(engine: Engine, since: int | None = None) -> int | None:
    """PostgreSQL's WAL position in bytes (or the bytes written ``since`` one); None for SQLite."""
    if isinstance(engine, SQLiteEngine):
        return None
    conn = engine.connect(writer=False)
    try:
        (position,) = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    finally:
        conn.close()
    return int(position) - (since or 0)


def _commits() -> tuple[float, float]:
    sample = metrics.REGISTRY.get_sample_value
    return (
        sample("workos_forwarder_journal_commit_seconds_count") or 0.0,
        sample("workos_forwarder_journal_commit_seconds_sum") or 0.0,
    )


def _fresh(url: str, synchronous: str) -> Engine:
    """An engine on an empty journal at ``url`` (the file deleted, or the schema's tables dropped)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("events", "cursors", "dead_letters", "state"):
                conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    return engine_for(url, synchronous=synchronous)


def compare(full_url: str, empty_url: str, kind: str, args: argparse.Namespace) -> None:
    """A B A B: the empty and the full journal in turn, ``--rounds`` times."""
    results: dict[str, list[Sample]] = {"empty": [], "full": []}
    for round_ in range(args.rounds):
        for name in ("empty", "full"):
            if name == "empty":
                engine = _fresh(empty_url, args.synchronous)
            else:
                engine = engine_for(full_url, synchronous=args.synchronous)
            sample = uvloop.run(measure(engine, kind, args.seconds, args.concurrency))
            results[name].append(sample)
            print(
                f"{name:5} round {round_ + 1}: {sample.acked_per_s:8,.0f} acked/s, commit"
                f" {sample.commit_ms:5.2f} ms, {sample.events_per_commit:4.1f} events/commit,"
                f" p99 {sample.p99_ms:6.1f} ms; per record: CPU {sample.cpu_us:4.0f} us,"
                f" read {sample.read_kb:5.1f} KB, written {sample.written_kb:5.1f} KB",
                flush=True,
            )
    ratios = [
        full.acked_per_s / empty.acked_per_s
        for empty, full in zip(results["empty"], results["full"], strict=True)
    ]
    print(
        f"{kind} ids: full/empty {', '.join(f'{r:.2f}' for r in ratios)}x"
        f" (median {statistics.median(ratios):.2f}x)"
    )


def serve_compare(full_url: str, args: argparse.Namespace) -> None:
    """The service itself on the empty and the full journal, under wrk, A B A B.

    Beside the rate (which moves with the machine), what the service process did per
    acknowledged webhook: CPU time, and bytes read and written through system calls.
    Those are what grew with the journal, and they hardly move with the machine.
    """
    workdir = Path(args.workdir)
    ratios = []
    for round_ in range(args.rounds):
        rates = {}
        for name in ("empty", "full"):
            url = full_url if name == "full" else f"sqlite:///{workdir}/serve-empty.sqlite3"
            if name == "empty":
                _fresh(url, args.synchronous)
            requests = workdir / f"requests-{round_}-{name}.bin"
            write_requests(
                requests, 20_000 * int(args.seconds), SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH,
                seed=int.from_bytes(os.urandom(3), "big"),
            )  # fmt: skip
            port = free_port()
            env = {
                **service_env(workdir / name, port),
                "FORWARDER_JOURNAL_URL": url,
                "FORWARDER_SQLITE_SYNCHRONOUS": args.synchronous,
            }
            server = Server(f"serve-{name}", SERVE_ARGV, env, workdir / name, port).start("/healthz")
            try:
                before, cpu, acked = (
                    _io(server.pid),
                    ProcessStats(server.pid).cpu_s(),
                    accepted(server),
                )
                result = wrk(
                    server.url + WEBHOOK_PATH,
                    [requests],
                    duration_s=args.seconds,
                    connections=args.concurrency,
                )
                after = _io(server.pid)
                cpu = ProcessStats(server.pid).cpu_s() - cpu
                acked = accepted(server) - acked
            finally:
                server.stop()
                requests.unlink()
            rates[name] = result["ok"] / (result["duration_us"] / 1e6)
            read, written = (a - b for a, b in zip(after, before, strict=True))
            print(
                f"{name:5} round {round_ + 1}: {rates[name]:8,.0f} acked/s, p99"
                f" {result['p99_us'] / 1000:6.1f} ms; per webhook: CPU {cpu / acked * 1e6:4.0f} us,"
                f" read {read / acked / 1024:5.1f} KB, written {written / acked / 1024:5.1f} KB",
                flush=True,
            )
        ratios.append(rates["full"] / rates["empty"])
    print(
        f"service, {args.concurrency} connections: full/empty {', '.join(f'{r:.2f}' for r in ratios)}x"
        f" (median {statistics.median(ratios):.2f}x)"
    )


def _evict(path: Path) -> None:
    """Drop ``path``'s pages from the OS cache, as after a reboot or on a node that had other work."""
    for name in (path, Path(f"{path}-wal")):
        if name.exists():
            fd = os.open(name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cold_start(full_url: str, args: argparse.Namespace) -> None:
    """The service started on a built journal out of the OS cache, at ``--rate`` webhooks/s:
    the p99 of the first ``--seconds``, then of as many more (the steady state)."""
    path = Path(full_url.removeprefix("sqlite:///"))
    workdir = Path(args.workdir)
    requests = workdir / "cold-requests.bin"
    write_requests(
        requests, int(args.rate * args.seconds * 2.2), SECRET, host="127.0.0.1", webhook_path=WEBHOOK_PATH,
        seed=int.from_bytes(os.urandom(3), "big"),
    )  # fmt: skip
    engine = engine_for(full_url)
    conn = engine.connect(writer=True)
    delivered(engine, conn)  # what earlier runs appended: not a backlog to start with
    conn.close()
    os.sync()  # written pages cannot be dropped from the cache
    _evict(path)
    port = free_port()
    env = {
        **service_env(workdir / "cold", port),
        "FORWARDER_JOURNAL_URL": full_url,
        "FORWARDER_SQLITE_SYNCHRONOUS": args.synchronous,
    }
    server = Server("serve-cold", SERVE_ARGV, env, workdir / "cold", port).start("/healthz")
    try:
        phases = [
            loadgen(
                port,
                requests,
                rate=args.rate,
                duration_s=args.seconds / args.split,
                connections=args.concurrency,
            )
            for _ in range(2 * args.split)
        ]
    finally:
        server.stop()
        requests.unlink()
    p99s = [phase["p99_us"] / 1000 for phase in phases]
    # Each phase's p99 stands for its requests: the p99 of a span is at most its phases' highest.
    first, steady = max(p99s[: args.split]), max(p99s[args.split :])
    if args.split > 1:
        print(f"p99 ms of each {args.seconds / args.split:g} s: {' '.join(f'{p:.1f}' for p in p99s)}")
    print(
        f"cold start at {args.rate:g}/s: p99 {first:.1f} ms in the first {args.seconds:g} s,"
        f" {steady:.1f} ms in the next {args.seconds:g} s ({first / steady:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.journal_growth", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="build a journal of COUNT delivered records")
    make.add_argument("url", help="sqlite:///path or postgresql://... (a scratch schema)")
    make.add_argument("count", type=int)
    make.add_argument("--ids", choices=("random", "ordered"), default="random")
    run = sub.add_parser("compare", help="acked/s of an empty and a full journal, A B A B")
    run.add_argument("full", help="the built journal's URL")
    run.add_argument(
        "--empty", help="URL of the empty journal, emptied before each round [a file in --workdir]"
    )
    run.add_argument("--ids", choices=("random", "ordered"), default="random")
    run.add_argument("--seconds", type=float, default=15.0)
    run.add_argument("--concurrency", type=int, default=32)
    run.add_argument("--rounds", type=int, default=2)
    run.add_argument("--synchronous", default="full")
    run.add_argument("--workdir", default="/tmp/journal-growth")
    run.add_argument(
        "--service",
        action="store_true",
        help="measure the service under wrk (SQLite only), not the journal in-process",
    )
    cold = sub.add_parser("coldstart", help="the p99 of a start on a journal out of the OS cache")
    cold.add_argument("full", help="the built journal's URL (sqlite:///...)")
    cold.add_argument("--rate", type=float, default=300.0, help="webhooks/s [300]")
    cold.add_argument("--seconds", type=float, default=20.0, help="seconds of each phase [20]")
    cold.add_argument("--concurrency", type=int, default=32, help="connections [32]")
    cold.add_argument("--split", type=int, default=1, help="measure each phase in N parts, to see when [1]")
    cold.add_argument("--synchronous", default="full")
    cold.add_argument("--workdir", default="/tmp/journal-growth")
    args = parser.parse_args()
    if args.command == "coldstart":
        os.makedirs(args.workdir, exist_ok=True)
        cold_start(args.full, args)
        return
    if args.command == "build":
        build(args.url, args.count, args.ids)
        return
    os.makedirs(args.workdir, exist_ok=True)
    if args.service:
        serve_compare(args.full, args)
        return
    compare(args.full, args.empty or f"sqlite:///{args.workdir}/empty.sqlite3", args.ids, args)


if __name__ == "__main__":
    main()
