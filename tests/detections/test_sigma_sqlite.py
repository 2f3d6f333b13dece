"""The engine against pySigma's SQLite backend: the same Sigma files, the same recorded events,
the same groups.

pySigma's SQLite backend (``pysigma-backend-sqlite``) compiles a correlation into SQL over
sliding windows, one row per window in which the condition holds. Each recorded set is
loaded into an in-memory SQLite table of normalized records, every shipped correlation
is run, and the groups with at least one row must be exactly the groups the engine fired
for (once each). The engine is not consulted to build the SQL: the files are converted
straight from ``monitors/sigma``.

Credential stuffing's ``also_required`` thresholds are a forwarder attribute SQL does not
know: each becomes a correlation of its own (the same rules, group and timespan), and a
window counts only where all of them hold (the same anchor event, as the engine requires).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

from forwarder.detections.engine import Engine
from forwarder.detections.matching import value_at
from forwarder.detections.rules import SHIPPED_RULES
from forwarder.detections.settings import detection_settings
from tests.detections.fixtures import SIGMA_RULES, Firing, entries, files, firing_key, load

COLUMNS = ("evt.name", "evt.outcome", "evt.category", "usr.email", "network.client.ip")


def rule_documents(name: str) -> list[dict[str, Any]]:
    """The YAML of rule ``name`` and of every rule it uses, from the shipped files by name."""
    document = yaml.safe_load((SHIPPED_RULES / f"{name}.yml").read_text())
    documents = [document]
    for used in document.get("correlation", {}).get("rules", []):
        documents += rule_documents(used)
    return documents


def queries(name: str) -> list[str]:
    """SQL for correlation ``name``: one query, or one per threshold (``also_required``)."""
    documents = rule_documents(name)
    root, used = documents[0], documents[1:]
    variants = [root]
    for number, extra in enumerate(root.pop("also_required", [])):
        variant = {**root, "name": f"{name}_also_{number}", "id": None}
        variant.pop("id")
        variant["correlation"] = {
            **root["correlation"],
            "type": extra["type"],
            "condition": extra["condition"],
        }
        variants.append(variant)
    sql = []
    for variant in variants:
        backend = sqliteBackend(
            timestamp_field="timestamp", timestamp_format="unix", event_id_field="event_id"
        )
        converted = backend.convert(SigmaCollection.from_dicts([variant, *used]))
        assert len(converted) == 1, converted
        sql.append(converted[0])
    return sql


QUERIES = {name: queries(name) for name in SIGMA_RULES}


def sqlite_groups(document: dict[str, Any]) -> list[Firing]:
    """(rule, group) for every group with a window where the rule holds, per pySigma's SQL."""
    db = sqlite3.connect(":memory:")
    columns = ", ".join(f"`{c}` TEXT COLLATE NOCASE" for c in COLUMNS)
    db.execute(f"CREATE TABLE logs (event_id TEXT, timestamp REAL, {columns})")
    for entry in entries(document):
        record = orjson.loads(entry.json)
        db.execute(
            f"INSERT INTO logs VALUES (?, ?, {', '.join('?' * len(COLUMNS))})",
            (entry.event_id, entry.time, *(value_at(record, c) for c in COLUMNS)),
        )
    fired = set()
    for name, sql in QUERIES.items():
        anchors: set[tuple[str, float]] | None = None
        for query in sql:
            rows = {(keys, end) for keys, end in db.execute(f"SELECT group_keys, window_end FROM ({query})")}
            anchors = rows if anchors is None else anchors & rows
        assert anchors is not None
        fired |= {firing_key(name, orjson.loads(keys)) for keys, _ in anchors}
    return sorted(fired)


@pytest.mark.parametrize(("rule", "must"), list(files(SIGMA_RULES)))
def test_engine_and_pysigma_sqlite_fire_for_the_same_groups(rule: str, must: str) -> None:
    document = load(rule, must)
    settings = detection_settings({})
    assert settings is not None
    firings = Engine(settings.rules, settings.limits).process(entries(document))
    engine = sorted(firing_key(f.about.name, f.group) for f in firings)
    assert engine == sqlite_groups(document)
    assert len(engine) == len(set(engine)), "a group fired twice for one attack"


def test_every_shipped_correlation_converts() -> None:
    shipped = {path.stem: yaml.safe_load(path.read_text()) for path in Path(SHIPPED_RULES).glob("*.yml")}
    assert set(QUERIES) == {name for name, document in shipped.items() if "correlation" in document}
