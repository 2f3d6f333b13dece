"""The event catalog keeps up with the WorkOS SDK, and types it does not know are not lost.

The reference is the installed workos SDK (pinned in the test extra): its Events API union and
its webhook-endpoint subscription list. A new SDK release with new types fails here, naming them.
"""

from __future__ import annotations

import logging
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from workos.common.models.create_webhook_endpoint_events import CreateWebhookEndpointEvents
from workos.events.models.event_schema import EventSchemaVariant

from forwarder import catalog
from tests.doubles.workos_api import API_KEY, WorkOSEventsAPI
from tests.samples import make_event
from tests.service import Service, wait_for

StartService = Callable[..., Service]
DOCS = Path(__file__).resolve().parent.parent / "docs"
EVENT_TYPES_PAGE = (DOCS / "event-types.md").read_text()
METRICS_PAGE = (DOCS / "metrics.md").read_text()


def sdk_event_types() -> set[str]:
    """Every ``event`` literal of the models in the SDK's Events API union."""
    types: set[str] = set()
    for model in typing.get_args(EventSchemaVariant):
        hints = typing.get_type_hints(model)
        if "event" in hints:  # EventSchemaUnknown, the fallback, has none
            types.update(typing.get_args(hints["event"]))
    return types


SDK_TYPES = sdk_event_types()
SDK_WEBHOOK_TYPES = {member.value for member in CreateWebhookEndpointEvents}


# --- The catalog against the SDK ----------------------------------------------------------------


def test_the_catalog_has_every_event_type_of_the_installed_sdk() -> None:
    assert len(SDK_TYPES) >= 136, "the SDK's union could not be read"
    missing = sorted(SDK_TYPES - catalog.KNOWN_EVENT_TYPES)
    assert not missing, (
        f"event types of the installed workos SDK missing from forwarder/catalog.py: {missing}"
    )


def test_the_catalog_is_the_sdk_s_136_types_older_names_included() -> None:
    assert len(catalog.KNOWN_EVENT_TYPES) == 136
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", t) for t in catalog.KNOWN_EVENT_TYPES)
    # feature_flags.* and pipes.account_connection.* came beside the older names, which stay
    assert {"flag.created", "feature_flags.flag.created"} <= catalog.KNOWN_EVENT_TYPES
    assert {"pipes.connected_account.connected", "pipes.account_connection.connected"} <= (
        catalog.KNOWN_EVENT_TYPES
    )


def test_webhook_types_are_the_sdk_s_webhook_endpoint_subscriptions() -> None:
    assert catalog.WEBHOOK_TYPES == SDK_WEBHOOK_TYPES
    assert len(catalog.WEBHOOK_TYPES) == 113
    assert catalog.EVENTS_API_ONLY == catalog.KNOWN_EVENT_TYPES - SDK_WEBHOOK_TYPES
    prefixes = {"action.", "dsync.token.", "resource_export.", "vault."}
    assert {t for t in catalog.EVENTS_API_ONLY if not t.startswith(tuple(prefixes))} == {
        "authentication.email_verification_failed",
        "authentication.mfa_failed",
    }


def _docs_table() -> dict[str, tuple[set[str], set[str]]]:
    """docs/event-types.md's table: prefix -> (types by webhook, types from the Events API only)."""
    section = EVENT_TYPES_PAGE
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            prefix = cells[0].strip("`")
            webhook, api_only = (
                {f"{prefix}{s}" for s in re.findall(r"`([^`]+)`", cell)} for cell in cells[1:]
            )
            rows[prefix] = (webhook, api_only)
    return rows


def test_the_docs_table_says_which_types_need_the_events_api() -> None:
    assert "Events API only: needs `WORKOS_API_KEY`" in EVENT_TYPES_PAGE
    rows = _docs_table().values()
    assert set().union(*(webhook for webhook, _ in rows)) == catalog.WEBHOOK_TYPES
    assert set().union(*(api_only for _, api_only in rows)) == catalog.EVENTS_API_ONLY


# --- Classification ------------------------------------------------------------------------------


