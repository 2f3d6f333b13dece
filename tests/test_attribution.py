"""Sign-ins attributed to their user's organizations, through the real service.

The membership map is learned from membership and session events as they are stored, kept in
the journal (so it survives a SIGKILL and is shared by replicas), filled from a double of the
WorkOS memberships API when a key is set, and never guesses.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI
from tests.postgres import journal_schema_or_skip
from tests.samples import make_event, new_id
from tests.service import Service, wait_for

StartService = Callable[..., Service]
ORG_A = "org_01HX1AAAAAAAAAAAAAAAAAAAAA"
ORG_B = "org_01HX1BBBBBBBBBBBBBBBBBBBBB"


def membership(
    user_id: str, organization_id: str, kind: str = "created", status: str = "active"
) -> dict[str, Any]:
    event = make_event(f"organization_membership.{kind}")
    event["data"].update(id=new_id("om"), user_id=user_id, organization_id=organization_id, status=status)
    return event


def session(user_id: str, organization_id: str) -> dict[str, Any]:
    event = make_event("session.created")
    event["data"].update(user_id=user_id, organization_id=organization_id, impersonator=None)
    return event


def sign_in(event_type: str, user_id: str) -> dict[str, Any]:
    event = make_event(event_type)
    event["data"]["user_id"] = user_id
    return event


def post_all(service: Service, *events: dict[str, Any]) -> None:
    for event in events:
        assert service.post(event).status_code == 200, event["event"]


def workos_of(service: Service, event: dict[str, Any], *, timeout: float = 15.0) -> dict[str, Any]:
    """The ``workos`` object of ``event``'s record as the jsonl sink wrote it."""

    def found() -> dict[str, Any] | None:
        return next((r["workos"] for r in service.records() if r["workos"]["id"] == event["id"]), None)

    return wait_for(found, timeout=timeout, what=f"the record of {event['id']}")


def attribution(workos: dict[str, Any]) -> tuple[Any, Any, Any]:
    return workos.get("organization_id"), workos.get("organization_ids"), workos.get("attribution")


def test_a_password_failure_is_attributed_to_the_user_s_membership(start_service: StartService) -> None:
    service = start_service()
    user = new_id("user")
    failure = sign_in("authentication.password_failed", user)

    post_all(service, membership(user, ORG_A), failure)

    assert attribution(workos_of(service, failure)) == (ORG_A, [ORG_A], "membership")


def test_an_mfa_failure_is_attributed_to_the_organization_of_the_user_s_session(
    start_service: StartService,
) -> None:
    service = start_service()
    user = new_id("user")
    failure = sign_in("authentication.mfa_failed", user)

    post_all(service, session(user, ORG_B), failure)

    assert attribution(workos_of(service, failure)) == (ORG_B, [ORG_B], "session")


def test_two_memberships_give_both_organizations_and_no_single_one(start_service: StartService) -> None:
    service = start_service()
    user = new_id("user")
    failure = sign_in("authentication.magic_auth_failed", user)

    post_all(service, membership(user, ORG_B), session(user, ORG_A), failure)

    # A membership event is the firmer word: it names the attribution of the list.
    assert attribution(workos_of(service, failure)) == (None, [ORG_A, ORG_B], "membership")


def test_the_map_survives_a_sigkill(start_service: StartService) -> None:
    service = start_service()
    user = new_id("user")
    post_all(service, membership(user, ORG_A))
    service.stop(signal.SIGKILL)

    service.start()
    failure = sign_in("authentication.oauth_failed", user)
    post_all(service, failure)

    assert attribution(workos_of(service, failure)) == (ORG_A, [ORG_A], "membership")


@pytest.mark.parametrize("end", ["deleted", "inactive"])
def test_a_membership_that_ended_no_longer_attributes(start_service: StartService, end: str) -> None:
    service = start_service()
    user = new_id("user")
    created = membership(user, ORG_A)  # made first: its created_at is older than the end's
    before = sign_in("authentication.password_failed", user)
    after = sign_in("authentication.password_failed", user)
    ended = (
        membership(user, ORG_A, "deleted", "active")
        if end == "deleted"
        else membership(user, ORG_A, "updated", "inactive")
    )

    post_all(service, created, before, ended, after)

    assert attribution(workos_of(service, before)) == (ORG_A, [ORG_A], "membership")
    assert attribution(workos_of(service, after)) == (None, None, None)


