"""Realistic WorkOS events, shared by every test that needs one.

Shapes follow the WorkOS docs and the generated models of the official Python SDK
(workos 10.x): authentication failures with ``error{code, message}``, SSO events with
``sso{}``, Radar, Actions, Directory Sync, Pipes, Vault, sessions with an impersonator, and
so on. Personal data uses documentation values only (``example.com``/``example.org``
addresses, 203.0.113.0/24, 198.51.100.0/24 and 2001:db8::/32), listed in ``EMAILS`` and
``IPS`` so redaction tests can prove none of them survives.

``SAMPLES`` maps a name to an event. ``make_event(type, **overrides)`` builds a fresh event
with a unique id; its ``data`` defaults to a copy of the sample's data for that type.
Pass ``MISSING`` as an override to leave a top-level key out (webhook bodies may lack
``object`` and ``context``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from forwarder.normalize import event_time
from forwarder.records import Entry, NewRecord

MISSING: Any = object()
"""Override value meaning "leave this key out of the event"."""

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_sequence = itertools.count(1)
_BASE_TIME = datetime(2026, 11, 26, 23, 31, 0, 123000, tzinfo=UTC)


def new_id(prefix: str) -> str:
    """A WorkOS-style id (``event_01H`` + 23 ULID characters), unique within the test run."""
    digest = hashlib.sha256(f"{prefix}:{next(_sequence)}".encode()).digest()
    return f"{prefix}_01H{''.join(_CROCKFORD[byte % 32] for byte in digest[:23])}"


def _next_created_at() -> str:
    """Distinct, increasing creation times in WorkOS's usual millisecond form."""
    moment = _BASE_TIME + timedelta(seconds=next(_sequence))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Fixed ids and personal data ---------------------------------------------------------

USER_ID = "user_01HWZBQ8NJ5J7Y2D3XKTA9C6RE"
OTHER_USER_ID = "user_01HX0C4M2T8VRZ7Q1B5G3NEKDA"
ORG_ID = "org_01HWZBQ5D8YZ2M4G6N3X9EKT1P"
CONNECTION_ID = "conn_01HWZC1XQ3A7M9P2V6K8T4YREB"
DIRECTORY_ID = "directory_01HWZD6F8K2Q4T9X3V7M1PNAEC"
DIRECTORY_USER_ID = "directory_user_01HWZD9A3M7X2K5T8Q4V1RNBCE"
DIRECTORY_GROUP_ID = "directory_group_01HWZDB4P9K3M6T2X8Q5V7RAEF"
SESSION_ID = "session_01HX0A2B4C6D8E0F2G4H6J8K0M"
SSO_SESSION_ID = "sso_session_01HX0A9Z7Y5X3W1V9T7S5R3Q1P"
MEMBERSHIP_ID = "om_01HX0B3C5D7E9F1G3H5J7K9M1N"
CLIENT_ID = "client_01HWZ9K2M4P6R8T0V2X4Z6B8DA"

EMAIL = "ada.lovelace@example.com"
OTHER_EMAIL = "Grace.Hopper@example.org"
IMPERSONATOR_EMAIL = "support-agent@example.com"
PREVIOUS_EMAIL = "ada@example.org"
INVITEE_EMAIL = "new.hire+onboarding@example.com"
IP = "203.0.113.7"
OTHER_IP = "198.51.100.23"
IPV6 = "2001:db8:85a3::8a2e:370:7334"
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

EMAILS = frozenset({EMAIL, OTHER_EMAIL, IMPERSONATOR_EMAIL, PREVIOUS_EMAIL, INVITEE_EMAIL})
IPS = frozenset({IP, OTHER_IP, IPV6})

_SSO = {"organization_id": ORG_ID, "connection_id": CONNECTION_ID, "session_id": SSO_SESSION_ID}
_DASHBOARD_ACTOR = {"id": USER_ID, "source": "dashboard", "name": "Ada Lovelace"}
_API_ACTOR = {"id": "key_01HX0D5E7F9G1H3J5K7M9N1P3Q", "source": "api", "name": "Provisioning key"}


