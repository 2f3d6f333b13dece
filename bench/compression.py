"""Request bytes against CPU at each gzip level of the Datadog sink: ``python -m bench.compression``.

The Datadog sink gzips every request with zlib-ng (``sinks.http.gzip``) at
``DD_COMPRESSION_LEVEL``. For each level this prints, on the benchmark's records as the
journal stores them (``bench.events`` through ``journal_record``, as ``bench.drain`` fills
its journal), the gzipped bytes per record and the instructions per record callgrind counts,
for requests of 1000 records (a backlog, or 1000 events/s and more: what ``bench.drain``
posts) and of 10 (what gathers in one ``DD_BATCH_LINGER`` second at 10 events/s).

Instructions are counted as ``bench.instructions`` counts them: one process gzips the
requests once, another three times, and the difference is divided by twice the records.
Takes about 15 minutes and needs valgrind.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

import orjson
from zlib_ng import gzip_ng

from bench.events import events
from bench.instructions import VALGRIND
from forwarder.normalize import NormalizeOptions, journal_record

RECORDS = 1000
REQUEST_SIZES = (1000, 10)
LEVELS = range(1, 10)
NOW = 1_796_000_000.0
"""Events dated from a fixed time, so every process gzips the same bytes."""
_COLLECTED = re.compile(r"Collected : (\d+)")


def requests(size: int) -> list[bytes]:
    """``RECORDS`` benchmark records as the sink posts them: JSON arrays of ``size`` records."""
    options = NormalizeOptions()
    records = [
        journal_record(orjson.loads(orjson.dumps(event)), options, delivery="webhook").json
        for event in events(RECORDS, seed=11, now=NOW)
    ]
    return [b"[" + b",".join(records[start : start + size]) + b"]" for start in range(0, RECORDS, size)]


def gzip_rounds(level: int, size: int, rounds: int) -> None:
    bodies = requests(size)
    for _ in range(rounds):
        for body in bodies:
            gzip_ng.compress(body, level)


def instructions_per_record(level: int, size: int) -> float:
    counts = []
    for rounds in (1, 3):
        counted = ["-m", "bench.compression", "--gzip", str(level), str(size), str(rounds)]
        argv = [*VALGRIND, sys.executable, *counted]
        done = subprocess.run(argv, capture_output=True, text=True, check=True)
        counts.append(int(_COLLECTED.findall(done.stderr)[-1]))
    return (counts[1] - counts[0]) / (2 * RECORDS)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compression", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gzip",
        nargs=3,
        type=int,
        metavar=("LEVEL", "SIZE", "ROUNDS"),
        help="(internal) the counted process",
    )
    args = parser.parse_args()
    if args.gzip:
        gzip_rounds(*args.gzip)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    raw = {size: requests(size) for size in REQUEST_SIZES}
    plain = {size: sum(map(len, bodies)) / RECORDS for size, bodies in raw.items()}
    print(f"{plain[REQUEST_SIZES[0]]:,.0f} bytes of JSON per record\n")
    columns = "".join(f" bytes, {size} a request | x smaller | instructions |" for size in REQUEST_SIZES)
    print(f"| level |{columns}\n|---:|" + "---:|---:|---:|" * len(REQUEST_SIZES))
    for level in LEVELS:
        cells = []
        for size, bodies in raw.items():
            gzipped = sum(len(gzip_ng.compress(body, level)) for body in bodies) / RECORDS
            per_record = instructions_per_record(level, size)
            cells.append(f"{gzipped:,.0f} | {plain[size] / gzipped:.1f} | {per_record:,.0f}")
        print(f"| {level} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