def test_authentication_failures_are_the_failed_and_timed_out_sign_ins() -> None:
    kinds = ("email_verification", "magic_auth", "mfa", "oauth", "passkey", "password", "sso")
    expected = {f"authentication.{kind}_failed" for kind in kinds} | {"authentication.sso_timed_out"}
    assert expected == catalog.AUTHENTICATION_FAILURES


def _known_with(outcome: str) -> set[str]:
    return {t for t in catalog.KNOWN_EVENT_TYPES if catalog.outcome(t) == outcome}


def test_outcomes_of_the_known_types() -> None:
    assert _known_with("failure") == catalog.AUTHENTICATION_FAILURES | {
        "action.authentication.denied",
        "action.user_registration.denied",
        "organization_domain.verification_failed",
        "pipes.account_connection.add_failed",
        "pipes.account_connection.connection_failed",
        "pipes.connected_account.connection_failed",
        "resource_export.failed",
    }
    assert _known_with("success") == {
        f"authentication.{kind}_succeeded"
        for kind in ("email_verification", "magic_auth", "mfa", "oauth", "passkey", "password", "sso")
    } | {
        "authentication.reauthentication_succeeded",
        "password_reset.succeeded",
        "organization_domain.verified",
    }
    assert _known_with("started") == {"authentication.sso_started"}


def test_statuses_of_the_known_types() -> None:
    warnings = {t for t in catalog.KNOWN_EVENT_TYPES if catalog.status(t) == "warning"}
    errors = {t for t in catalog.KNOWN_EVENT_TYPES if catalog.status(t) == "error"}
    assert warnings == {
        "authentication.radar_risk_detected",
        "radar.challenge_created",
        "organization_domain.verification_failed",
    }
    assert errors == _known_with("failure") - warnings


def test_a_denied_waitlist_user_is_an_admin_decision_not_an_error() -> None:
    denied = catalog.DESCRIPTIONS["waitlist_user.denied"]
    assert (denied.outcome, denied.status) == ("info", "info")
    assert denied == catalog.DESCRIPTIONS["waitlist_user.approved"]


def test_evt_category_marks_sign_in_events_only() -> None:
    signed_in = {t for t, d in catalog.DESCRIPTIONS.items() if d.evt_category == "authentication"}
    assert signed_in == {t for t in catalog.KNOWN_EVENT_TYPES if t.startswith("authentication.")} | {
        "action.authentication.denied"
    }
    assert {d.evt_category for d in catalog.DESCRIPTIONS.values()} == {"authentication", None}


@pytest.mark.parametrize(
    ("event_type", "category", "outcome", "status"),
    [
        ("agent.registration.created", "agent", "info", "info"),
        ("agent.instance.session.revoked", "agent", "info", "info"),
        ("pipes.connected_account.connection_failed", "pipes", "failure", "error"),
        ("pipes.account_connection.add_failed", "pipes", "failure", "error"),
        ("resource_export.failed", "resource_export", "failure", "error"),
        ("feature_flags.flag_rule.updated", "feature_flags", "info", "info"),
        ("vault.dek.rekeyed", "vault", "info", "info"),
        ("waitlist_user.denied", "waitlist_user", "info", "info"),
        ("authentication.webauthn_timed_out", "authentication", "failure", "error"),
        ("action.invitation.denied", "action", "failure", "error"),
        ("domain.succeeded", "other", "success", "info"),
        ("authentication.totp_succeeded", "authentication", "success", "info"),
        ("heartbeat", "other", "info", "info"),
    ],
)
def test_known_and_unknown_types_are_classified(
    event_type: str, category: str, outcome: str, status: str
) -> None:
    assert catalog.category(event_type) == category
    assert catalog.outcome(event_type) == outcome
    assert catalog.status(event_type) == status


