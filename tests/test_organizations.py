"""Which organization a record names, by the rule docs/record.md writes down, for every SDK type.

The instances are the workos SDK's own models, filled and serialized (``tests.sdk_events``),
each ``organization_id`` valued after where it sits, so a test tells which one a record took.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

import pytest

from forwarder import catalog
from forwarder.memberships import MembershipMap, Row
from forwarder.normalize import NormalizeOptions, normalize
from tests.sdk_events import organization_marker, sdk_instances

RECORD_PAGE = (Path(__file__).resolve().parent.parent / "docs" / "record.md").read_text()
INSTANCES = sdk_instances()
PLAIN = NormalizeOptions()


def _section(title: str) -> str:
    return RECORD_PAGE.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def documented_paths() -> list[str]:
    """The ``data....organization_id`` places of the rule's table, in its order."""
    rows = [line for line in _section("Which organization").splitlines() if re.match(r"\| \d+ \|", line)]
    return [
        path for row in rows for path in re.findall(r"`(data\.[a-z_.]*organization_id)`", row.split("|")[2])
    ]


PATHS = documented_paths()


def _at(data: Any, path: str) -> Any:
    for key in path.split(".")[1:]:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _organization_keys(value: Any, path: str = "data") -> dict[str, str]:
    """Every key that names an organization anywhere in ``value``: path -> value."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            if "organization_id" in key and key != "organization_membership_id":
                found[f"{path}.{key}"] = item
            found.update(_organization_keys(item, f"{path}.{key}"))
    elif isinstance(value, list):
        for item in value:
            found.update(_organization_keys(item, f"{path}[]"))
    return found


def expected_organization(event: dict[str, Any]) -> str | None:
    """The documented rule, read as written: the table's paths, then the two special rows."""
    data = event["data"]
    for path in PATHS:
        value = _at(data, path)
        if isinstance(value, str) and value and value != "null":
            return value
    owner = data.get("owner")
    if isinstance(owner, dict) and owner.get("type") == "organization":
        return str(owner["id"])
    return str(data["id"]) if catalog.category(event["event"]) == "organization" else None


def _name(event: dict[str, Any]) -> str:
    owner = event["data"].get("owner")
    return (
        f"{event['event']}[{owner['type']}]"
        if isinstance(owner, dict) and "type" in owner
        else event["event"]
    )


def test_the_documented_table_is_read() -> None:
    assert PATHS == [
        "data.organization_id",
        "data.sso.organization_id",
        "data.organization_domain.organization_id",
        "data.connection.organization_id",
        "data.group.organization_id",
        "data.user.organization_id",
        "data.owner.organization_id",
        "data.claimed_by.organization_id",
    ]
    assert {event["event"] for event in INSTANCES} == catalog.KNOWN_EVENT_TYPES


@pytest.mark.parametrize("event", INSTANCES, ids=_name)
def test_every_sdk_type_names_the_organization_the_rule_says(event: dict[str, Any]) -> None:
    assert normalize(event, PLAIN)["workos"].get("organization_id") == expected_organization(event)


def test_the_nested_places_the_issue_found_are_promoted() -> None:
    found = {_name(event): normalize(event, PLAIN)["workos"].get("organization_id") for event in INSTANCES}
    for kind in ("user_added", "user_removed"):
        assert found[f"dsync.group.{kind}"] == organization_marker("data.group.organization_id")
    for kind in ("renewal_required", "renewed"):
        assert found[f"connection.saml_certificate_{kind}"] == organization_marker(
            "data.connection.organization_id"
        )
    for kind in ("created", "revoked", "updated"):
        assert found[f"api_key.{kind}[user]"] == organization_marker("data.owner.organization_id")
        assert found[f"api_key.{kind}[organization]"].startswith("id_")  # the owner's own id


