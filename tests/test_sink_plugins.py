"""Sink plugins are checked when they load, and a plugin that keeps failing is seen.

Each plugin here is installed the way a package installs one: a module and a ``.dist-info``
with its ``workos_forwarder.sinks`` entry point, put on ``PYTHONPATH`` for the real service.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.samples import make_event
from tests.service import SECRET, Service, wait_for

StartService = Callable[..., Service]

BROKEN = {
    "no_close": ("close", "    async def send(self, batch): return None\n"),
    "no_send": ("send", "    async def close(self): return None\n"),
    "no_events": (
        "events",
        "    async def send(self, batch): return None\n    async def close(self): return None\n",
    ),
}


def install_plugin(root: Path, name: str, module_source: str) -> dict[str, str]:
    """A plugin package ``{name}_plugin`` with entry point ``{name} = {name}_sink:create``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_sink.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[workos_forwarder.sinks]\n{name} = {name}_sink:create\n")
    python_path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": python_path}


def broken_plugin(root: Path, missing: str) -> dict[str, str]:
    _, methods = BROKEN[missing]
    events = "" if missing == "no_events" else "    events = EventFilter()\n"
    source = (
        "from sinks.base import EventFilter\n\n"
        "class Broken:\n    name = 'broken'\n    max_batch = 10\n"
        f"{events}{methods}\n"
        "def create(env):\n    return Broken()\n"
    )
    return install_plugin(root, "broken", source)


def run_cli(env: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "WORKOS_WEBHOOK_SECRET": SECRET,
        "FORWARDER_DATA_DIR": str(tmp_path / "data"),
        "FORWARDER_PORT": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "forwarder.cli", *args], env=full, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", sorted(BROKEN))
@pytest.mark.parametrize("command", [("serve", "--check-config"), ("serve",)])
def test_a_plugin_that_breaks_the_contract_is_refused_at_start_naming_it(
    tmp_path: Path, missing: str, command: tuple[str, ...]
) -> None:
    env = broken_plugin(tmp_path / "plugins", missing)
    done = run_cli(env, tmp_path, *command)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    member = BROKEN[missing][0]
    for named in ("'broken'", "broken_sink:create", f"'{member}'"):
        assert named in done.stderr, done.stderr


def test_doctor_reports_a_broken_plugin_as_a_failed_check_without_a_traceback(tmp_path: Path) -> None:
    env = broken_plugin(tmp_path / "plugins", "no_close")
    done = run_cli(env, tmp_path, "doctor", "--json")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (configuration,) = [item for item in json.loads(done.stdout) if item["check"] == "configuration"]
    assert configuration["status"] == "FAIL"
    assert "broken_sink:create" in configuration["detail"] and "'close'" in configuration["detail"]


def test_a_plugin_whose_factory_raises_is_refused_with_its_error(tmp_path: Path) -> None:
    env = install_plugin(tmp_path / "plugins", "boom", "def create(env):\n    raise KeyError('BOOM_URL')\n")
    done = run_cli(env, tmp_path, "serve", "--check-config")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "boom_sink:create" in done.stderr and "KeyError" in done.stderr


CRASHING = """
from sinks.base import EventFilter


class ExplodingFilter(EventFilter):
    @property
    def matches_everything(self):
        return False

    def matches(self, event_type):
        raise RuntimeError("the plugin's filter is broken")


class Crashing:
    name = "crashing"
    max_batch = 10
    events = ExplodingFilter()

    async def send(self, batch):
        return None

    async def close(self):
        return None


def create(env):
    return Crashing()
"""


def test_a_plugin_that_keeps_failing_shows_on_status_and_counts_task_restarts(
    start_service: StartService, tmp_path: Path
) -> None:
    """Its delivery loop fails outside ``send``: the supervisor restarts it, /status shows the
    restarts and the reason, and workos_forwarder_task_restarts_total{task="delivery:crashing"}
    grows, which is what WorkOSForwarderTaskRestarting fires on (monitors/prometheus/tests)."""
    service = start_service(**install_plugin(tmp_path / "plugins", "crashing", CRASHING))
    assert service.post(make_event("user.created")).status_code == 200

    def restarted() -> bool:
        return service.status()["tasks"]["delivery:crashing"]["restarts"] >= 2

    wait_for(restarted, timeout=30, what="the plugin's loop to be restarted")
    task = service.status()["tasks"]["delivery:crashing"]
    assert "the plugin's filter is broken" in task["last_error"]
    assert service.status()["sinks"]["crashing"]["healthy"] is False
    assert service.metric("workos_forwarder_task_restarts_total", task="delivery:crashing") >= 2
    assert service.record_ids()  # the other sinks go on
