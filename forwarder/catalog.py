"""The WorkOS event catalog: which types exist and what each one means for monitoring.

Everything downstream (Datadog status, OTLP severity, Prometheus labels, dashboards and
monitors) keys off the answers here, so the rules live in one place. The types are the
workos Python SDK's (``workos/events/models/event_schema.py``; tests/test_catalog.py fails,
naming them, when the installed SDK knows a type this list lacks). New types appear over
time: every function accepts an unknown type and answers from its name alone, never raises,
and ``UNKNOWN_TYPES`` notes each one (logged once, counted, polled from then on).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Literal, NamedTuple

logger = logging.getLogger("forwarder.catalog")

Outcome = Literal["success", "failure", "started", "info"]
Status = Literal["error", "warning", "info"]

# Grouped by prefix -> suffixes, so a review against the SDK is a line-by-line comparison.
# ``flag.*`` and ``pipes.connected_account.*`` are the older names of ``feature_flags.*`` and
# ``pipes.account_connection.*``: both families are in the SDK, and old events keep old names.
_CATALOG: dict[str, tuple[str, ...]] = {
    "action": ("authentication.denied", "user_registration.denied"),
    "agent.blueprint": ("created", "deleted", "updated"),
    "agent.instance": ("created", "deleted", "session.created", "session.revoked"),
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
    "feature_flags.flag": ("created", "deleted", "updated"),
    "feature_flags.flag_rule": ("created", "deleted", "updated"),
    "feature_flags.flag_target": ("created", "deleted"),
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
    "pipes.account_connection": (
        "add_failed",
        "connected",
        "connection_failed",
        "disconnected",
        "reauthorization_needed",
    ),
    "pipes.connected_account": ("connected", "connection_failed", "disconnected", "reauthorization_needed"),
    "radar": ("challenge_created",),
    "resource_export": ("completed", "created", "downloaded", "failed"),
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
        "dek.rekeyed",
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
"""Every event type of the workos Python SDK 10.8 (136)."""

EVENTS_API_ONLY: frozenset[str] = frozenset(
    event_type
    for event_type in KNOWN_EVENT_TYPES
    if event_type.startswith(("action.", "dsync.token.", "resource_export.", "vault."))
    or event_type in ("authentication.email_verification_failed", "authentication.mfa_failed")
)
"""Types a webhook endpoint cannot subscribe to (absent from the SDK's
``CreateWebhookEndpointEvents``): only the Events API poller, so ``WORKOS_API_KEY``, sees them."""

WEBHOOK_TYPES: frozenset[str] = KNOWN_EVENT_TYPES - EVENTS_API_ONLY
"""Types a webhook endpoint can subscribe to (113); the Events API serves them too."""

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

# Named like a failure, but nothing failed: an administrator turned a waitlisted user away,
# as ``waitlist_user.approved`` records the opposite decision. Recorded, not alerted on.
_DECISIONS = frozenset({"waitlist_user.denied"})


CATEGORIES: frozenset[str] = frozenset(event_type.partition(".")[0] for event_type in KNOWN_EVENT_TYPES)
"""The first segments of the known types (``authentication``, ``dsync``, ...): every category there is."""

OTHER = "other"
"""The label value, tag and category of whatever the catalog does not know."""

AUTHENTICATION = "authentication"
"""``evt.category`` of sign-in attempts and decisions on them, the value Datadog's own
identity-provider pipelines (Auth0's) and Cloud SIEM rules select with ``@evt.category``."""


class Description(NamedTuple):
    """What the catalog says about one type: the record's ``workos.category``, ``evt.outcome``,
    ``status`` and ``evt.category`` (None where Datadog's standard attributes define none)."""

    category: str
    outcome: Outcome
    status: Status
    evt_category: str | None


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
    if event_type in _DECISIONS:
        return "info"
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


def _evt_category(event_type: str) -> str | None:
    """``authentication`` for sign-in events (new ``authentication.*`` types included) and the
    denials of sign-ins by WorkOS Actions; None for the rest, which no standard category fits."""
    if category(event_type) == AUTHENTICATION or event_type == "action.authentication.denied":
        return AUTHENTICATION
    return None


def _describe_by_name(event_type: str) -> Description:
    return Description(
        category(event_type),
        _outcome_from_name(event_type),
        _status_from_name(event_type),
        _evt_category(event_type),
    )


# Precomputed for the known types: these run on every event.
_CATEGORY_OF: dict[str, str] = {t: t.partition(".")[0] for t in KNOWN_EVENT_TYPES}
DESCRIPTIONS: dict[str, Description] = {t: _describe_by_name(t) for t in KNOWN_EVENT_TYPES}
"""The description of every known type. Normalization reads it once per event; a miss is a
type this release does not know: ``describe_unknown`` it (and, once the event is stored,
``UNKNOWN_TYPES.stored``)."""


def describe_unknown(event_type: str) -> Description:
    """The description of a type missing from ``DESCRIPTIONS``, from its name alone."""
    return _describe_by_name(event_type)


def outcome(event_type: str) -> Outcome:
    """``failure`` / ``success`` / ``started`` / ``info``, from the type's name (contract rules)."""
    known = DESCRIPTIONS.get(event_type)
    return known.outcome if known is not None else _outcome_from_name(event_type)


def status(event_type: str) -> Status:
    """Log status: ``warning`` for security signals, ``error`` for other failures, else ``info``."""
    known = DESCRIPTIONS.get(event_type)
    return known.status if known is not None else _status_from_name(event_type)


def metric_event_label(event_type: str) -> str:
    """The type itself when known, else ``other``: Prometheus labels must stay bounded."""
    return event_type if event_type in KNOWN_EVENT_TYPES else OTHER


def metric_labels(event_type: str) -> tuple[str, str, Outcome]:
    """``(event, category, outcome)`` of ``workos_events_total`` for a type from the wire.

    Every value is drawn from a fixed set (the known types plus ``other``, ``CATEGORIES``
    plus ``other``, the four outcomes), so whatever types arrive, the counter has at most
    ``MAX_EVENT_SERIES`` series, and no label ever carries an id or an email.
    """
    return metric_event_label(event_type), category(event_type), outcome(event_type)


MAX_EVENT_SERIES = len(KNOWN_EVENT_TYPES) + 4 * (len(CATEGORIES) + 1)
"""The most series ``workos_events_total`` can have: one per known type, and ``event="other"``
with each category (or ``other``) and each outcome (244 with 136 types in 26 categories)."""


# --- Types this release does not know ------------------------------------------------------

# The shape of every WorkOS type: dotted lower-case snake_case words. Only such a name is
# added to the poller's request: anything else would make the Events API refuse the request.
_TYPE_SHAPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)+")