def test_an_older_event_arriving_late_does_not_undo_a_newer_one(start_service: StartService) -> None:
    service = start_service()
    user = new_id("user")
    created = membership(user, ORG_A)
    deleted = membership(user, ORG_A, "deleted")
    created["created_at"], deleted["created_at"] = "2026-11-26T10:00:00.000Z", "2026-11-26T11:00:00.000Z"
    failure = sign_in("authentication.password_failed", user)

    post_all(service, deleted, created, failure)  # the deletion came first, the creation late

    assert attribution(workos_of(service, failure)) == (None, None, None)


def test_an_unknown_user_gets_nothing(start_service: StartService) -> None:
    service = start_service()
    post_all(service, membership(new_id("user"), ORG_A))
    failure = sign_in("authentication.password_failed", new_id("user"))
    anonymous = make_event("authentication.password_failed")  # user_id null, as on most failures

    post_all(service, failure, anonymous)

    for event in (failure, anonymous):
        workos = workos_of(service, event)
        assert attribution(workos) == (None, None, None)
        assert "organization_ids" not in workos


def test_an_event_that_names_its_organization_keeps_it(start_service: StartService) -> None:
    service = start_service()
    user = new_id("user")
    sso = sign_in("authentication.sso_failed", user)  # data.sso.organization_id is the sample's
    own = sso["data"]["sso"]["organization_id"]

    post_all(service, membership(user, ORG_A), session(user, ORG_B), sso)

    assert attribution(workos_of(service, sso)) == (own, [own], "event")


def test_the_map_is_bounded_and_counted(start_service: StartService) -> None:
    service = start_service(FORWARDER_MEMBERSHIPS_MAX="3")
    users = [new_id("user") for _ in range(5)]
    post_all(service, *(membership(user, ORG_A) for user in users))

    assert wait_for(lambda: service.metric("workos_forwarder_membership_users") == 3)
    assert wait_for(lambda: service.metric("workos_forwarder_membership_evictions_total") == 2)
    assert service.metric("workos_forwarder_memberships") == 3  # rows left in the table
    oldest, newest = (
        sign_in("authentication.password_failed", users[0]),
        sign_in("authentication.password_failed", users[-1]),
    )
    post_all(service, oldest, newest)
    assert attribution(workos_of(service, oldest)) == (None, None, None)
    assert attribution(workos_of(service, newest)) == (ORG_A, [ORG_A], "membership")


def test_attribution_can_be_turned_off(start_service: StartService) -> None:
    service = start_service(FORWARDER_MEMBERSHIPS_MAX="0")
    user = new_id("user")
    failure = sign_in("authentication.password_failed", user)
    post_all(service, membership(user, ORG_A), failure)
    assert attribution(workos_of(service, failure)) == (None, None, None)


# --- The WorkOS API fill ---------------------------------------------------------------------


@pytest.fixture
def workos_api() -> Iterator[WorkOSEventsAPI]:
    api = WorkOSEventsAPI().start()
    yield api
    api.stop()


def _api_membership(user_id: str, organization_id: str, status: str = "active") -> dict[str, Any]:
    return {
        "object": "organization_membership",
        "id": new_id("om"),
        "user_id": user_id,
        "organization_id": organization_id,
        "status": status,
        "role": {"slug": "member"},
        "created_at": "2026-01-05T10:00:00.000Z",
        "updated_at": "2026-01-05T10:00:00.000Z",
    }


def _api_env(api: WorkOSEventsAPI, **extra: str) -> dict[str, str]:
    return {
        "WORKOS_API_KEY": API_KEY,
        "WORKOS_API_URL": api.url,
        "WORKOS_POLL_INTERVAL": "0",  # the poller off: every request is a membership lookup
        "WORKOS_MEMBERSHIP_LOOKUP_RATE": "20",
        **extra,
    }


