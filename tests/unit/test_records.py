"""Dependencies point one way: the record types and the configuration load no storage."""

from __future__ import annotations

import subprocess
import sys

import pytest

STORAGE = ("forwarder.journal", "forwarder.group_commit", "forwarder.engines")


def loaded_by(module: str) -> set[str]:
    """The project's modules that ``import module`` loads, in a fresh interpreter."""
    script = (
        f"import sys, {module}\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('forwarder', 'sinks')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_record_types_import_nothing_from_the_project() -> None:
    assert loaded_by("forwarder.records") == {"forwarder", "forwarder.records"}


@pytest.mark.parametrize("module", ["forwarder.config", "forwarder.normalize", "sinks.base"])
def test_reading_the_configuration_or_the_sink_contract_loads_no_storage(module: str) -> None:
    assert loaded_by(module).isdisjoint(STORAGE)
