"""The WorkOS event catalog: which types exist and what each one means for monitoring.

Everything downstream (Datadog status, OTLP severity, Prometheus labels, dashboards and
monitors) keys off the answers here, so the rules live in one place. Types come from
the field reference (REFERENCE.md section 3). New types appear over time: every function
accepts an unknown type and answers from its name alone, never raises.
"""

from __future__ import annotations

from typing import Literal

Outcome = Literal["success", "failure", "started", "info"]
Status = Literal["error", "warning", "info"]

# Grouped as the reference lists them: prefix -> suffixes, so a review against the docs
# is a line-by-line comparison.
_CATALOG: dict[str, tuple[str, ...]] = {
    "action": ("authentication.denied", "user_registration.denied"),
    "agent.registration": (
        "claim.attempt.created",
        "claim.completed",
        "created",
        "credential.issued",
        "deleted",
        "expired",
        "organization.switched",
        "refreshed",
        "revoked",
    ),
    "api_key": ("created", "revoked", "updated"),
    "authentication": (
        "email_verification_failed",
        "email_verification_succeeded",
        "magic_auth_failed",
        "magic_auth_succeeded",
        "mfa_failed",
        "mfa_succeeded",
        "oauth_failed",
        "oauth_succeeded",
        "passkey_failed",
        "passkey_succeeded",
        "password_failed",
        "password_succeeded",
        "radar_risk_detected",
        "reauthentication_succeeded",
        "sso_failed",
        "sso_started",
        "sso_succeeded",
        "sso_timed_out",
    ),
    "connection": (
        "activated",
        "deactivated",
        "deleted",
        "saml_certificate_renewal_required",
        "saml_certificate_renewed",
    ),
    "dsync": (
        "activated",
        "deleted",
        "group.created",
        "group.deleted",
        "group.updated",
        "group.user_added",
        "group.user_removed",
        "token.created",
        "token.revoked",
        "user.created",
        "user.deleted",
        "user.updated",
    ),
    "email_verification": ("created",),
    "flag": ("created", "deleted", "rule_updated", "updated"),
    "group": ("created", "deleted", "member_added", "member_removed", "updated"),
    "invitation": ("accepted", "created", "resent", "revoked"),
    "magic_auth": ("created",),
    "organization": ("created", "deleted", "updated"),
    "organization_domain": ("created", "deleted", "updated", "verification_failed", "verified"),
    "organization_membership": ("created", "deleted", "updated"),
    "organization_role": ("created", "deleted", "updated"),
    "password_reset": ("created", "succeeded"),
    "permission": ("created", "deleted", "updated"),
    "pipes.connected_account": ("connected", "connection_failed", "disconnected", "reauthorization_needed"),
    "radar": ("challenge_created",),
    "role": ("created", "deleted", "updated"),
    "session": ("created", "revoked"),
    "user": ("created", "deleted", "updated"),
    "vault": (
        "byok_key.deleted",
        "byok_key.verification_completed",
        "data.created",
        "data.deleted",
        "data.read",
        "data.updated",
        "dek.decrypted",
        "dek.read",
        "kek.created",
        "kek.deleted",
        "metadata.read",
        "names.listed",
    ),
    "waitlist_user": ("approved", "created", "denied"),
}

KNOWN_EVENT_TYPES: frozenset[str] = frozenset(
    f"{prefix}.{suffix}" for prefix, suffixes in _CATALOG.items() for suffix in suffixes
)
"""Every event type WorkOS documents today (111)."""

WEBHOOK_UNAVAILABLE: frozenset[str] = frozenset(
    event_type
    for event_type in KNOWN_EVENT_TYPES
    if event_type.startswith(("action.", "dsync.token.", "vault."))
    or event_type in ("authentication.email_verification_failed", "authentication.mfa_failed")
)
"""Types WorkOS does not send by webhook: only the Events API poller can see them."""

