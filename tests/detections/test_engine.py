"""The engine on the recorded attacks and near misses, without a service: every rule, replays,
checkpoints, organizations, and the bound under a flood of distinct addresses."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest

from forwarder.detections.engine import Engine, Limits
from forwarder.detections.firing import FIRING_TYPE, Firing, firing_record
from forwarder.detections.settings import detection_settings
from forwarder.records import Entry
from tests.detections.fixtures import (
    LOCATION_RULES,
    SIGMA_RULES,
    entries,
    expected,
    files,
    firing_key,
    load,
)

REPO = Path(__file__).resolve().parents[2]
RULES = detection_settings({})
assert RULES is not None


def run(batch: list[Entry], engine: Engine | None = None) -> list[Firing]:
    engine = engine or Engine(RULES.rules, RULES.limits)
    return engine.process(batch)


def keys(firings: list[Firing]) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    return sorted(firing_key(f.about.name, f.group) for f in firings)


@pytest.mark.parametrize(("rule", "must"), list(files(SIGMA_RULES + LOCATION_RULES)))
def test_each_recorded_set_fires_what_it_says(rule: str, must: str) -> None:
    document = load(rule, must)
    firings = run(entries(document))
    assert keys(firings) == expected(document)
    fired = [f for f in firings if f.about.name == rule]
    assert len(fired) == (1 if must == "fire" else 0), [(f.group, f.start, f.end) for f in fired]


@pytest.mark.parametrize(("rule", "must"), list(files(SIGMA_RULES + LOCATION_RULES)))
def test_a_checkpoint_anywhere_then_a_replay_finds_the_same_firings(rule: str, must: str) -> None:
    """What a restart does: restore the last checkpoint, process what came after it again."""
    batch = entries(load(rule, must))
    whole = {f.id for f in run(batch)}
    for cut in range(0, len(batch), 3):
        first = Engine(RULES.rules, RULES.limits)
        before = {f.id for f in first.process(batch[:cut])}
        resumed = Engine(RULES.rules, RULES.limits)
        resumed.restore(first.snapshot())
        assert resumed.seq == (batch[cut - 1].seq if cut else 0)
        after = {f.id for f in resumed.process(batch[cut:])}
        assert before | after == whole
        assert not before & after


def test_firings_do_not_feed_back_into_detection() -> None:
    batch = entries(load("workos_brute_force", "fire"))
    firings = run(batch)
    records = [firing_record(f, service="workos-events", env="test") for f in firings]
    again = [
        Entry(len(batch) + i + 1, r.event_id, FIRING_TYPE, r.created_at or 0, r.json)
        for i, r in enumerate(records)
    ]
    assert run(again) == []


def test_the_firing_record() -> None:
    document = load("workos_brute_force_then_success", "fire")
    engine = Engine(RULES.rules, RULES.limits)
    firings: dict[str, Firing] = {}
    causes: dict[str, Entry] = {}
    for entry in entries(document):  # one at a time, to know which event made each fire
        for firing in engine.process([entry]):
            firings[firing.about.name], causes[firing.about.name] = firing, entry
    critical = firings["workos_brute_force_then_success"]
    record = orjson.loads(
        firing_record(critical, service="workos-events", env="Prod", now=critical.end + 10).json
    )
    success = next(e for e in entries(document) if e.event_type == "authentication.password_succeeded")
    assert record["evt"] == {"name": "forwarder.detection", "category": "security", "outcome": "detected"}
    assert record["status"] == "error"
    assert record["date"] == orjson.loads(causes[critical.about.name].json)["date"]
    assert record["ddtags"].split(",")[-2:] == [
        "detection:workos_brute_force_then_success",
        "severity:critical",
    ]
    assert "env:prod" in record["ddtags"] and "source:workos" in record["ddtags"]
    detection = record["detection"]
    assert detection["rule"] == "workos_brute_force_then_success"
    assert detection["severity"] == "critical"
    assert detection["group"] == {"usr.email": "wendy.breached@example.com"}
    assert detection["attack"] == ["T1110.001", "T1078"]
    assert detection["late"] is False
    assert success.event_id in detection["event_ids"] and len(detection["event_ids"]) <= 20
    assert detection["window"]["start"] < detection["window"]["end"]
    assert record["usr"] == {"email": "wendy.breached@example.com"}
    assert record["workos"]["id"] == critical.id
    brute = orjson.loads(
        firing_record(firings["workos_brute_force"], service="s", env="e", now=critical.end + 7200).json
    )
    assert brute["status"] == "warning" and brute["detection"]["late"] is True
    assert brute["detection"]["count"] == 10


def test_spraying_reports_the_distinct_accounts() -> None:
    (firing,) = run(entries(load("workos_password_spraying", "fire")))
    assert firing.distinct == 5 and firing.group == {"network.client.ip": "198.51.100.66"}


def test_new_country_for_an_organization() -> None:
    """With workos.organization_id on records, a country new for the organization fires too."""
    day = 86400.0

    def sign_in(seq: int, when: float, email: str, country: str) -> Entry:
        record = {
            "evt": {
                "name": "authentication.sso_succeeded",
                "outcome": "success",
                "category": "authentication",
            },
            "usr": {"email": email},
            "network": {"client": {"ip": "192.0.2.1", "geoip": {"country": {"iso_code": country}}}},
            "workos": {"organization_id": "org_01JACME"},
        }
        return Entry(seq, f"event_{seq}", "authentication.sso_succeeded", 1.8e9 + when, orjson.dumps(record))

    batch = [
        sign_in(1, 0, "ann@example.com", "FR"),
        sign_in(2, day, "ben@example.com", "FR"),
        sign_in(3, 3 * day, "cyd@example.com", "JP"),  # cyd is new (learned); Japan is new for the org
        sign_in(4, 3.5 * day, "dot@example.com", "JP"),  # Japan is known to the org now
    ]
    assert [f.group for f in run(batch)] == [
        {"workos.organization_id": "org_01JACME", "network.client.geoip.country.iso_code": "JP"}
    ]


def flood() -> dict[str, object]:
    """A million distinct addresses and accounts through a fresh engine; what it kept and fired."""
    limits = Limits(max_events=100_000, max_groups=20_000)
    engine = Engine(RULES.rules, limits)
    template = (
        b'{"evt":{"name":"authentication.password_failed","outcome":"failure","category":"authentication"},'
        b'"usr":{"email":"u%d@example.org"},"network":{"client":{"ip":"%d.%d.%d.%d"}}}'
    )
    firings: Counter[str] = Counter()
    seq = 0
    for start in range(0, 1_000_000, 10_000):
        batch = []
        for n in range(start, start + 10_000):
            seq += 1
            ip = (n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)
            batch.append(
                Entry(seq, f"e{n}", "authentication.password_failed", 1e9 + n / 1000, template % (n, *ip))
            )
        firings.update(f.about.name for f in engine.process(batch))
        assert engine.groups <= limits.max_groups
        assert engine.events <= limits.max_events
    return {
        "shed_groups": engine.take_shed().groups,
        "fired": sorted(firings),
        "snapshot_bytes": len(engine.snapshot()),
        "max_rss_kib": peak_rss_kib(),
    }


def peak_rss_kib() -> int:
    """This process's peak RSS: the kernel's VmHWM, which starts again at ``exec``.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries it over ``exec`` from the process
    that forked, so a child of a pytest session that had grown to 455 MB reported 455 MB
    (a 300 MB parent made a 13 MB child report 313 MB).
    """
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0])


def test_a_million_distinct_addresses_stay_within_the_bound() -> None:
    """A flood of distinct addresses and accounts: the state keeps its bound and says it shed.

    Run in a fresh interpreter: this process's peak RSS is the whole session's, not the engine's.
    """
    code = "import json; from tests.detections.test_engine import flood; print(json.dumps(flood()))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(done.stdout.splitlines()[-1])
    assert result["shed_groups"] > 900_000
    # One address per account and one failure each: only the environment-wide rule fires.
    assert result["fired"] == ["workos_credential_stuffing"]
    assert result["max_rss_kib"] < 150 * 1024
    assert result["snapshot_bytes"] < 16 * 1024 * 1024
