"""The normalized record: what every sink, dashboard and monitor sees of a WorkOS event."""

from __future__ import annotations

import copy
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from forwarder import catalog
from forwarder.normalize import (
    MAX_DEPTH,
    MAX_TEXT_CHARS,
    ORJSON_MAX_DEPTH,
    InvalidEvent,
    NormalizeOptions,
    body_error,
    event_time,
    journal_record,
    normalize,
)
from forwarder.redaction import Redactor
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
    USER_AGENT,
    USER_ID,
    make_event,
)
from tests.samples import (
    SAMPLES as SHARED_SAMPLES,
)

OPTIONS = NormalizeOptions()

# tests/samples.py, plus feature_flags.* (SDK 10.8): the namespaced successor of flag.*, the same
# flag object, so every category of the catalog has a sample here.
SAMPLES = {
    **SHARED_SAMPLES,
    "feature_flags_flag_created": make_event(
        "feature_flags.flag.created",
        data=copy.deepcopy(SHARED_SAMPLES["flag_created"]["data"]),
        context=copy.deepcopy(SHARED_SAMPLES["flag_created"]["context"]),
    ),
}

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
    sign_in: bool | None = None,
) -> dict[str, Any]:
    """``classification`` is "status/outcome/category"; absent attributes are None.

    ``sign_in``: the record's ``evt.category`` is ``authentication`` (default: for that category)."""
    status, outcome, category = classification.split("/")
    return {
        "status": status,
        "outcome": outcome,
        "category": category,
        "evt_category": "authentication"
        if (category == "authentication" if sign_in is None else sign_in)
        else None,
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
        sign_in=True,
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
    "api_key_created": _expect("info/info/api_key", "api_key.created", org=ORG_ID, actor=True),
    "connection_activated": _expect("info/info/connection", "connection.activated", org=ORG_ID, actor=True),
    "connection_deactivated": _expect("info/info/connection", "connection.deactivated", org=ORG_ID),
    "dsync_user_created": _expect(
        "info/info/dsync", f"dsync.user.created for {EMAIL}", usr={"email": EMAIL}, org=ORG_ID
    ),
    "dsync_group_user_added": _expect(
        "info/info/dsync",
        f"dsync.group.user_added for {EMAIL}",
        usr={"id": DIRECTORY_USER_ID, "email": EMAIL},
        org=ORG_ID,
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
    "feature_flags_flag_created": _expect(
        "info/info/feature_flags", "feature_flags.flag.created", actor=True
    ),
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
    "vault_data_read": _expect(  # the actor is the user (docs/record.md, "Vault: who acted")
        "info/info/vault", "vault.data.read", usr={"id": USER_ID, "name": "billing-service"}, actor=True
    ),
    "vault_kek_created": _expect(
        "info/info/vault", "vault.kek.created", usr={"id": USER_ID, "name": "Ada Lovelace"}, actor=True
    ),
    "waitlist_user_created": _expect(
        "info/info/waitlist_user", f"waitlist_user.created for {INVITEE_EMAIL}", usr={"email": INVITEE_EMAIL}
    ),
    "waitlist_user_denied": _expect(  # an administrator's decision, not a failure
        "info/info/waitlist_user",
        f"waitlist_user.denied for {INVITEE_EMAIL}",
        usr={"email": INVITEE_EMAIL},
        actor=True,
    ),
    # Named for when the catalog lacked resource_export.* (SDK 10.8 added it).
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
    evt = {"name": event["event"], "outcome": want["outcome"]}
    if want["evt_category"]:
        evt["category"] = want["evt_category"]
    assert record["evt"] == evt
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
    if want["actor"] and want["category"] == "vault":
        data = event["data"]
        assert workos["actor"] == {
            "id": data["actor_id"],
            "source": data["actor_source"],
            "name": data["actor_name"],
        }
    elif want["actor"]:
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
        "evt": {"name": "authentication.sso_failed", "outcome": "failure", "category": "authentication"},
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
            "organization_ids": [ORG_ID],
            "attribution": "event",
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
    ("event_type", "tag", "category"),
    [
        ("resource_export.created", "event:resource_export.created", "resource_export"),
        ("Resource_Export.Created", "event:resource_export.created", "other"),
        ("authentication.webauthn_failed", "event:authentication.webauthn_failed", "authentication"),
        ("user.created.user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE", "event:other", "user"),
        (f"user.created for {EMAIL}", "event:other", "user"),
        ("audit," + "x" * 200, "event:other", "other"),
        ("9lives.created", "event:other", "other"),
        (f"{EMAIL}.signed_in", "event:other", "other"),
    ],
)
def test_unusual_types_are_tagged_safely_but_kept_in_the_record(
    event_type: str, tag: str, category: str
) -> None:
    record = normalize(make_event(event_type), OPTIONS)
    tags = _tags(record)
    assert tags[2] == tag
    assert tags[3] == f"category:{category}"
    assert record["workos"]["category"] == category
    assert len(tags) == 5
    assert record["evt"]["name"] == event_type
    assert record["workos"]["event"] == event_type


def test_unknown_type_passes_through() -> None:
    event = make_event(
        "agent.workflow.created", data={"id": "agent_workflow_01HX", "organization_id": ORG_ID}
    )
    record = normalize(event, OPTIONS)
    assert record["status"] == "info"
    assert record["evt"] == {"name": "agent.workflow.created", "outcome": "info"}
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


# --- Bad input: text fields, nesting ---------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "says"),
    [
        (
            {"id": "event_\x00abc", "event": "user.created"},
            '"id" contains a control character (U+0000) at index 6',
        ),
        (
            {"id": "event_01HX\n", "event": "user.created"},
            '"id" contains a control character (U+000A) at index 10',
        ),
        ({"id": "event_\x7f", "event": "user.created"}, '"id" contains a control character (U+007F)'),
        ({"id": "event_\x9b", "event": "user.created"}, '"id" contains a control character (U+009B)'),
        ({"id": "event_\u202e", "event": "user.created"}, '"id" contains a format character (U+202E)'),
        ({"id": "e" * 256, "event": "user.created"}, '"id" is 256 characters long; the limit is 255'),
        ({"id": "event_01HX", "event": "user.\x00created"}, 'event event_01HX: "event" contains a control'),
        ({"id": "event_01HX", "event": "user.created\r\n"}, '"event" contains a control character (U+000D)'),
        ({"id": "event_01HX", "event": "u" * 256}, 'event event_01HX: "event" is 256 characters long'),
    ],
)
def test_control_characters_and_long_ids_are_refused_naming_the_field(event: Any, says: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(says)):
        journal_record(event, OPTIONS, delivery="webhook")


