"""Detections through the real service: the recorded sets as signed webhooks, a SIGKILL in the
middle of an attack, a re-post of everything, redaction, two replicas on PostgreSQL, and the
configuration errors of a bad rule. tests/service.py starts the service with detections off;
these tests turn them on."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from forwarder.normalize import NormalizeOptions, journal_record
from tests.detections.fixtures import SIGMA_RULES, events, expected, files, firing_key, load
from tests.postgres import journal_schema_or_skip
from tests.service import SECRET, Service, wait_for

StartService = Callable[..., Service]


def rebased(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The events with their times moved to end a minute ago, the gaps between them kept.

    Firings of the recorded times would be ``late`` (hours after their window); moved to
    now they are what a live attack fires.
    """
    found = events(document)
    times = [journal_record(e, NormalizeOptions(), delivery="webhook").created_at or 0.0 for e in found]
    shift = time.time() - 60 - max(times)
    moved = []
    for event, created in zip(found, times, strict=True):
        moment = datetime.fromtimestamp(created + shift, UTC)
        stamp = moment.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
        moved.append({**event, "created_at": stamp})
    return moved


def post_all(service: Service, batch: list[dict[str, Any]]) -> None:
    for event in batch:
        answer = service.post(event)
        assert answer.status_code == 200, answer.text


