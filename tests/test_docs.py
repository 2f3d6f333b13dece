"""The README is the user's door and docs/ the reference behind it: the walkthrough works, every
variable and command is documented, and every link lands on a page and heading that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
import pytest

from forwarder.cli import main
from tests.service import SECRET, Service, wait_for

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.glob("*.md")])
_VARIABLE = re.compile(r"""["']((?:WORKOS|FORWARDER|JSONL|PROMETHEUS|DD|OTLP|OTEL|SPLUNK)_[A-Z0-9_]+)["']""")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def _variables_in_code() -> set[str]:
    found: set[str] = set()
    for folder in ("forwarder", "sinks"):
        for path in (ROOT / folder).rglob("*.py"):
            found.update(_VARIABLE.findall(path.read_text()))
    return found


def test_every_environment_variable_the_code_reads_is_in_the_configuration_page() -> None:
    variables = _variables_in_code()
    assert "WORKOS_WEBHOOK_SECRET" in variables
    configuration = (DOCS / "configuration.md").read_text()
    missing = sorted(name for name in variables if f"`{name}`" not in configuration)
    assert not missing, f"variables read by the code but not documented in docs/configuration.md: {missing}"


def _commands(group: click.Group, prefix: str) -> list[str]:
    names = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names.extend(_commands(command, f"{prefix} {name}"))
        else:
            names.append(f"{prefix} {name}")
    return names


def test_every_cli_command_is_on_the_command_line_page() -> None:
    cli = (DOCS / "cli.md").read_text()
    missing = [name for name in _commands(main, "workos-forwarder") if f"`{name}" not in cli]
    assert not missing, f"commands not documented in docs/cli.md: {missing}"


def test_the_readme_stays_a_door_not_a_manual() -> None:
    lines = README.count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move the detail to a page in docs/"


def test_the_readme_maps_every_docs_page() -> None:
    unlisted = [page.name for page in DOCS.glob("*.md") if f"(docs/{page.name})" not in README]
    assert not unlisted, f"docs pages missing from README.md's map: {unlisted}"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    prose = _CODE_BLOCK.sub("", text)
    return {_anchor(line.lstrip("#")) for line in prose.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_lands_on_a_page_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in _LINK.findall(_CODE_BLOCK.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_alert_runbook_links_land_on_a_heading() -> None:
    rules = (ROOT / "monitors" / "prometheus" / "workos-forwarder.rules.yml").read_text()
    runbooks = re.findall(r'runbook: "([^"]+)"', rules)
    assert runbooks
    for runbook in runbooks:
        path, _, anchor = runbook.partition("#")
        assert anchor in _anchors((ROOT / path).read_text()), runbook


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
