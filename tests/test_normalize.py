"""The normalized record: what every sink, dashboard and monitor sees of a WorkOS event."""

from __future__ import annotations

import copy
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from forwarder import catalog
from forwarder.normalize import InvalidEvent, NormalizeOptions, event_time, journal_record, normalize
from tests.samples import (
    CONNECTION_ID,
    DIRECTORY_USER_ID,
    EMAIL,
    INVITEE_EMAIL,
    IP,
    IPV6,
    MISSING,
    ORG_ID,
    OTHER_EMAIL,
    OTHER_IP,
    OTHER_USER_ID,
    SAMPLES,
    USER_AGENT,
    USER_ID,
    make_event,
)

OPTIONS = NormalizeOptions()

# --- The catalog ------------------------------------------------------------------------------


def test_the_catalog_has_the_111_documented_types() -> None:
    assert len(catalog.KNOWN_EVENT_TYPES) == 111
    assert all(re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", t) for t in catalog.KNOWN_EVENT_TYPES)


def test_types_not_sent_by_webhook() -> None:
    assert catalog.WEBHOOK_UNAVAILABLE <= catalog.KNOWN_EVENT_TYPES
    assert {"action.authentication.denied", "dsync.token.created", "vault.dek.decrypted"} <= (
        catalog.WEBHOOK_UNAVAILABLE
    )
    assert {"authentication.email_verification_failed", "authentication.mfa_failed"} <= (
        catalog.WEBHOOK_UNAVAILABLE
    )
    assert "authentication.password_failed" not in catalog.WEBHOOK_UNAVAILABLE
    assert len(catalog.WEBHOOK_UNAVAILABLE) == 2 + 2 + 2 + 12  # action, auth, dsync.token, vault


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
        "pipes.connected_account.connection_failed",
        "waitlist_user.denied",
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


@pytest.mark.parametrize(
    ("event_type", "category", "outcome", "status"),
    [
        ("agent.registration.created", "agent", "info", "info"),
        ("pipes.connected_account.connection_failed", "pipes", "failure", "error"),
        ("resource_export.failed", "resource_export", "failure", "error"),
        ("pipes.account_connection.add_failed", "pipes", "failure", "error"),
        ("authentication.webauthn_timed_out", "authentication", "failure", "error"),
        ("action.invitation.denied", "action", "failure", "error"),
        ("domain.succeeded", "domain", "success", "info"),
        ("authentication.totp_succeeded", "authentication", "success", "info"),
        ("vault.dek.rekeyed", "vault", "info", "info"),
        ("heartbeat", "heartbeat", "info", "info"),
    ],
)
def test_unknown_and_known_types_are_classified_by_name(
    event_type: str, category: str, outcome: str, status: str
) -> None:
    assert catalog.category(event_type) == category
    assert catalog.outcome(event_type) == outcome
    assert catalog.status(event_type) == status


def test_metric_label_is_bounded_to_the_catalog() -> None:
    assert catalog.metric_event_label("authentication.sso_failed") == "authentication.sso_failed"
    assert catalog.metric_event_label("resource_export.created") == "other"
    assert catalog.metric_event_label("user.created user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE") == "other"


# --- Every sample, table-driven ---------------------------------------------------------------


def _expect(
    classification: str,
    message: str,
    *,
    usr: dict[str, str] | None = None,
    ip: str | None = None,
    ua: str | None = None,
    error: dict[str, str] | None = None,
    org: str | None = None,
    actor: bool = False,
) -> dict[str, Any]:
    """``classification`` is "status/outcome/category"; absent attributes are None."""
    status, outcome, category = classification.split("/")
    return {
        "status": status,
        "outcome": outcome,
        "category": category,
        "message": message,
        "usr": usr,
        "ip": ip,
        "ua": ua,
        "error": error,
        "org": org,
        "actor": actor,
    }


ADA = {"id": USER_ID, "email": EMAIL}
EXPECTED: dict[str, dict[str, Any]] = {
    "password_succeeded": _expect(
        "info/success/authentication",
        f"authentication.password_succeeded for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
    ),
    "oauth_succeeded": _expect(
        "info/success/authentication",
        f"authentication.oauth_succeeded for {EMAIL} from {IPV6}",
        usr=ADA,
        ip=IPV6,
        ua=USER_AGENT,
    ),
    "email_verification_succeeded": _expect(
        "info/success/authentication",
        f"authentication.email_verification_succeeded for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
    ),
    "reauthentication_succeeded": _expect(
        "info/success/authentication",
        f"authentication.reauthentication_succeeded for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
    ),
    "password_failed": _expect(
        "error/failure/authentication",
        f"authentication.password_failed for {EMAIL} from {IP}: invalid_credentials",
        usr={"email": EMAIL},
        ip=IP,
        ua=USER_AGENT,
        error={"kind": "invalid_credentials", "message": "Invalid credentials."},
    ),
    "magic_auth_failed": _expect(
        "error/failure/authentication",
        f"authentication.magic_auth_failed from {IPV6}: invalid_one_time_code",
        ip=IPV6,
        ua=USER_AGENT,
        error={"kind": "invalid_one_time_code", "message": "The one-time code is invalid or has expired."},
    ),
    "mfa_failed": _expect(
        "error/failure/authentication",
        f"authentication.mfa_failed for {EMAIL} from {IP}: invalid_one_time_code",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
        error={"kind": "invalid_one_time_code", "message": "The TOTP code is incorrect."},
    ),
    "oauth_failed": _expect(
        "error/failure/authentication",
        f"authentication.oauth_failed for {OTHER_EMAIL} from {OTHER_IP}: authentication_method_not_allowed",
        usr={"email": OTHER_EMAIL},
        ip=OTHER_IP,
        error={
            "kind": "authentication_method_not_allowed",
            "message": f"Google OAuth is disabled for the organization of {OTHER_EMAIL}.",
        },
    ),
    "passkey_failed": _expect(
        "error/failure/authentication",
        f"authentication.passkey_failed for {EMAIL} from {IP}: passkey_verification_failed",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
        error={"kind": "passkey_verification_failed", "message": "The passkey assertion was rejected."},
    ),
    "sso_started": _expect(
        "info/started/authentication",
        f"authentication.sso_started from {IP}",
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
    ),
    "sso_succeeded": _expect(
        "info/success/authentication",
        f"authentication.sso_succeeded for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
    ),
    "sso_failed": _expect(
        "error/failure/authentication",
        f"authentication.sso_failed for {EMAIL} from {IP}: invalid_saml_response",
        usr={"email": EMAIL},
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
        error={
            "kind": "invalid_saml_response",
            "message": f"SAML response for {EMAIL} from {OTHER_IP} failed signature validation.",
        },
    ),
    "sso_timed_out": _expect(
        "error/failure/authentication",
        f"authentication.sso_timed_out from {IPV6}: sso_timed_out",
        ip=IPV6,
        ua=USER_AGENT,
        org=ORG_ID,
        error={"kind": "sso_timed_out", "message": "The identity provider did not respond in time."},
    ),
    "radar_risk_detected": _expect(
        "warning/info/authentication",
        f"authentication.radar_risk_detected for {EMAIL} from {OTHER_IP}",
        usr=ADA,
        ip=OTHER_IP,
        ua=USER_AGENT,
    ),
    "radar_challenge_created": _expect("warning/info/radar", f"radar.challenge_created for {EMAIL}", usr=ADA),
    "action_authentication_denied": _expect(
        "error/failure/action",
        f"action.authentication.denied for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
    ),
    "action_user_registration_denied": _expect(
        "error/failure/action",
        f"action.user_registration.denied for {INVITEE_EMAIL} from {OTHER_IP}",
        usr={"email": INVITEE_EMAIL},
        ip=OTHER_IP,
        ua=USER_AGENT,
    ),
    "agent_registration_created": _expect("info/info/agent", "agent.registration.created", org=ORG_ID),
    "api_key_created": _expect("info/info/api_key", "api_key.created", actor=True),
    "connection_activated": _expect("info/info/connection", "connection.activated", org=ORG_ID, actor=True),
    "connection_deactivated": _expect("info/info/connection", "connection.deactivated", org=ORG_ID),
    "dsync_user_created": _expect(
        "info/info/dsync", f"dsync.user.created for {EMAIL}", usr={"email": EMAIL}, org=ORG_ID
    ),
    "dsync_group_user_added": _expect(
        "info/info/dsync",
        f"dsync.group.user_added for {EMAIL}",
        usr={"id": DIRECTORY_USER_ID, "email": EMAIL},
    ),
    "dsync_activated": _expect("info/info/dsync", "dsync.activated", org=ORG_ID),
    "email_verification_created": _expect(
        "info/info/email_verification", f"email_verification.created for {EMAIL}", usr=ADA
    ),
    "magic_auth_created": _expect("info/info/magic_auth", f"magic_auth.created for {EMAIL}", usr=ADA),
    "password_reset_created": _expect(
        "info/info/password_reset", f"password_reset.created for {EMAIL}", usr=ADA
    ),
    "password_reset_succeeded": _expect(
        "info/success/password_reset", f"password_reset.succeeded for {EMAIL}", usr=ADA
    ),
    "invitation_created": _expect(
        "info/info/invitation",
        f"invitation.created for {INVITEE_EMAIL}",
        usr={"email": INVITEE_EMAIL},
        org=ORG_ID,
        actor=True,
    ),
    "user_created": _expect("info/info/user", f"user.created for {EMAIL}", usr=ADA, actor=True),
    "user_updated": _expect("info/info/user", f"user.updated for {EMAIL}", usr=ADA, actor=True),
    "session_created": _expect(
        "info/info/session",
        f"session.created for {USER_ID} from {IP}",
        usr={"id": USER_ID},
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
    ),
    "session_revoked": _expect(
        "info/info/session",
        f"session.revoked for {USER_ID} from {IP}",
        usr={"id": USER_ID},
        ip=IP,
        ua=USER_AGENT,
        org=ORG_ID,
        actor=True,
    ),
    "organization_created": _expect("info/info/organization", "organization.created", org=ORG_ID, actor=True),
    "organization_updated": _expect("info/info/organization", "organization.updated", org=ORG_ID, actor=True),
    "organization_domain_verified": _expect(
        "info/success/organization_domain", "organization_domain.verified", org=ORG_ID
    ),
    "organization_domain_verification_failed": _expect(
        "warning/failure/organization_domain",
        "organization_domain.verification_failed: domain_verification_period_expired",
        error={"kind": "domain_verification_period_expired"},
        org=ORG_ID,
    ),
    "organization_membership_created": _expect(
        "info/info/organization_membership",
        f"organization_membership.created for {OTHER_USER_ID}",
        usr={"id": OTHER_USER_ID},
        org=ORG_ID,
    ),
    "organization_role_created": _expect(
        "info/info/organization_role", "organization_role.created", org=ORG_ID, actor=True
    ),
    "role_created": _expect("info/info/role", "role.created", actor=True),
    "permission_created": _expect("info/info/permission", "permission.created"),
    "group_member_added": _expect("info/info/group", "group.member_added", actor=True),
    "flag_created": _expect("info/info/flag", "flag.created", actor=True),
    "pipes_connected_account_connected": _expect(
        "info/info/pipes", f"pipes.connected_account.connected for {USER_ID}", usr={"id": USER_ID}, org=ORG_ID
    ),
    "pipes_connection_failed": _expect(
        "error/failure/pipes",
        f"pipes.connected_account.connection_failed for {USER_ID}: access_denied",
        usr={"id": USER_ID},
        org=ORG_ID,
        error={"kind": "access_denied", "message": "The user denied the authorization request."},
    ),
    "vault_data_read": _expect("info/info/vault", "vault.data.read"),
    "vault_kek_created": _expect("info/info/vault", "vault.kek.created"),
    "waitlist_user_created": _expect(
        "info/info/waitlist_user", f"waitlist_user.created for {INVITEE_EMAIL}", usr={"email": INVITEE_EMAIL}
    ),
    "waitlist_user_denied": _expect(
        "error/failure/waitlist_user",
        f"waitlist_user.denied for {INVITEE_EMAIL}",
        usr={"email": INVITEE_EMAIL},
        actor=True,
    ),
    "unknown_type": _expect("info/info/resource_export", "resource_export.created", actor=True),
    "unknown_failure": _expect(
        "error/failure/resource_export",
        "resource_export.failed: export_too_large",
        error={"kind": "export_too_large", "message": "The export exceeded 10 GB."},
    ),
    "webhook_minimal": _expect(
        "info/success/authentication",
        f"authentication.password_succeeded for {EMAIL} from {IP}",
        usr=ADA,
        ip=IP,
    ),
    "legacy_created_at": _expect("info/info/user", f"user.deleted for {EMAIL}", usr=ADA),
}


def test_every_sample_has_an_expectation() -> None:
    assert set(EXPECTED) == set(SAMPLES)


def test_samples_cover_every_category_and_have_unique_ids() -> None:
    known_categories = {catalog.category(t) for t in catalog.KNOWN_EVENT_TYPES}
    assert {catalog.category(event["event"]) for event in SAMPLES.values()} >= known_categories
    ids = [event["id"] for event in SAMPLES.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"event_01H[0-9A-HJKMNP-TV-Z]{23}", event_id) for event_id in ids)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_is_normalized_as_expected(name: str) -> None:
    event, want = SAMPLES[name], EXPECTED[name]
    record = normalize(event, OPTIONS)

    assert record["ddsource"] == "workos"
    assert record["service"] == "workos-events"
    assert record["status"] == want["status"]
    assert record["evt"] == {"name": event["event"], "outcome": want["outcome"]}
    assert record["message"] == want["message"]
    assert record.get("usr") == want["usr"]
    assert record.get("network") == ({"client": {"ip": want["ip"]}} if want["ip"] else None)
    assert record.get("http") == ({"useragent": want["ua"]} if want["ua"] else None)
    assert record.get("error") == want["error"]

    workos = record["workos"]
    assert workos["id"] == event["id"]
    assert workos["event"] == event["event"]
    assert workos["category"] == want["category"]
    assert workos["created_at"] == event["created_at"]
    assert workos.get("organization_id") == want["org"]
    assert ("actor" in workos) == want["actor"]
    if want["actor"]:
        assert workos["actor"] == event["context"]["actor"]
    assert workos["data"] == event["data"]
    assert workos.get("context") == event.get("context")
    assert workos["delivery"] == "webhook"

    assert _tags(record) == [
        "source:workos",
        "env:production",
        f"event:{event['event']}",
        f"category:{want['category']}",
        "forwarder:workos-forwarder",
    ]