def test_the_refused_id_is_shown_escaped() -> None:
    with pytest.raises(InvalidEvent) as refused:
        normalize({"id": "event_\x00\x1b[31m", "event": "user.created"}, OPTIONS)
    assert str(refused.value).isprintable()
    assert "'event_\\x00\\x1b[31m'" in str(refused.value)


def _printable(text: str) -> bool:
    """The rule, stated apart from ``str.isprintable``: no "other" (Cc, Cf, Cs, Co, Cn) and no
    separator (Zs, Zl, Zp) but the plain space."""
    return all(char == " " or unicodedata.category(char)[0] not in "CZ" for char in text)


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0)], ids=lambda code: f"U+{code:04X}")
@pytest.mark.parametrize("field", ["id", "event"])
def test_every_c0_and_c1_control_and_del_is_refused(code: int, field: str) -> None:
    event = {"id": "event_01HX", "event": "user.created"}
    event[field] = f"{event[field][:5]}{chr(code)}{event[field][5:]}"
    says = f'"{field}" contains a control character (U+{code:04X}) at index 5'
    with pytest.raises(InvalidEvent, match=re.escape(says)):
        journal_record(event, OPTIONS, delivery="api")


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=300))
@example("event_01HX", "user.created")
@example("e" * MAX_TEXT_CHARS, "é" * MAX_TEXT_CHARS)
@example("event 01HX", "user.created for ada")
def test_ids_and_types_are_accepted_exactly_when_short_and_printable(event_id: str, event_type: str) -> None:
    event = {"id": event_id, "event": event_type}
    id_ok = len(event_id) <= MAX_TEXT_CHARS and _printable(event_id)
    type_ok = len(event_type) <= MAX_TEXT_CHARS and _printable(event_type)
    try:
        stored = journal_record(event, OPTIONS, delivery="api")
    except InvalidEvent as exc:
        assert not (id_ok and type_ok)
        assert ('"id"' if not id_ok else '"event"') in str(exc)
        assert str(exc).isprintable()
    else:
        assert id_ok and type_ok
        assert (stored.event_id, stored.event_type) == (event_id, event_type)
        assert "\x00" not in stored.event_id + stored.event_type