AUTHENTICATION_FAILURES: frozenset[str] = frozenset(
    {
        "authentication.email_verification_failed",
        "authentication.magic_auth_failed",
        "authentication.mfa_failed",
        "authentication.oauth_failed",
        "authentication.passkey_failed",
        "authentication.password_failed",
        "authentication.sso_failed",
        "authentication.sso_timed_out",
    }
)
"""Sign-in attempts that did not succeed: the input of brute-force and outage monitors."""

# Security signals that are worth a look but are not errors: a flagged login still
# succeeded, a challenge is Radar doing its job, an unverified domain is an admin chore.
_WARNING_TYPES = frozenset(
    {
        "authentication.radar_risk_detected",
        "radar.challenge_created",
        "organization_domain.verification_failed",
    }
)


CATEGORIES: frozenset[str] = frozenset(event_type.partition(".")[0] for event_type in KNOWN_EVENT_TYPES)
"""The first segments of the known types (``authentication``, ``dsync``, ...): every category there is."""

OTHER = "other"
"""The label value, tag and category of whatever the catalog does not know."""


def category(event_type: str) -> str:
    """The type's first dot-separated segment when the catalog knows it, else ``other``.

    ``agent.registration.created`` -> ``agent``; ``authentication.webauthn_failed`` (a type
    WorkOS may add) -> ``authentication``, so alerts on authentication failures see it;
    ``ada@example.com.signed_in`` -> ``other``. The type comes from the wire: a category
    taken from it verbatim would let a sender mint a Prometheus series, a Datadog facet value
    or an email in a label per request. The full type stays in the record's ``evt.name``.
    """
    known = _CATEGORY_OF.get(event_type)
    if known is not None:
        return known
    first = event_type.partition(".")[0]
    return first if first in CATEGORIES else OTHER


def _outcome_from_name(event_type: str) -> Outcome:
    last = event_type.rpartition(".")[2]
    if last in ("failed", "denied") or last.endswith(("_failed", "_timed_out")):
        return "failure"
    if last in ("succeeded", "verified") or last.endswith("_succeeded"):
        return "success"
    if event_type == "authentication.sso_started":
        return "started"
    return "info"


def _status_from_name(event_type: str) -> Status:
    if event_type in _WARNING_TYPES:
        return "warning"
    return "error" if _outcome_from_name(event_type) == "failure" else "info"


# Precomputed for the known types: these run on every event.
_CATEGORY_OF: dict[str, str] = {t: t.partition(".")[0] for t in KNOWN_EVENT_TYPES}
_OUTCOMES: dict[str, Outcome] = {t: _outcome_from_name(t) for t in KNOWN_EVENT_TYPES}
_STATUSES: dict[str, Status] = {t: _status_from_name(t) for t in KNOWN_EVENT_TYPES}


def outcome(event_type: str) -> Outcome:
    """``failure`` / ``success`` / ``started`` / ``info``, from the type's name (contract rules)."""
    known = _OUTCOMES.get(event_type)
    return known if known is not None else _outcome_from_name(event_type)


def status(event_type: str) -> Status:
    """Log status: ``warning`` for security signals, ``error`` for other failures, else ``info``."""
    known = _STATUSES.get(event_type)
    return known if known is not None else _status_from_name(event_type)


def metric_event_label(event_type: str) -> str:
    """The type itself when known, else ``other``: Prometheus labels must stay bounded."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER


def metric_labels(event_type: str) -> tuple[str, str, Outcome]:
    """``(event, category, outcome)`` of ``workos_events_total`` for a type from the wire.

    Every value is drawn from a fixed set (the known types plus ``other``, ``CATEGORIES``
    plus ``other``, the four outcomes), so whatever types arrive, the counter has at most
    ``len(KNOWN_EVENT_TYPES) + 4 * (len(CATEGORIES) + 1)`` series, and no label ever
    carries an id or an email.
    """
    return metric_event_label(event_type), category(event_type), outcome(event_type)