def test_a_record_is_exactly_the_contract_shape() -> None:
    event = SAMPLES["sso_failed"]
    assert normalize(event, OPTIONS, delivery="api") == {
        "ddsource": "workos",
        "service": "workos-events",
        "ddtags": "source:workos,env:production,event:authentication.sso_failed,category:authentication,"
        "forwarder:workos-forwarder",
        "status": "error",
        "date": event["created_at"],
        "message": f"authentication.sso_failed for {EMAIL} from {IP}: invalid_saml_response",
        "evt": {"name": "authentication.sso_failed", "outcome": "failure"},
        "usr": {"email": EMAIL},
        "network": {"client": {"ip": IP}},
        "http": {"useragent": USER_AGENT},
        "error": {
            "kind": "invalid_saml_response",
            "message": f"SAML response for {EMAIL} from {OTHER_IP} failed signature validation.",
        },
        "workos": {
            "id": event["id"],
            "event": "authentication.sso_failed",
            "category": "authentication",
            "created_at": event["created_at"],
            "organization_id": ORG_ID,
            "data": event["data"],
            "context": {},
            "delivery": "api",
        },
    }
    assert event["data"]["sso"]["connection_id"] == CONNECTION_ID


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_records_have_no_nulls_or_empty_groups_and_serialize(name: str) -> None:
    record = normalize(SAMPLES[name], OPTIONS)
    for group in ("evt", "usr", "network", "http", "error"):
        if group in record:
            assert record[group] and None not in _leaves(record[group]), group
            assert "" not in _leaves(record[group]), group
    workos = record["workos"]
    assert all(workos[key] is not None for key in ("created_at", "organization_id", "actor") if key in workos)
    assert orjson.loads(orjson.dumps(record)) == record