_JSON_TEXT = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=20)


@given(st.dictionaries(_JSON_TEXT, _JSON_TEXT | st.lists(_JSON_TEXT, max_size=3), max_size=5))
@example({"note": "a\x00b", "a\x00key": "\x00", "ctl": "\x1b\x7f\x85"})
def test_any_text_inside_data_is_kept_unchanged(data: dict[str, Any]) -> None:
    event = make_event("user.updated", data=data)
    stored = journal_record(event, OPTIONS, delivery="webhook")
    assert orjson.loads(stored.json)["workos"]["data"] == data
    assert b"\x00" not in stored.json  # escaped as \u0000: valid JSON and bytes any engine stores


def _nested(depth: int, kind: str = "object") -> Any:
    """A value nested ``depth`` containers deep (``{}`` is 1)."""
    value: Any = {} if kind == "object" else []
    for _ in range(depth - 1):
        value = {"a": value} if kind == "object" else [value]
    return value


def test_orjson_still_encodes_exactly_254_levels() -> None:
    # MAX_DEPTH is derived from this; an orjson upgrade that moves it must be noticed here.
    orjson.dumps(_nested(ORJSON_MAX_DEPTH))
    with pytest.raises(orjson.JSONEncodeError, match="Recursion limit"):
        orjson.dumps(_nested(ORJSON_MAX_DEPTH + 1))


@pytest.mark.parametrize("field", ["data", "context", "created_at"])
@pytest.mark.parametrize("kind", ["object", "array"])
def test_nesting_up_to_the_limit_is_stored_and_beyond_it_refused(field: str, kind: str) -> None:
    deepest = _nested(MAX_DEPTH, kind)
    if field == "data" and kind == "array":
        deepest = {"a": _nested(MAX_DEPTH - 1, kind)}
    stored = journal_record(make_event("user.created", **{field: deepest}), OPTIONS, delivery="api")
    assert orjson.loads(orjson.dumps(orjson.loads(stored.json))) == orjson.loads(stored.json)

    too_deep = {"a": _nested(MAX_DEPTH, kind)}
    event = make_event("user.created", **{field: too_deep})
    says = f'event {event["id"]}: "{field}" is nested {MAX_DEPTH + 1} levels deep; the limit is {MAX_DEPTH}'
    with pytest.raises(InvalidEvent, match=re.escape(says)):
        journal_record(event, OPTIONS, delivery="api")


@pytest.mark.parametrize("depth", [300, 1_000, 1_023])
@pytest.mark.parametrize("redaction", [None, Redactor(mode="drop")], ids=["plain", "redacted"])
def test_deep_data_is_an_invalid_event_never_another_error(depth: int, redaction: Redactor | None) -> None:
    options = NormalizeOptions(redaction=redaction)
    event = make_event("user.created", data=_nested(depth))
    with pytest.raises(InvalidEvent, match=f'"data" is nested {depth} levels deep; the limit is {MAX_DEPTH}'):
        journal_record(event, options, delivery="webhook")


def test_a_body_too_deep_to_decode_names_the_decoder_limit() -> None:
    with pytest.raises(orjson.JSONDecodeError) as refused:
        orjson.loads(b'{"data":' + b"[" * 1_100 + b"]" * 1_100 + b"}")
    assert body_error(refused.value).startswith("body is nested deeper than 1024 levels")
    with pytest.raises(orjson.JSONDecodeError) as not_json:
        orjson.loads(b"nope")
    assert body_error(not_json.value).startswith("body is not JSON: ")


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