def test_a_user_seen_without_membership_is_looked_up_and_later_events_attributed(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    user = new_id("user")
    # Three pages (limit 100) of memberships, an inactive one among them, and a 429 first.
    workos_api.memberships = [_api_membership(user, f"org_01HX2{n:021d}") for n in range(201)]
    workos_api.memberships.append(_api_membership(user, ORG_B, status="inactive"))
    workos_api.rate_limit(1, retry_after="1")
    service = start_service(**_api_env(workos_api))
    first = sign_in("authentication.password_failed", user)

    post_all(service, first)

    assert attribution(workos_of(service, first)) == (None, None, None)  # never waits for the API
    assert wait_for(lambda: service.metric("workos_forwarder_membership_lookups_total", result="found") == 1)
    later = sign_in("authentication.password_failed", user)
    post_all(service, later)
    workos = workos_of(service, later)
    assert workos["attribution"] == "api"
    assert workos["organization_ids"] == sorted(m["organization_id"] for m in workos_api.memberships[:201])
    assert "organization_id" not in workos
    asked = workos_api.membership_requests
    assert [request.status for request in asked] == [429, 200, 200, 200]
    assert all(r.params["user_id"] == user and r.params["statuses"] == "active" for r in asked)
    assert "after" in asked[-1].params


def test_a_user_the_api_does_not_know_is_asked_about_once_and_gets_nothing(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    missing, without, sentinel = new_id("user"), new_id("user"), new_id("user")
    workos_api.missing_users.add(missing)
    service = start_service(**_api_env(workos_api))
    post_all(service, *(sign_in("authentication.password_failed", u) for u in (missing, without)))
    wait_for(lambda: service.metric("workos_forwarder_membership_lookups_total", result="none") == 2)

    again = [sign_in("authentication.password_failed", u) for u in (missing, without) * 3]
    post_all(service, *again, sign_in("authentication.password_failed", sentinel))
    wait_for(lambda: len(workos_api.membership_requests) == 3, what="the sentinel user looked up")

    asked = [(request.params["user_id"], request.status) for request in workos_api.membership_requests]
    assert asked == [(missing, 404), (without, 200), (sentinel, 200)]  # each asked about once
    for event in again:
        assert attribution(workos_of(service, event)) == (None, None, None)
    status = service.status()["sources"]["memberships_api"]
    assert (status["state"], status["none"], status["remembered"]) == ("ok", 3, 3)


def test_a_user_learned_from_an_event_is_not_looked_up(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    service = start_service(**_api_env(workos_api))
    user = new_id("user")
    failure = sign_in("authentication.password_failed", user)
    post_all(service, membership(user, ORG_A), failure)
    assert workos_of(service, failure)["attribution"] == "membership"
    assert workos_api.membership_requests == []


def test_a_rejected_key_is_reported_and_changes_nothing(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    workos_api.api_key = "sk_test_another_key"
    service = start_service(**_api_env(workos_api))
    failure = sign_in("authentication.password_failed", new_id("user"))
    post_all(service, failure)

    status = wait_for(
        lambda: (s := service.status()["sources"]["memberships_api"])["state"] == "rejected" and s
    )
    assert "WORKOS_API_KEY was not accepted" in status["last_error"]
    assert attribution(workos_of(service, failure)) == (None, None, None)
    assert API_KEY not in service.stderr_path.read_text()


# --- Replicas on PostgreSQL ----------------------------------------------------------------


def test_a_membership_learned_by_one_replica_attributes_on_the_other_within_5_s(
    start_service: StartService,
) -> None:
    with journal_schema_or_skip("forwarder_attribution") as (url, _):
        first = start_service(name="first", FORWARDER_JOURNAL_URL=url, PROMETHEUS_SINK="off")
        second = start_service(name="second", FORWARDER_JOURNAL_URL=url, PROMETHEUS_SINK="off")
        user = new_id("user")

        def records() -> dict[str, dict[str, Any]]:
            return {r["workos"]["id"]: r["workos"] for service in (first, second) for r in service.records()}

        def probe_for_5_s(to: Service, learned: dict[str, Any]) -> list[tuple[float, dict[str, Any]]]:
            """Post ``learned`` to the other replica, then a failure of the user to ``to`` every
            quarter second for 5 s; (seconds after ``learned`` was stored, failure) of each."""
            post_all(first if to is second else second, learned)
            stored = time.monotonic()
            sent = []
            while (elapsed := time.monotonic() - stored) < 5:
                failure = sign_in("authentication.password_failed", user)
                post_all(to, failure)
                sent.append((elapsed, failure))
                time.sleep(0.25)
            wait_for(lambda: {f["id"] for _, f in sent} <= records().keys(), what="every probe delivered")
            return sent

        sent = probe_for_5_s(second, membership(user, ORG_A))
        seen = [records()[failure["id"]].get("attribution") == "membership" for _, failure in sent]
        assert seen[-1], "not attributed on the other replica within 5 s"
        assert seen == sorted(seen), "attributed, then not"

        sent = probe_for_5_s(first, membership(user, ORG_A, "deleted"))
        seen = [records()[failure["id"]].get("attribution") is None for _, failure in sent]
        assert seen[-1], "still attributed on the other replica 5 s after the deletion"
        assert seen == sorted(seen)