def test_normalize_does_not_modify_the_event() -> None:
    for event in SAMPLES.values():
        before = copy.deepcopy(event)
        normalize(event, OPTIONS)
        assert event == before


def test_options_set_service_env_and_delivery() -> None:
    record = normalize(
        SAMPLES["user_created"], NormalizeOptions(service="auth-audit", env="Staging EU"), delivery="api"
    )
    assert record["service"] == "auth-audit"
    assert "env:staging_eu" in _tags(record)
    assert record["workos"]["delivery"] == "api"


# --- Tags ----------------------------------------------------------------------------------------

_ID_SHAPE = re.compile(r"[a-z_]+_01[0-9A-Z]{20,}")


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_tags_are_datadog_valid_and_never_carry_ids_or_emails(name: str) -> None:
    event = SAMPLES[name]
    record = normalize(event, OPTIONS)
    ddtags = record["ddtags"]
    for tag in _tags(record):
        assert tag == tag.lower()
        assert re.fullmatch(r"[a-z][a-z0-9_.:/-]*", tag), tag
        assert len(tag) <= 200
    assert "@" not in ddtags
    for value in _leaves(event):
        if isinstance(value, str) and _ID_SHAPE.fullmatch(value):
            assert value.lower() not in ddtags


@pytest.mark.parametrize(
    ("event_type", "tag"),
    [
        ("resource_export.created", "event:resource_export.created"),
        ("Resource_Export.Created", "event:resource_export.created"),
        ("user.created.user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE", "event:other"),
        (f"user.created for {EMAIL}", "event:other"),
        ("audit," + "x" * 300, "event:other"),
        ("9lives.created", "event:other"),
    ],
)
def test_unusual_types_are_tagged_safely_but_kept_in_the_record(event_type: str, tag: str) -> None:
    record = normalize(make_event(event_type), OPTIONS)
    tags = _tags(record)
    assert tags[2] == tag
    assert tags[3] == f"category:{tag.removeprefix('event:').split('.')[0]}"
    assert len(tags) == 5
    assert record["evt"]["name"] == event_type
    assert record["workos"]["event"] == event_type


