"""The membership map and its table, on a real SQLite journal: learned with the events that say
so, in their transaction; shared through the table; bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from forwarder import metrics
from forwarder.journal import Journal
from forwarder.memberships import Known, MembershipMap, Row
from forwarder.memberships_store import MembershipSettings, MembershipStore
from forwarder.normalize import NormalizeOptions, journal_record
from tests.samples import make_event, new_id

ORG_A, ORG_B = "org_01HX3AAAAAAAAAAAAAAAAAAAAA", "org_01HX3BBBBBBBBBBBBBBBBBBBBB"
SETTINGS = MembershipSettings(max_rows=100, refresh_s=1.0)


def membership(user: str, org: str, kind: str = "created", status: str = "active", **extra: Any) -> Any:
    event = make_event(f"organization_membership.{kind}", **extra)
    event["data"].update(user_id=user, organization_id=org, status=status)
    return journal_record(event, NormalizeOptions(), delivery="webhook")


def _evictions() -> float:
    return metrics.REGISTRY.get_sample_value("workos_forwarder_membership_evictions_total") or 0.0


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "journal.sqlite3"


def open_store(path: Path, settings: MembershipSettings = SETTINGS) -> MembershipStore:
    store = MembershipStore(Journal(path), MembershipMap(settings.max_rows), settings)
    store.refresh()
    return store


def test_precedence_and_sorting_of_what_the_map_answers() -> None:
    memberships = MembershipMap(10)
    memberships.apply([Row("u", ORG_B, "api", True), Row("u", ORG_A, "session", True)])
    assert memberships.get("u") == Known((ORG_A, ORG_B), "session")
    memberships.apply([Row("u", ORG_A, "membership", True)])
    assert memberships.get("u") == Known((ORG_A, ORG_B), "membership")
    memberships.apply([Row("u", ORG_A, "", False), Row("u", ORG_B, "", False)])
    assert memberships.get("u") is None and len(memberships) == 0


async def test_rows_are_learned_with_the_events_and_only_new_ones(path: Path) -> None:
    store = open_store(path)
    user = new_id("user")
    record = membership(user, ORG_A)

    assert await store.journal.append([record, record]) == [True, False]

    assert store.memberships.get(user) == Known((ORG_A,), "membership")
    assert store.journal.query("SELECT COUNT(*) FROM memberships") == [(1,)]
    await store.journal.close()


async def test_a_second_process_sees_the_rows_at_its_next_refresh(path: Path) -> None:
    first, second = open_store(path), open_store(path)
    user = new_id("user")
    await first.journal.append([membership(user, ORG_A)])
    assert second.memberships.get(user) is None

    assert second.refresh() == 1
    assert second.memberships.get(user) == Known((ORG_A,), "membership")

    await second.journal.append([membership(user, ORG_A, "deleted")])
    first.refresh()
    assert first.memberships.get(user) is None
    await first.journal.close()
    await second.journal.close()


async def test_a_pending_membership_does_not_attribute_and_a_session_does(path: Path) -> None:
    store = open_store(path)
    user = new_id("user")
    session = make_event("session.created")
    session["data"].update(user_id=user, organization_id=ORG_B)
    await store.journal.append(
        [
            membership(user, ORG_A, status="pending"),
            journal_record(session, NormalizeOptions(), delivery="api"),
        ]
    )
    assert store.memberships.get(user) == Known((ORG_B,), "session")
    await store.journal.close()


async def test_the_table_is_bounded_least_recently_seen_first(path: Path) -> None:
    settings = MembershipSettings(max_rows=2, refresh_s=1.0)
    store = open_store(path, settings)
    users = [new_id("user") for _ in range(4)]
    for user in users:
        await store.journal.append([membership(user, ORG_A)])
    before = _evictions()

    assert await store.evict() == 2

    assert [store.memberships.get(user) is not None for user in users] == [False, False, True, True]
    assert store.journal.query("SELECT COUNT(*) FROM memberships") == [(2,)]
    assert _evictions() - before == 2
    reopened = open_store(path, settings)
    assert [reopened.memberships.get(user) is not None for user in users] == [False, False, True, True]
    await store.journal.close()
    await reopened.journal.close()


def test_the_map_keeps_the_most_recently_changed_users() -> None:
    memberships = MembershipMap(3)
    users = [f"user_{n}" for n in range(6)]
    memberships.apply(Row(user, ORG_A, "membership", True) for user in users)
    assert [memberships.get(user) is not None for user in users] == [False] * 3 + [True] * 3
    memberships.apply([Row(users[3], ORG_B, "session", True), Row(users[0], ORG_A, "membership", True)])
    assert [memberships.get(user) is not None for user in users] == [True, False, False, True, False, True]