def _directory_user(**extra: Any) -> dict[str, Any]:
    return {
        "object": "directory_user",
        "id": DIRECTORY_USER_ID,
        "directory_id": DIRECTORY_ID,
        "organization_id": ORG_ID,
        "idp_id": "00u1a2b3c4d5e6f7g8h9",
        "email": EMAIL,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "emails": [{"primary": True, "type": "work", "value": EMAIL}],
        "username": EMAIL,
        "state": "active",
        "custom_attributes": {"department": "Engineering", "manager_email": OTHER_EMAIL},
        "raw_attributes": {"userName": EMAIL, "emails": [{"value": EMAIL, "primary": True}], "active": True},
        "role": {"slug": "member"},
        "created_at": "2026-11-20T09:12:44.512Z",
        "updated_at": "2026-11-26T23:30:58.004Z",
        **extra,
    }


def _user(**extra: Any) -> dict[str, Any]:
    return {
        "object": "user",
        "id": USER_ID,
        "email": EMAIL,
        "email_verified": True,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "profile_picture_url": None,
        "external_id": None,
        "last_sign_in_at": "2026-11-26T08:02:11.020Z",
        "metadata": {},
        "created_at": "2026-01-05T10:00:00.000Z",
        "updated_at": "2026-11-26T23:30:59.870Z",
        **extra,
    }


def _session(**extra: Any) -> dict[str, Any]:
    return {
        "object": "session",
        "id": SESSION_ID,
        "user_id": USER_ID,
        "organization_id": ORG_ID,
        "ip_address": IP,
        "user_agent": USER_AGENT,
        "auth_method": "password",
        "status": "active",
        "expires_at": "2026-12-03T23:31:00.000Z",
        "ended_at": None,
        "created_at": "2026-11-26T23:31:00.000Z",
        "updated_at": "2026-11-26T23:31:00.000Z",
        **extra,
    }


def _organization_domain(state: str) -> dict[str, Any]:
    return {
        "object": "organization_domain",
        "id": "org_domain_01HX0E1F3G5H7J9K1M3N5P7Q9R",
        "organization_id": ORG_ID,
        "domain": "example.com",
        "state": state,
        "verification_strategy": "dns",
        "verification_prefix": "workos-verification",
        "verification_token": "aW5ub2NlbnQtdG9rZW4",
        "created_at": "2026-11-19T14:00:00.000Z",
        "updated_at": "2026-11-26T23:31:00.000Z",
    }