def test_unknown_type_passes_through() -> None:
    event = make_event(
        "agent.blueprint.created", data={"id": "agent_blueprint_01HX", "organization_id": ORG_ID}
    )
    record = normalize(event, OPTIONS)
    assert record["status"] == "info"
    assert record["evt"] == {"name": "agent.blueprint.created", "outcome": "info"}
    assert record["workos"]["category"] == "agent"
    assert record["workos"]["organization_id"] == ORG_ID
    assert record["workos"]["data"] == event["data"]
    assert catalog.metric_event_label(record["evt"]["name"]) == "other"


# --- created_at ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "date"),
    [
        ("2023-04-28T20:05:31.093Z", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T20:05:31Z", "2023-04-28T20:05:31.000Z"),
        ("2023-04-28T20:05:31.093456Z", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T20:05:31.093456789Z", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T22:05:31.093+02:00", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T15:05:31-05:00", "2023-04-28T20:05:31.000Z"),
        ("2023-04-28T20:05:31+00:00", "2023-04-28T20:05:31.000Z"),
        ("2023-04-28 20:05:31.093", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T20:05:31.093", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28t20:05:31.093z", "2023-04-28T20:05:31.093Z"),
        ("2023-04-29T01:35:31.093+05:30", "2023-04-28T20:05:31.093Z"),
        ("2023-04-28T20:05:31,093Z", "2023-04-28T20:05:31.093Z"),
        ("2023-W17-5T20:05:31.093Z", "2023-04-28T20:05:31.093Z"),
        (" 2023-04-28T20:05:31.093Z ", "2023-04-28T20:05:31.093Z"),
    ],
)
def test_created_at_is_parsed_leniently_to_utc_milliseconds(raw: str, date: str) -> None:
    event = make_event("user.created", created_at=raw)
    record = normalize(event, OPTIONS)
    assert record["date"] == date
    assert record["workos"]["created_at"] == raw
    epoch = datetime.fromisoformat(date).timestamp()
    assert journal_record(event, OPTIONS, delivery="api").created_at == pytest.approx(epoch, abs=0.001)
    assert event_time(record) == pytest.approx(epoch, abs=0.001)


@pytest.mark.parametrize("raw", ["yesterday", "", "2023-13-45T99:00:00Z", 1682712331, None, MISSING])
def test_unparseable_created_at_falls_back_to_now_and_keeps_the_raw_value(raw: Any) -> None:
    event = make_event("user.created", created_at=raw)
    before = time.time()
    record = normalize(event, OPTIONS)
    after = time.time()
    assert before - 0.001 <= event_time(record) <= after + 0.001
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["date"])
    assert journal_record(event, OPTIONS, delivery="api").created_at is None
    if raw is None or raw is MISSING:
        assert "created_at" not in record["workos"]
    else:
        assert record["workos"]["created_at"] == raw


