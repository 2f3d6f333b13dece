"""The README is the user's door: its walkthrough works and it documents every variable and command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click

from forwarder.cli import main
from tests.service import SECRET, Service, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
_VARIABLE = re.compile(r"""["']((?:WORKOS|FORWARDER|JSONL|PROMETHEUS|DD|OTLP|OTEL)_[A-Z0-9_]+)["']""")


def _variables_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("forwarder", "sinks"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(_VARIABLE.findall(path.read_text()))
    return found


def test_every_environment_variable_the_code_reads_is_in_the_readme() -> None:
    variables = _variables_in_code()
    assert "WORKOS_WEBHOOK_SECRET" in variables
    missing = sorted(name for name in variables if f"`{name}`" not in README)
    assert not missing, f"variables read by the code but not documented in README.md: {missing}"


def _commands(group: click.Group, prefix: str) -> list[str]:
    names = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names.extend(_commands(command, f"{prefix} {name}"))
        else:
            names.append(f"{prefix} {name}")
    return names


def test_every_cli_command_is_in_the_readme() -> None:
    missing = [name for name in _commands(main, "workos-forwarder") if f"`{name}" not in README]
    assert not missing, f"commands not documented in README.md: {missing}"


def test_the_walkthrough_event_flows_through(start_service: Callable[..., Service], tmp_path: Path) -> None:
    service = start_service()
    event_json = re.search(r"cat > event.json <<'JSON'\n(.*?)\nJSON\n", README, re.S)
    assert event_json, "the walkthrough's event.json is gone from README.md"
    event_file = tmp_path / "event.json"
    event_file.write_text(event_json.group(1))
    env = {**os.environ, "WORKOS_WEBHOOK_SECRET": SECRET, "FORWARDER_PORT": str(service.port)}

    signed = subprocess.run(
        [sys.executable, "-m", "forwarder.cli", "sign", str(event_file)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    curl = subprocess.run(
        signed.stdout.strip().splitlines()[-1], shell=True, capture_output=True, text=True, timeout=10
    )

    assert '"status":"accepted"' in curl.stdout, curl.stdout + curl.stderr
    (record,) = wait_for(service.records, what="the walkthrough record")
    assert record["message"] == (
        "authentication.password_failed for ana@example.com from 203.0.113.7: invalid_credentials"
    )
    assert (
        service.metric(
            "workos_events_total",
            category="authentication",
            event="authentication.password_failed",
            outcome="failure",
        )
        == 1
    )
