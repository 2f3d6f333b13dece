"""The project's WorkOS Events API emulator, as a process the benchmark can pin to a core.

``python -m bench.events_api COUNT`` publishes COUNT events (created over the last few
minutes, the emulator's usual type mix) and prints ``<url> <oldest created_at>`` once it
listens; it serves until terminated. The emulator itself is ``tests/doubles/workos_api.py``.
"""

from __future__ import annotations

import sys
import threading

from tests.doubles.workos_api import WorkOSEventsAPI, api_events


def main() -> None:
    events = api_events(int(sys.argv[1]), spacing_s=0.002)
    api = WorkOSEventsAPI().start()
    api.add(events)
    print(api.url, events[0]["created_at"], flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