def test_the_journal_row_is_the_normalized_record_beside_its_id_type_and_time() -> None:
    event = make_event("authentication.password_failed", created_at="2023-04-28T20:05:31.093Z")
    stored = journal_record(event, OPTIONS, delivery="api")
    assert orjson.loads(stored.json) == normalize(event, OPTIONS, delivery="api")
    assert (stored.event_id, stored.event_type) == (event["id"], "authentication.password_failed")
    assert stored.created_at == datetime(2023, 4, 28, 20, 5, 31, 93000, tzinfo=UTC).timestamp()


def test_created_at_of_the_legacy_docs_sample_is_utc() -> None:
    stored = journal_record(SAMPLES["legacy_created_at"], OPTIONS, delivery="webhook")
    assert stored.created_at == datetime(2023, 4, 28, 20, 5, 31, 93000, tzinfo=UTC).timestamp()


# --- Invalid events -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "says"),
    [
        ([], "must be a JSON object, got an array"),
        ("event", "must be a JSON object, got a string"),
        (None, "must be a JSON object, got null"),
        ({}, 'has no "id"'),
        ({"id": "", "event": "user.created"}, 'has no "id"'),
        ({"id": 42, "event": "user.created"}, 'has no "id": a non-empty string is required, got a number'),
        ({"id": "event_01HX", "data": {}}, 'event event_01HX has no "event" type'),
        ({"id": "event_01HX", "event": ""}, 'event event_01HX has no "event" type'),
        ({"id": "event_01HX", "event": ["user.created"]}, "got an array"),
        (
            {"id": "event_01HX", "event": "user.created", "data": []},
            'event event_01HX: "data" must be an object',
        ),
        ({"id": "event_01HX", "event": "user.created", "data": "x"}, "got a string"),
    ],
)
def test_invalid_events_are_rejected_with_the_reason(event: Any, says: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(says)):
        normalize(event, OPTIONS)


def test_invalid_event_is_a_value_error() -> None:
    assert issubclass(InvalidEvent, ValueError)


@pytest.mark.parametrize("data", [MISSING, None])
def test_missing_data_is_an_empty_object(data: Any) -> None:
    event = make_event("user.deleted", data=data)
    record = normalize(event, OPTIONS)
    assert record["workos"]["data"] == {}
    assert record["message"] == "user.deleted"
    assert "usr" not in record


def test_the_smallest_valid_event() -> None:
    record = normalize({"id": "event_01HX", "event": "user.created"}, OPTIONS)
    assert record["workos"] == {
        "id": "event_01HX",
        "event": "user.created",
        "category": "user",
        "data": {},
        "delivery": "webhook",
    }


# --- helpers -----------------------------------------------------------------------------------


def _tags(record: dict[str, Any]) -> list[str]:
    return record["ddtags"].split(",")


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]