def test_every_organization_key_of_the_sdk_is_taken_or_documented_as_not() -> None:
    not_taken = {
        "data.from_organization_id",
        "data.to_organization_id",
        "data.invocable_by.organization_ids",
        "data.domains[].organization_id",
    }
    seen = {path for event in INSTANCES for path in _organization_keys(event["data"])}
    assert seen - set(PATHS) == not_taken
    section = _section("Which organization")
    for path in not_taken:
        assert f"`{path.removeprefix('data.')}`" in section, path


def _map_elsewhere(events: list[dict[str, Any]]) -> MembershipMap:
    """A map that puts every user of ``events`` in another organization."""
    memberships = MembershipMap(10_000)
    users = {
        record["usr"]["id"]
        for record in (normalize(e, PLAIN) for e in events)
        if "id" in record.get("usr", {})
    }
    memberships.apply(Row(user, "org_elsewhere", "membership", True) for user in users)
    return memberships


def test_no_record_of_an_event_that_names_its_organization_changes() -> None:
    named = [event for event in INSTANCES if expected_organization(event)]
    with_map = NormalizeOptions(memberships=_map_elsewhere(named))
    for event in named:
        plain, mapped = normalize(event, PLAIN), normalize(event, with_map)
        assert mapped == plain, event["event"]
        workos = plain["workos"]
        if plain["evt"].get("category") == "authentication":
            assert (workos["organization_ids"], workos["attribution"]) == (
                [workos["organization_id"]],
                "event",
            )
        else:
            assert "organization_ids" not in workos and "attribution" not in workos, event["event"]


def test_events_of_a_user_without_organization_are_attributed_from_the_map() -> None:
    unnamed = [event for event in INSTANCES if not expected_organization(event)]
    with_map = NormalizeOptions(memberships=_map_elsewhere(unnamed))
    attributed = set()
    for event in unnamed:
        workos = normalize(event, with_map)["workos"]
        if "attribution" in workos:
            assert (workos["organization_id"], workos["organization_ids"]) == (
                "org_elsewhere",
                ["org_elsewhere"],
            )
            attributed.add(event["event"])
        else:
            assert "organization_id" not in workos and "organization_ids" not in workos
    signing_in = {
        t for t in catalog.KNOWN_EVENT_TYPES if re.fullmatch(r"authentication\.[a-z_]+_(failed|succeeded)", t)
    }
    assert signing_in - {"authentication.sso_failed", "authentication.sso_succeeded"} <= attributed
    assert not any(t.startswith("vault.") for t in attributed)  # an actor is not looked up


@pytest.mark.parametrize(
    "event", [e for e in INSTANCES if e["event"].startswith("vault.") and "actor_id" in e["data"]], ids=_name
)
def test_a_vault_actor_is_the_record_s_user(event: dict[str, Any]) -> None:
    record = normalize(event, PLAIN)
    data = event["data"]
    assert record["usr"] == {"id": data["actor_id"], "name": data["actor_name"]}
    del event["context"]
    assert normalize(event, PLAIN)["workos"]["actor"] == {
        "id": data["actor_id"],
        "source": data["actor_source"],
        "name": data["actor_name"],
    }


def test_the_outcome_patterns_in_the_docs_are_the_catalog_s() -> None:
    bullet = RECORD_PAGE.split("- `evt.outcome`", 1)[1].split("\n- `evt.category`", 1)[0]
    patterns = {
        outcome: re.findall(r"`([^`]+)`", line.split(":", 1)[1].split("(", 1)[0])
        for line in bullet.splitlines()
        if (outcome := line.strip().removeprefix("- `").split("`", 1)[0]) in ("failure", "success", "started")
    }
    for event_type in catalog.KNOWN_EVENT_TYPES:
        by_docs = next(
            (
                outcome
                for outcome, globs in patterns.items()
                if any(fnmatch.fnmatchcase(event_type, glob) for glob in globs)
            ),
            "info",
        )
        if event_type == "waitlist_user.denied":
            by_docs = "info"
        assert catalog.outcome(event_type) == by_docs, event_type
    assert catalog.outcome("password_reset.succeeded") == "success"
    assert catalog.outcome("resource_export.failed") == "failure"