# --- Prometheus labels ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "labels"),
    [
        ("authentication.sso_failed", ("authentication.sso_failed", "authentication", "failure")),
        ("feature_flags.flag.created", ("feature_flags.flag.created", "feature_flags", "info")),
        ("resource_export.created", ("resource_export.created", "resource_export", "info")),
        ("authentication.webauthn_failed", ("other", "authentication", "failure")),
        ("ada@example.com.signed_in", ("other", "other", "info")),
        ("user.created user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE", ("other", "user", "info")),
        ("widget.frobnicated", ("other", "other", "info")),
    ],
)
def test_metric_labels_of_known_and_unknown_types(event_type: str, labels: tuple[str, str, str]) -> None:
    assert catalog.metric_labels(event_type) == labels


_ALL_LABELS = {catalog.metric_labels(event_type) for event_type in catalog.KNOWN_EVENT_TYPES}


@given(st.text(max_size=80) | st.sampled_from(sorted(catalog.KNOWN_EVENT_TYPES)).map(lambda t: f"{t}.x"))
@example("user.created")
@example("ada@example.com.signed_in")
def test_every_label_value_comes_from_the_catalog(event_type: str) -> None:
    event, category, outcome = catalog.metric_labels(event_type)
    assert event in catalog.KNOWN_EVENT_TYPES | {"other"}
    assert category in catalog.CATEGORIES | {"other"}
    assert outcome in ("success", "failure", "started", "info")
    if event != "other":
        assert (event, category, outcome) in _ALL_LABELS


def test_the_series_bound_is_the_catalog_s_and_holds_for_made_up_types() -> None:
    # one series per known type, and event="other" with each category (or other) and outcome
    assert catalog.MAX_EVENT_SERIES == 136 + 4 * (26 + 1) == 244
    assert f"at most {catalog.MAX_EVENT_SERIES} series" in METRICS_PAGE
    made_up = [f"made_up_{n}.thing_happened" for n in range(200)]
    made_up += [
        f"{category}.new_{n}_{end}"
        for category in catalog.CATEGORIES
        for n, end in enumerate(("failed", "succeeded", "started", "seen"))
    ]
    made_up += [f"user{n}@example.com.signed_in" for n in range(200)]
    series = _ALL_LABELS | {catalog.metric_labels(event_type) for event_type in made_up}
    assert len(series) <= catalog.MAX_EVENT_SERIES


# --- Types outside the catalog, in one process ---------------------------------------------------


@pytest.fixture
def warnings_logged(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], list[str]]]:
    with caplog.at_level(logging.WARNING, logger="forwarder.catalog"):
        yield lambda: [r.getMessage() for r in caplog.records if r.name == "forwarder.catalog"]


def test_an_unknown_type_is_logged_once_and_described_by_its_name(
    warnings_logged: Callable[[], list[str]],
) -> None:
    unknown = catalog.UnknownTypes(capacity=10)
    assert catalog.describe_unknown("authentication.webauthn_failed") == (
        "authentication",
        "failure",
        "error",
        "authentication",
    )
    assert warnings_logged() == []  # described, not stored: nothing to say yet
    for _ in range(3):
        unknown.stored("authentication.webauthn_failed")
    (line,) = warnings_logged()
    assert "'authentication.webauthn_failed' is not in this release's catalog" in line
    assert "WORKOS_EVENTS=*,authentication.webauthn_failed" in line
    assert unknown.pollable() == ("authentication.webauthn_failed",)


def test_memory_is_bounded_and_only_type_shaped_names_are_polled(
    warnings_logged: Callable[[], list[str]],
) -> None:
    unknown = catalog.UnknownTypes(capacity=3)
    for event_type in ("new.one", "Not A Type!", "new.two", "new.three", "new.four", "new.one"):
        unknown.stored(event_type)
    assert unknown.seen() == ("new.one", "Not A Type!", "new.two")
    assert unknown.pollable() == ("new.one", "new.two")
    lines = warnings_logged()
    assert len(lines) == 4  # three types, then once: no more are tracked
    assert "further ones are counted but neither logged nor polled" in lines[-1]
    unknown.stored("new.five")
    assert len(warnings_logged()) == 4


# --- Acceptance, through the real service --------------------------------------------------------