def caught_up(service: Service) -> bool:
    """The engine has read the whole journal (firings included) and journaled what it found;
    the JSON lines sink has delivered it all."""
    status = service.status()
    with sqlite3.connect(service.data_dir / "journal.sqlite3") as db:  # after: firings included
        (last,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
    detections = status["detections"]
    return (
        detections["role"] == "active"
        and detections["pending_firings"] == 0
        and detections["cursor"] >= last
        and status["sinks"]["jsonl"]["cursor"] >= last
    )


def delivered_firings(service: Service) -> dict[str, dict[str, Any]]:
    """Firings the JSON lines sink received, by id (a redelivery after SIGKILL counts once)."""
    return {r["workos"]["id"]: r for r in service.records() if r["evt"]["name"] == "forwarder.detection"}


def journaled_firings(service: Service) -> list[str]:
    with sqlite3.connect(service.data_dir / "journal.sqlite3") as db:
        rows = db.execute("SELECT event_id FROM events WHERE event_type = 'forwarder.detection'").fetchall()
    return [row[0] for row in rows]


def fired(records: dict[str, dict[str, Any]]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return sorted(firing_key(r["detection"]["rule"], r["detection"]["group"]) for r in records.values())


@pytest.mark.parametrize(("rule", "must"), list(files(SIGMA_RULES)))
def test_recorded_sets_as_webhooks_fire_once_and_never_again(
    start_service: StartService, rule: str, must: str
) -> None:
    document = load(rule, must)
    service = start_service(name=f"{rule}-{must}", FORWARDER_DETECTIONS="on")
    batch = rebased(document)

    post_all(service, batch)
    wait_for(lambda: caught_up(service), what="detections caught up")
    firings = delivered_firings(service)
    assert fired(firings) == expected(document)
    assert [r["detection"]["rule"] for r in firings.values()].count(rule) == (1 if must == "fire" else 0)
    for record in firings.values():  # windows of scenarios hours before the last are late
        end = datetime.fromisoformat(record["detection"]["window"]["end"]).timestamp()
        assert record["detection"]["late"] is (time.time() - end > 3600), record["detection"]

    post_all(service, batch)  # everything again: duplicates, nothing new to evaluate
    wait_for(lambda: caught_up(service), what="detections caught up after the re-post")
    assert delivered_firings(service).keys() == firings.keys()
    assert sorted(journaled_firings(service)) == sorted(firings)
    # Late firings are counted apart: an alert on workos_detections_total is about live attacks.
    live = Counter(
        (r["detection"]["rule"], r["detection"]["severity"])
        for r in firings.values()
        if not r["detection"]["late"]
    )
    late = Counter(
        (r["detection"]["rule"], r["detection"]["severity"])
        for r in firings.values()
        if r["detection"]["late"]
    )
    for name, severity in live.keys() | late.keys():
        assert service.metric("workos_detections_total", rule=name, severity=severity) == live[name, severity]
        assert (
            service.metric("workos_detections_late_total", rule=name, severity=severity)
            == late[name, severity]
        )


def test_a_sigkill_in_the_middle_of_an_attack_loses_and_repeats_nothing(start_service: StartService) -> None:
    document = load("workos_brute_force_then_success", "fire")
    batch = rebased(document)
    service = start_service(FORWARDER_DETECTIONS="on")

    post_all(service, batch[:5])
    wait_for(lambda: caught_up(service), what="the first half evaluated")
    service.stop(signal.SIGKILL)
    service.start()
    post_all(service, batch[5:])
    wait_for(lambda: journaled_firings(service), what="a firing in the journal")
    service.stop(signal.SIGKILL)  # most likely before the next checkpoint: the restart re-evaluates
    service.start()
    wait_for(lambda: caught_up(service), what="detections caught up after the restarts")

    assert fired(delivered_firings(service)) == expected(document)
    assert len(journaled_firings(service)) == len(expected(document))


def journal_size(service: Service) -> int:
    with sqlite3.connect(service.data_dir / "journal.sqlite3") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(count)


def test_retention_keeps_what_detections_have_not_saved_as_evaluated(start_service: StartService) -> None:
    """Retention at zero age, every second: records the sinks delivered stay until the engine's
    position is saved (at its checkpoint, here at the stop), then go."""
    document = load("workos_brute_force", "fire")
    retention = {"FORWARDER_RETENTION": "0s", "FORWARDER_PRUNE_INTERVAL": "1s"}
    service = start_service(FORWARDER_DETECTIONS="on", **retention)

    post_all(service, rebased(document))
    wait_for(lambda: caught_up(service), what="detections and the sink caught up")
    assert service.metric("workos_forwarder_detection_lag_events") == 0
    assert service.metric("workos_forwarder_detection_lag_seconds") == 0
    time.sleep(2.5)  # two retention rounds: the position is not saved yet
    assert journal_size(service) == len(events(document)) + len(expected(document))

    service.stop()  # the stop saves the checkpoint and its position
    service.start()
    wait_for(lambda: journal_size(service) == 0, what="retention after the position was saved")
    assert fired(delivered_firings(service)) == expected(document)


def test_with_hashed_emails_the_group_shows_the_hash(start_service: StartService) -> None:
    document = load("workos_brute_force", "fire")
    service = start_service(
        FORWARDER_DETECTIONS="on", FORWARDER_REDACT="email", FORWARDER_REDACT_KEY="k" * 32
    )

    post_all(service, rebased(document))
    wait_for(lambda: caught_up(service), what="detections caught up")

    (firing,) = delivered_firings(service).values()
    hashed = {
        r["usr"]["email"] for r in service.records() if r["evt"]["name"] == "authentication.password_failed"
    }
    assert firing["detection"]["group"] == {"usr.email": hashed.pop()}
    assert "victor.target" not in str(firing)


def test_detections_off(start_service: StartService) -> None:
    service = start_service(FORWARDER_DETECTIONS="off")
    post_all(service, rebased(load("workos_brute_force", "fire")))
    wait_for(
        lambda: len(service.records()) == len(events(load("workos_brute_force", "fire"))), what="delivery"
    )
    assert service.status()["detections"] is None
    assert not delivered_firings(service)
    assert "workos_detections_total{" not in service.metrics()


BAD_RULES = {
    "not YAML": ("broken.yml", "title: [unclosed\n", "not valid YAML"),
    "an unsupported correlation type": (
        "sequence.yml",
        "title: t\nname: seq\ncorrelation:\n  type: temporal\n  rules: [workos_successful_sign_in,"
        " workos_failed_password_sign_in]\n  group-by: [usr.email]\n  timespan: 5m\n",
        "type temporal is not evaluated",
    ),
    "a keyword search": (
        "keyword.yml",
        "title: t\nlogsource: {product: workos}\ndetection:\n  words: [hacker]\n  condition: words\n",
        "keyword search without a field",
    ),
    "an unknown rule": (
        "dangling.yml",
        "title: t\nname: dangling\ncorrelation:\n  type: event_count\n  rules: [no_such_rule]\n"
        "  group-by: [usr.email]\n  timespan: 5m\n  condition: {gte: 3}\n",
        "no_such_rule",
    ),
}


@pytest.mark.parametrize("case", list(BAD_RULES))
def test_a_rule_the_engine_cannot_evaluate_is_a_configuration_error(tmp_path: Path, case: str) -> None:
    name, text, reason = BAD_RULES[case]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / name).write_text(text)
    env = {"FORWARDER_DETECTION_RULES": str(rules), "WORKOS_WEBHOOK_SECRET": SECRET}
    service = Service(data_dir=tmp_path / "svc", env=env)

    for command in (("serve", "--check-config"), ("serve",)):
        result = service.cli(*command)
        assert result.returncode == 2, result.stderr
        assert "FORWARDER_DETECTION_RULES" in result.stderr
        assert name in result.stderr and reason in result.stderr
        assert "Traceback" not in result.stderr


def test_check_config_counts_the_rules(tmp_path: Path) -> None:
    result = Service(data_dir=tmp_path, env={"WORKOS_WEBHOOK_SECRET": SECRET}).cli("serve", "--check-config")
    assert result.returncode == 0, result.stderr
    assert "detection rules: 5" in result.stdout


@pytest.fixture
def pg_url() -> Iterator[str]:
    with journal_schema_or_skip("forwarder_detections") as (url, _):
        yield url


def test_two_replicas_on_postgresql_evaluate_once(start_service: StartService, pg_url: str) -> None:
    document = load("workos_brute_force_then_success", "fire")
    batch = rebased(document)
    first = start_service(name="first", FORWARDER_DETECTIONS="on", FORWARDER_JOURNAL_URL=pg_url)
    second = start_service(name="second", FORWARDER_DETECTIONS="on", FORWARDER_JOURNAL_URL=pg_url)

    for index, event in enumerate(batch):
        assert (first if index % 2 else second).post(event).status_code == 200

    def firings() -> list[str]:
        with psycopg.connect(pg_url) as db:
            rows = db.execute(
                "SELECT event_id FROM events WHERE event_type = 'forwarder.detection'"
            ).fetchall()
        return [row[0] for row in rows]

    def evaluated_everything(service: Service) -> bool:
        detections = service.status()["detections"]
        with psycopg.connect(pg_url) as db:
            (last,) = db.execute("SELECT MAX(seq) FROM events").fetchone()
        return detections["role"] == "active" and detections["cursor"] >= last

    wait_for(lambda: len(firings()) == len(expected(document)), what="the firings in the shared journal")
    roles = sorted(service.status()["detections"]["role"] for service in (first, second))
    assert roles == ["active", "standby"]
    leader = first if first.status()["detections"]["role"] == "active" else second
    standby = second if leader is first else first
    leader.stop(signal.SIGKILL)  # the standby takes over from the checkpoint and repeats nothing
    wait_for(lambda: evaluated_everything(standby), timeout=30, what="the standby takes over and catches up")
    post_all(standby, batch)
    wait_for(lambda: evaluated_everything(standby), what="the re-post evaluated")
    assert len(firings()) == len(expected(document))
    delivered = {**delivered_firings(first), **delivered_firings(second)}
    assert fired(delivered) == expected(document)
