"""The two load generators, pinned to the load core.

``wrk`` is closed loop (the next request goes when an answer comes: the most a server
does); ``bench/loadgen.py`` is open loop (requests released at a fixed rate: latency as a
client sees it). Both send pre-signed requests from ``bench/events.py`` and print one
``BENCH {json}`` line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.harness.processes import LOAD_CORE, ROOT

BENCH = ROOT / "bench"


def bench_line(output: str) -> dict[str, Any]:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return orjson.loads(line[len("BENCH ") :])
    raise RuntimeError(f"no BENCH line in output:\n{output}")


def wrk(url: str, files: list[Path], *, duration_s: float, connections: int) -> dict[str, Any]:
    argv = [
        "taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration_s:g}s",
        "--timeout", "10s", "-s", str(BENCH / "webhooks.lua"), url, "--", *map(str, files),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    result = bench_line(done.stdout)
    result["rate"] = result["requests"] / (result["duration_us"] / 1e6)
    result["ok"] = result["requests"] - result["non_2xx"]
    return result


def loadgen(
    port: int, file: Path, *, rate: float, duration_s: float, connections: int, grace_s: float = 30.0
) -> dict[str, Any]:
    argv = [
        "taskset", "-c", LOAD_CORE, sys.executable, "-m", "bench.loadgen", str(file),
        "--port", str(port), "--rate", f"{rate:g}", "--duration", f"{duration_s:g}",
        "--connections", str(connections), "--grace", f"{grace_s:g}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return bench_line(done.stdout)