def _event_series(service: Service) -> dict[str, float]:
    """``workos_events_total`` by its ``event`` label."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(service.metrics()):
        for sample in family.samples:
            if sample.name == "workos_events_total":
                event = sample.labels["event"]
                found[event] = found.get(event, 0.0) + sample.value
    return found


def test_every_sdk_webhook_type_is_counted_under_its_own_label(start_service: StartService) -> None:
    service = start_service()
    for event_type in sorted(SDK_WEBHOOK_TYPES):
        assert service.post(make_event(event_type)).status_code == 200, event_type
    counted = wait_for(
        lambda: (
            (series := _event_series(service)) and sum(series.values()) == len(SDK_WEBHOOK_TYPES) and series
        ),
        what="workos_events_total to count every webhook type",
    )
    assert counted == dict.fromkeys(SDK_WEBHOOK_TYPES, 1.0)
    assert service.metric("workos_forwarder_uncatalogued_events_total") == 0


@pytest.fixture
def workos_api() -> Iterator[WorkOSEventsAPI]:
    api = WorkOSEventsAPI().start()
    yield api
    api.stop()


def _requested_types(api: WorkOSEventsAPI) -> list[list[str]]:
    return [request.params["events"].split(",") for request in api.requests]


def test_the_poller_s_default_request_names_every_sdk_type(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    start_service(WORKOS_API_KEY=API_KEY, WORKOS_API_URL=workos_api.url, WORKOS_POLL_INTERVAL="1h")
    first = wait_for(lambda: _requested_types(workos_api), what="the first poll")[0]
    assert set(first) == SDK_TYPES
    assert len(first) == len(SDK_TYPES)


def test_an_unknown_webhook_type_is_logged_once_counted_and_polled_from_then_on(
    start_service: StartService, workos_api: WorkOSEventsAPI
) -> None:
    new_type = "agent.workflow.created"
    service = start_service(
        WORKOS_API_KEY=API_KEY, WORKOS_API_URL=workos_api.url, WORKOS_POLL_INTERVAL="200ms"
    )
    wait_for(lambda: workos_api.page_requests(), what="a first successful poll")
    assert all(new_type not in types for types in _requested_types(workos_api))

    asked = len(workos_api.requests)
    for _ in range(3):
        assert service.post(make_event(new_type)).status_code == 200
    assert wait_for(lambda: service.metric("workos_forwarder_uncatalogued_events_total") == 3)
    assert wait_for(lambda: _event_series(service).get("other") == 3)

    # The next poll asks for it. The API double, like WorkOS for a type it does not serve,
    # answers 422: the poller says so and goes on with the known types.
    wait_for(
        lambda: any(new_type in types for types in _requested_types(workos_api)[asked:]),
        what="a poll naming it",
    )
    wait_for(lambda: len(workos_api.page_requests()) > 2 and new_type not in _requested_types(workos_api)[-1])
    assert service.status()["sources"]["events_api"]["state"] == "ok"

    logs = [
        orjson.loads(line) for line in service.stderr_path.read_text().splitlines() if line.startswith("{")
    ]
    noted = [log for log in logs if log.get("event_type") == new_type]
    assert len(noted) == 1
    assert f"WORKOS_EVENTS=*,{new_type}" in noted[0]["message"]
    assert any("polling the known types only" in log["message"] for log in logs)


def test_an_unknown_type_under_a_stored_id_is_neither_counted_nor_logged(start_service: StartService) -> None:
    service = start_service()
    stored = make_event("agent.workflow.created")
    assert service.post(stored).json()["status"] == "accepted"
    # An id is one event, with one created_at: the journal deduplicates on both (forwarder/dedup_key.py).
    renamed = make_event("agent.workflow.renamed", id=stored["id"], created_at=stored["created_at"])
    again = [stored, renamed]

    assert [service.post(event).json()["status"] for event in again] == ["duplicate", "duplicate"]

    assert service.metric("workos_forwarder_uncatalogued_events_total") == 1
    lines = [
        orjson.loads(line) for line in service.stderr_path.read_text().splitlines() if line.startswith("{")
    ]
    forwarded = [line["event_type"] for line in lines if "is forwarded" in line.get("message", "")]
    assert forwarded == ["agent.workflow.created"]
