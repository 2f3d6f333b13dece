"""Fill a journal with benchmark events, then (unless ``--fill-only``) drain it to the sinks.

``python -m bench.drain JOURNAL COUNT INTAKE_URL [--fill-only]``: the delivery workload that
``bench.instructions`` counts. Draining goes through the real delivery loops to the Datadog
sink (pointed at ``bench/intake.py``) and the Prometheus sink, as in the service; it ends
when both cursors reach the last event.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson
import uvloop

from bench.events import events
from forwarder.delivery import DeliveryLoop
from forwarder.journal import Journal
from forwarder.normalize import NormalizeOptions, journal_record
from sinks.base import EventFilter, Sink
from sinks.datadog import DatadogSink
from sinks.prometheus import PrometheusSink

_FILL_BATCH = 500


async def fill_and_drain(journal_path: Path, count: int, intake_url: str, *, drain: bool) -> None:
    sinks: list[Sink] = [
        DatadogSink(api_key="bench-api-key", url=intake_url, events=EventFilter(), linger_s=0.01),
        PrometheusSink(EventFilter()),
    ]
    journal = Journal(journal_path)
    await journal.register_sinks(sink.name for sink in sinks)
    options = NormalizeOptions()
    # Through JSON, as a webhook body arrives: the records are decoded, not shared, objects.
    records = [
        journal_record(orjson.loads(orjson.dumps(event)), options, delivery="webhook")
        for event in events(count, seed=11)
    ]
    for start in range(0, count, _FILL_BATCH):
        await journal.append(records[start : start + _FILL_BATCH])
    if drain:
        loops = [DeliveryLoop(sink, journal, max_attempts=5) for sink in sinks]
        tasks = [asyncio.create_task(loop.run()) for loop in loops]
        while any(loop.status.cursor < count for loop in loops):
            await asyncio.sleep(0.01)
        for loop in loops:
            loop.stop()
        await asyncio.gather(*tasks)
    for sink in sinks:
        await sink.close()
    await journal.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.split("\n\n")[0])
    parser.add_argument("journal", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("intake_url")
    parser.add_argument("--fill-only", action="store_true")
    args = parser.parse_args()
    uvloop.run(fill_and_drain(args.journal, args.count, args.intake_url, drain=not args.fill_only))


if __name__ == "__main__":
    main()