class UnknownTypes:
    """Types that arrived but are not in the catalog, remembered up to ``capacity``.

    Each new one is logged once, by name, with the way to keep polling it. Only stored events
    count (``stored``, called by the sources once the journal took the event as new, which also
    count it in ``workos_forwarder_uncatalogued_events_total``, no label: the type is unbounded;
    this module imports nothing from the project, so ``sinks.base`` can offer its labels): a
    duplicate, or an event the journal refused, is neither counted nor logged as forwarded.
    The poller adds the remembered ones to its request (``pollable``), so the
    Events API keeps reconciling a type WorkOS added after this release. Memory is bounded:
    past ``capacity`` distinct types, further ones are counted but neither logged nor polled,
    and that is logged once.
    """

    def __init__(self, capacity: int = 100) -> None:
        self.capacity = capacity
        self._seen: dict[str, None] = {}  # insertion-ordered: the poller asks in arrival order
        self._pollable: tuple[str, ...] = ()
        self._full_logged = False
        self._lock = threading.Lock()  # normalization runs on the event loop and in threads

    def stored(self, event_type: str) -> None:
        """An event of ``event_type`` (not in ``KNOWN_EVENT_TYPES``) was stored: note it."""
        if event_type not in self._seen:
            self._note(event_type)

    def seen(self) -> tuple[str, ...]:
        """Every remembered type, in order of first arrival."""
        return tuple(self._seen)

    def pollable(self) -> tuple[str, ...]:
        """The remembered types that are shaped like WorkOS types: what the poller adds."""
        return self._pollable

    def _note(self, event_type: str) -> None:
        with self._lock:
            if event_type in self._seen:
                return
            if len(self._seen) >= self.capacity:
                if not self._full_logged:
                    self._full_logged = True
                    logger.warning(
                        "more event types outside the catalog than are tracked: further ones are "
                        "counted but neither logged nor polled",
                        extra={"tracked": self.capacity},
                    )
                return
            self._seen[event_type] = None
            pollable = _TYPE_SHAPE.fullmatch(event_type) is not None
            if pollable:
                self._pollable = (*self._pollable, event_type)
        logger.warning(
            'event type %r is not in this release\'s catalog: it is forwarded, counted as event="other" '
            "in Prometheus%s. To poll it after a restart too, set WORKOS_EVENTS=*,%s",
            event_type,
            ", and added to the request of an Events API poller that asks for every type" if pollable else "",
            event_type if pollable else "<type>",
            extra={"event_type": event_type},
        )


UNKNOWN_TYPES = UnknownTypes()
"""The process's record of types outside the catalog (the sources note, the poller reads)."""