# name -> (event type, data, context or MISSING)
_DEFINITIONS: dict[str, tuple[str, dict[str, Any], Any]] = {
    # authentication: successes
    "password_succeeded": (
        "authentication.password_succeeded",
        {
            "type": "password",
            "status": "succeeded",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
        },
        {"client_id": CLIENT_ID},
    ),
    "oauth_succeeded": (
        "authentication.oauth_succeeded",
        {
            "type": "oauth",
            "status": "succeeded",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IPV6,
            "user_agent": USER_AGENT,
        },
        {},
    ),
    "email_verification_succeeded": (
        "authentication.email_verification_succeeded",
        {
            "type": "email_verification",
            "status": "succeeded",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": None,
        },
        {},
    ),
    "reauthentication_succeeded": (
        "authentication.reauthentication_succeeded",
        {
            "type": "reauthentication",
            "status": "succeeded",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
        },
        {},
    ),
    # authentication: failures (user_id / email may be null)
    "password_failed": (
        "authentication.password_failed",
        {
            "type": "password",
            "status": "failed",
            "user_id": None,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "error": {"code": "invalid_credentials", "message": "Invalid credentials."},
        },
        {"client_id": CLIENT_ID},
    ),
    "magic_auth_failed": (
        "authentication.magic_auth_failed",
        {
            "type": "magic_auth",
            "status": "failed",
            "user_id": None,
            "email": None,
            "ip_address": IPV6,
            "user_agent": USER_AGENT,
            "error": {
                "code": "invalid_one_time_code",
                "message": "The one-time code is invalid or has expired.",
            },
        },
        {},
    ),
    "mfa_failed": (
        "authentication.mfa_failed",
        {
            "type": "mfa",
            "status": "failed",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "error": {"code": "invalid_one_time_code", "message": "The TOTP code is incorrect."},
        },
        {},
    ),
    "oauth_failed": (
        "authentication.oauth_failed",
        {
            "type": "oauth",
            "status": "failed",
            "user_id": None,
            "email": OTHER_EMAIL,
            "ip_address": OTHER_IP,
            "user_agent": None,
            "error": {
                "code": "authentication_method_not_allowed",
                "message": f"Google OAuth is disabled for the organization of {OTHER_EMAIL}.",
            },
        },
        {},
    ),
    "passkey_failed": (
        "authentication.passkey_failed",
        {
            "type": "passkey",
            "status": "failed",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "error": {
                "code": "passkey_verification_failed",
                "message": "The passkey assertion was rejected.",
            },
        },
        {},
    ),
    # authentication: SSO (sso{} carries the organization)
    "sso_started": (
        "authentication.sso_started",
        {
            "type": "sso",
            "status": "started",
            "user_id": None,
            "email": None,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "sso": _SSO,
        },
        {},
    ),
    "sso_succeeded": (
        "authentication.sso_succeeded",
        {
            "type": "sso",
            "status": "succeeded",
            "user_id": USER_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "sso": _SSO,
        },
        {"client_id": CLIENT_ID},
    ),
    "sso_failed": (
        "authentication.sso_failed",
        {
            "type": "sso",
            "status": "failed",
            "user_id": None,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
            "sso": _SSO,
            "error": {
                "code": "invalid_saml_response",
                "message": f"SAML response for {EMAIL} from {OTHER_IP} failed signature validation.",
            },
        },
        {},
    ),
    "sso_timed_out": (
        "authentication.sso_timed_out",
        {
            "type": "sso",
            "status": "timed_out",
            "user_id": None,
            "email": None,
            "ip_address": IPV6,
            "user_agent": USER_AGENT,
            "sso": _SSO,
            "error": {"code": "sso_timed_out", "message": "The identity provider did not respond in time."},
        },
        {},
    ),
    # security signals
    "radar_risk_detected": (
        "authentication.radar_risk_detected",
        {
            "auth_method": "password",
            "action": "login",
            "control": "challenge",
            "blocklist_type": "ip_address",
            "ip_address": OTHER_IP,
            "user_agent": USER_AGENT,
            "user_id": USER_ID,
            "email": EMAIL,
        },
        {},
    ),
    "radar_challenge_created": (
        "radar.challenge_created",
        {
            "type": "email",
            "radar_challenge_id": "radar_challenge_01HX0F2G4H6J8K0M2N4P6Q8R0S",
            "user_id": USER_ID,
            "email": EMAIL,
        },
        {},
    ),
    "action_authentication_denied": (
        "action.authentication.denied",
        {
            "action_endpoint_id": "action_endpoint_01HX0G3H5J7K9M1N3P5Q7R9S1T",
            "action_execution_id": "action_execution_01HX0G4J6K8M0N2P4Q6R8S0T2V",
            "type": "authentication",
            "verdict": "Deny",
            "user_id": USER_ID,
            "organization_id": ORG_ID,
            "email": EMAIL,
            "ip_address": IP,
            "user_agent": USER_AGENT,
        },
        {},
    ),
    "action_user_registration_denied": (
        "action.user_registration.denied",
        {
            "action_endpoint_id": "action_endpoint_01HX0G3H5J7K9M1N3P5Q7R9S1T",
            "action_execution_id": "action_execution_01HX0G5K7M9N1P3Q5R7S9T1V3W",
            "type": "user_registration",
            "verdict": "Deny",
            "organization_id": None,
            "email": INVITEE_EMAIL,
            "ip_address": OTHER_IP,
            "user_agent": USER_AGENT,
        },
        {},
    ),
    # agents, API keys
    "agent_registration_created": (
        "agent.registration.created",
        {
            "object": "agent_registration",
            "id": "agent_registration_01HX0H6M8N0P2Q4R6S8T0V2W4X",
            "agent_identity": {
                "name": "billing-reconciler",
                "client_id": "client_01HX0H7N9P1Q3R5S7T9V1W3X5Y",
            },
            "organization_id": ORG_ID,
            "status": "pending",
            "kind": "autonomous",
            "method": "dynamic_client_registration",
            "created_at": "2026-11-26T23:30:59.000Z",
            "updated_at": "2026-11-26T23:30:59.000Z",
        },
        {},
    ),
    "api_key_created": (
        "api_key.created",
        {
            "object": "api_key",
            "id": "api_key_01HX0J7P9Q1R3S5T7V9W1X3Y5Z",
            "owner": {"type": "organization", "id": ORG_ID},
            "name": "CI deploys",
            "obfuscated_value": "sk_...Xq2B",
            "last_used_at": None,
            "expires_at": None,
            "permissions": ["users:read"],
            "created_at": "2026-11-26T23:30:59.000Z",
            "updated_at": "2026-11-26T23:30:59.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    # SSO connections, directory sync
    "connection_activated": (
        "connection.activated",
        {
            "object": "connection",
            "id": CONNECTION_ID,
            "organization_id": ORG_ID,
            "state": "active",
            "status": "linked",
            "name": "Okta SAML",
            "connection_type": "OktaSAML",
            "external_key": "3QMR4u0Tok6SgwY2AWG6u6mkQ",
            "domains": [
                {
                    "id": "conn_domain_01HX0K8Q0R2S4T6V8W0X2Y4Z6A",
                    "object": "connection_domain",
                    "domain": "example.com",
                }
            ],
            "created_at": "2026-11-01T10:00:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    "connection_deactivated": (
        "connection.deactivated",
        {
            "object": "connection",
            "id": CONNECTION_ID,
            "organization_id": ORG_ID,
            "state": "inactive",
            "status": "unlinked",
            "name": "Okta SAML",
            "connection_type": "OktaSAML",
            "external_key": "3QMR4u0Tok6SgwY2AWG6u6mkQ",
            "domains": [],
            "created_at": "2026-11-01T10:00:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "dsync_user_created": ("dsync.user.created", _directory_user(), {}),
    "dsync_group_user_added": (
        "dsync.group.user_added",
        {
            "directory_id": DIRECTORY_ID,
            "user": _directory_user(),
            "group": {
                "object": "directory_group",
                "id": DIRECTORY_GROUP_ID,
                "idp_id": "00g9z8y7x6w5v4u3t2s1",
                "directory_id": DIRECTORY_ID,
                "organization_id": ORG_ID,
                "name": "Engineering",
                "created_at": "2026-11-01T10:00:00.000Z",
                "updated_at": "2026-11-26T23:31:00.000Z",
            },
        },
        {},
    ),
    "dsync_activated": (
        "dsync.activated",
        {
            "object": "directory",
            "id": DIRECTORY_ID,
            "organization_id": ORG_ID,
            "type": "okta scim v2.0",
            "state": "active",
            "name": "Okta SCIM",
            "external_key": "r3NDlInUnQW8o6u2",
            "domains": [
                {
                    "object": "organization_domain",
                    "id": "org_domain_01HX0E1F3G5H7J9K1M3N5P7Q9R",
                    "domain": "example.com",
                }
            ],
            "created_at": "2026-11-01T10:00:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    # user management objects
    "email_verification_created": (
        "email_verification.created",
        {
            "object": "email_verification",
            "id": "email_verification_01HX0M9R1S3T5V7W9X1Y3Z5A7B",
            "user_id": USER_ID,
            "email": EMAIL,
            "expires_at": "2026-11-27T23:31:00.000Z",
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "magic_auth_created": (
        "magic_auth.created",
        {
            "object": "magic_auth",
            "id": "magic_auth_01HX0NAS2T4V6W8X0Y2Z4A6B8C",
            "user_id": USER_ID,
            "email": EMAIL,
            "expires_at": "2026-11-26T23:41:00.000Z",
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "password_reset_created": (
        "password_reset.created",
        {
            "object": "password_reset",
            "id": "password_reset_01HX0PBT3V5W7X9Y1Z3A5B7C9D",
            "user_id": USER_ID,
            "email": EMAIL,
            "expires_at": "2026-11-27T00:01:00.000Z",
            "created_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "password_reset_succeeded": (
        "password_reset.succeeded",
        {
            "object": "password_reset",
            "id": "password_reset_01HX0PBT3V5W7X9Y1Z3A5B7C9D",
            "user_id": USER_ID,
            "email": EMAIL,
            "expires_at": "2026-11-27T00:01:00.000Z",
            "created_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "invitation_created": (
        "invitation.created",
        {
            "object": "invitation",
            "id": "invitation_01HX0QCV4W6X8Y0Z2A4B6C8D0E",
            "email": INVITEE_EMAIL,
            "state": "pending",
            "accepted_at": None,
            "revoked_at": None,
            "expires_at": "2026-12-03T23:31:00.000Z",
            "organization_id": ORG_ID,
            "inviter_user_id": USER_ID,
            "accepted_user_id": None,
            "role_slug": "member",
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    "user_created": ("user.created", _user(), {"actor": _API_ACTOR}),
    "user_updated": (
        "user.updated",
        _user(),
        {
            "actor": _DASHBOARD_ACTOR,
            "previous_attributes": {"email": PREVIOUS_EMAIL, "email_verified": False},
        },
    ),
    "session_created": (
        "session.created",
        _session(impersonator={"email": IMPERSONATOR_EMAIL, "reason": f"Ticket 4821: {EMAIL} cannot log in"}),
        {"client_id": CLIENT_ID},
    ),
    "session_revoked": (
        "session.revoked",
        _session(status="revoked", ended_at="2026-11-26T23:31:00.000Z"),
        {"actor": _DASHBOARD_ACTOR},
    ),
    # organizations
    "organization_created": (
        "organization.created",
        {
            "object": "organization",
            "id": ORG_ID,
            "name": "Example Corp",
            "domains": [
                {
                    "object": "organization_domain",
                    "id": "org_domain_01HX0E1F3G5H7J9K1M3N5P7Q9R",
                    "domain": "example.com",
                    "state": "verified",
                }
            ],
            "metadata": {"tier": "enterprise"},
            "external_id": "crm-4821",
            "stripe_customer_id": None,
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _API_ACTOR},
    ),
    "organization_updated": (
        "organization.updated",
        {
            "object": "organization",
            "id": ORG_ID,
            "name": "Example Corporation",
            "domains": [],
            "metadata": {"tier": "enterprise"},
            "external_id": "crm-4821",
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:35:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR, "previous_attributes": {"name": "Example Corp"}},
    ),
    "organization_domain_verified": ("organization_domain.verified", _organization_domain("verified"), {}),
    "organization_domain_verification_failed": (
        "organization_domain.verification_failed",
        {
            "reason": "domain_verification_period_expired",
            "organization_domain": _organization_domain("failed"),
        },
        {},
    ),
    "organization_membership_created": (
        "organization_membership.created",
        {
            "object": "organization_membership",
            "id": MEMBERSHIP_ID,
            "user_id": OTHER_USER_ID,
            "organization_id": ORG_ID,
            "status": "active",
            "role": {"slug": "member"},
            "custom_attributes": {},
            "directory_managed": False,
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "organization_role_created": (
        "organization_role.created",
        {
            "object": "role",
            "slug": "org-billing-admin",
            "organization_id": ORG_ID,
            "resource_type_slug": "organization",
            "permissions": ["billing:manage"],
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    # authorization
    "role_created": (
        "role.created",
        {
            "object": "role",
            "slug": "auditor",
            "resource_type_slug": "environment",
            "permissions": ["audit_logs:read"],
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    "permission_created": (
        "permission.created",
        {
            "object": "permission",
            "id": "perm_01HX0RDW5X7Y9Z1A3B5C7D9E1F",
            "slug": "audit_logs:read",
            "name": "Read audit logs",
            "description": None,
            "system": False,
            "resource_type_slug": "environment",
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "group_member_added": (
        "group.member_added",
        {"group_id": "group_01HX0SEX6Y8Z0A2B4C6D8E0F2G", "organization_membership_id": MEMBERSHIP_ID},
        {"actor": _DASHBOARD_ACTOR},
    ),
    "flag_created": (
        "flag.created",
        {
            "object": "feature_flag",
            "id": "flag_01HX0TFY7Z9A1B3C5D7E9F1G3H",
            "environment_id": "environment_01HWZ8J1L3N5Q7S9U1W3Y5A7C9",
            "slug": "new-billing-page",
            "name": "New billing page",
            "description": None,
            "owner": {"email": EMAIL, "first_name": "Ada", "last_name": "Lovelace"},
            "tags": ["billing"],
            "enabled": False,
            "default_value": False,
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    # Pipes
    "pipes_connected_account_connected": (
        "pipes.connected_account.connected",
        {
            "object": "connected_account",
            "id": "connected_account_01HX0VGZ8A0B2C4D6E8F0G2H4J",
            "user_id": USER_ID,
            "organization_id": ORG_ID,
            "provider_slug": "github",
            "state": "connected",
            "scopes": ["repo", "read:user"],
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "pipes_connection_failed": (
        "pipes.connected_account.connection_failed",
        {
            "object": "connection_failed",
            "data_integration_id": "data_integration_01HX0WH0A1B3C5D7E9F1G3H5JK",
            "provider_slug": "github",
            "user_id": USER_ID,
            "organization_id": ORG_ID,
            "error_code": "access_denied",
            "error_reason": "The user denied the authorization request.",
            "provider_error": "access_denied",
            "provider_error_description": "The user has denied your application access.",
            "account_identifier": OTHER_EMAIL,
            "created_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    # Vault (Events API only)
    "vault_data_read": (
        "vault.data.read",
        {
            "actor_id": USER_ID,
            "actor_source": "api",
            "actor_name": "billing-service",
            "kv_name": "customer-ssn",
            "key_id": "kek_01HX0XJ1B2C4D6E8F0G2H4J6KM",
        },
        {},
    ),
    "vault_kek_created": (
        "vault.kek.created",
        {
            "actor_id": USER_ID,
            "actor_source": "dashboard",
            "actor_name": "Ada Lovelace",
            "key_name": "tenant-42",
            "key_id": "kek_01HX0XJ1B2C4D6E8F0G2H4J6KM",
        },
        {},
    ),
    # waitlist
    "waitlist_user_created": (
        "waitlist_user.created",
        {
            "object": "waitlist_user",
            "id": "waitlist_user_01HX0YK2C3D5E7F9G1H3J5K7MN",
            "email": INVITEE_EMAIL,
            "state": "pending",
            "approved_at": None,
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
        {},
    ),
    "waitlist_user_denied": (
        "waitlist_user.denied",
        {
            "object": "waitlist_user",
            "id": "waitlist_user_01HX0YK2C3D5E7F9G1H3J5K7MN",
            "email": INVITEE_EMAIL,
            "state": "denied",
            "approved_at": None,
            "created_at": "2026-11-26T23:31:00.000Z",
            "updated_at": "2026-11-26T23:32:00.000Z",
        },
        {"actor": _DASHBOARD_ACTOR},
    ),
    # types this catalog does not know yet (the SDK already has them): must pass through
    "unknown_type": (
        "resource_export.created",
        {"object": "resource_export", "id": "resource_export_01HX0ZM3D4E6F8G0H2J4K6M8NP", "state": "pending"},
        {"actor": _API_ACTOR},
    ),
    "unknown_failure": (
        "resource_export.failed",
        {
            "object": "resource_export",
            "id": "resource_export_01HX0ZM3D4E6F8G0H2J4K6M8NP",
            "state": "failed",
            "error": {"code": "export_too_large", "message": "The export exceeded 10 GB."},
        },
        {},
    ),
}

_DATA_BY_TYPE: dict[str, dict[str, Any]] = {}
for _event_type, _data, _context in _DEFINITIONS.values():
    _DATA_BY_TYPE.setdefault(_event_type, _data)


def make_event(event_type: str, **overrides: Any) -> dict[str, Any]:
    """A fresh event of ``event_type`` with a unique id; ``overrides`` replace top-level keys.

    ``data`` defaults to a deep copy of the sample data for that type ({} for others), so
    a test may mutate what it gets.
    """
    event: dict[str, Any] = {
        "object": "event",
        "id": new_id("event"),
        "event": event_type,
        "data": copy.deepcopy(_DATA_BY_TYPE.get(event_type, {})),
        "created_at": _next_created_at(),
        "context": {},
    }
    for key, value in overrides.items():
        if value is MISSING:
            event.pop(key, None)
        else:
            event[key] = value
    return event


SAMPLES: dict[str, dict[str, Any]] = {
    name: make_event(event_type, data=copy.deepcopy(data), context=copy.deepcopy(context))
    for name, (event_type, data, context) in _DEFINITIONS.items()
}
# A webhook body as WorkOS posts it at its leanest: no "object", no "context".
SAMPLES["webhook_minimal"] = make_event(
    "authentication.password_succeeded",
    object=MISSING,
    context=MISSING,
    data={
        "type": "password",
        "status": "succeeded",
        "user_id": USER_ID,
        "email": EMAIL,
        "ip_address": IP,
        "user_agent": None,
    },
)
# The form of one docs sample: space instead of "T", no zone.
SAMPLES["legacy_created_at"] = make_event("user.deleted", data=_user(), created_at="2023-04-28 20:05:31.093")


def journaled(records: Iterable[dict[str, Any]]) -> list[NewRecord]:
    """Normalized records as a source hands them to the journal."""
    return [NewRecord(*_columns(record)) for record in records]


def stored(records: Iterable[dict[str, Any]]) -> list[Entry]:
    """Normalized records as the delivery loop hands them to a sink: journal entries."""
    return [Entry(seq, *_columns(record)) for seq, record in enumerate(records, 1)]


def _columns(record: dict[str, Any]) -> tuple[str, str, float, bytes]:
    """Event id, type, time and JSON: what the journal keeps of a normalized record."""
    return record["workos"]["id"], record["workos"]["event"], event_time(record), orjson.dumps(record)
