"""Turn one WorkOS event into the normalized record every sink consumes.

The record (docs/record.md) puts the facts a log platform indexes
(status, user, client IP, user agent, error) in Datadog's standard attributes, and keeps
the original ``data`` and ``context`` untouched under ``workos`` so nothing is lost.

This runs for every webhook before it is acknowledged, so it is kept cheap: no copies of
the event (``workos.data`` *is* the caller's object), regexes compiled once, the tag string
cached per (env, type). It must never fail on a well-formed event with a new type or new
fields: WorkOS adds both over time.

It is also where input from the wire is bounded, once for every source (webhook, Events API
poller, backfill): ``id`` and ``event`` are short printable text, and the record can be
encoded. Whatever fails these checks is ``InvalidEvent`` (a 400 on the webhook, a skipped
event with its reason on the Events API) before it reaches the journal, where one bad row
could fail the commit of every event grouped with it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import orjson

from forwarder import catalog
from forwarder.errors import InvalidEvent
from forwarder.geoip import GeoIP
from forwarder.memberships import LEARNED_TYPES, LearningRecord, MembershipMap, attribute, memberships_in
from forwarder.records import NewRecord
from forwarder.redaction import Redactor

Delivery = Literal["webhook", "api"]

FORWARDER_TAG = "forwarder:workos-forwarder"
"""Tells our logs apart from WorkOS's own Datadog stream, which also says ``source:workos``."""

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    type(None): "null",
}


MAX_TEXT_CHARS = 255
"""Longest ``id`` and ``event`` accepted. WorkOS ids are 32 characters and types under 60. Both
are stored as text: 255 characters (at most 1,020 bytes of UTF-8) stay well under what a
PostgreSQL b-tree entry may hold (about 2,700 bytes), so the unique index on ids never
refuses a row, and an id stays readable in a log line."""

ORJSON_MAX_DEPTH = 254
"""Containers orjson encodes nested at most (3.x: "Recursion limit reached" past this)."""

MAX_DEPTH = ORJSON_MAX_DEPTH - 2
"""How deep ``data``, ``context`` and ``created_at`` may nest (``{}`` is 1, ``{"a": []}`` 2).

The record holds them two containers down (record, ``workos``), so this is the deepest a
value can be and its record still be encoded by orjson: when the journal stores it, and
again when a sink decodes and re-encodes the record (Datadog's restamping and truncation
do). The check is that encoding itself, so it costs nothing on the hot path; this
constant only names the limit in the error. 252 levels is far beyond any WorkOS event
(directory ``raw_attributes`` nest a handful)."""

_JSON_MAX_DEPTH = 1024
"""Containers orjson decodes nested at most ("depth limit exceeded" past this)."""


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    service: str = "workos-events"
    env: str = "production"
    redaction: Redactor | None = None
    memberships: MembershipMap | None = None
    """Who belongs to which organization (``forwarder.memberships``): attributes events of a
    user that carry no organization of their own. None: no attribution."""
    geoip: GeoIP | None = None


def normalize(event: Any, options: NormalizeOptions, *, delivery: Delivery = "webhook") -> dict[str, Any]:
    """The normalized record of ``event`` (a decoded JSON body), redacted if configured.

    Raises ``InvalidEvent`` when ``event`` lacks what every WorkOS event has: an object with
    a non-empty string ``id`` and ``event``, and ``data`` an object when present.
    """
    return _normalize(event, options, delivery)[0]


def journal_record(event: Any, options: NormalizeOptions, *, delivery: Delivery) -> NewRecord:
    """What the journal stores for ``event``: the normalized record as JSON, beside its id,
    type and creation time (epoch seconds; None when missing or unparseable).

    Raises ``InvalidEvent`` like ``normalize``, and also when the record cannot be encoded:
    ``data``, ``context`` or ``created_at`` nested deeper than ``MAX_DEPTH``. That is checked
    by the encoding the journal needs anyway, so a valid event pays nothing for it.
    ``created_at`` is parsed once for both uses.
    """
    record, created = _normalize(event, options, delivery)
    try:
        encoded = orjson.dumps(record)
    except orjson.JSONEncodeError as exc:
        raise InvalidEvent(_unencodable(event, str(exc))) from None
    created_at = created.timestamp() if created is not None else None
    event_type = event["event"]
    if event_type in LEARNED_TYPES:
        said = memberships_in(event_type, record["workos"]["data"])
        return LearningRecord(event["id"], event_type, created_at, encoded, said)
    return NewRecord(event["id"], event_type, created_at, encoded)


def body_error(exc: orjson.JSONDecodeError) -> str:
    """Why a request body could not be decoded, for the 400 answer: the depth limit by name."""
    if str(exc).startswith("depth limit exceeded"):
        return (
            f"body is nested deeper than {_JSON_MAX_DEPTH} levels, the most the JSON decoder reads "
            f'(an event\'s "data" and "context" may nest {MAX_DEPTH})'
        )
    return f"body is not JSON: {exc}"


def _normalize(
    event: Any, options: NormalizeOptions, delivery: Delivery
) -> tuple[dict[str, Any], datetime | None]:
    """The record and the parsed ``created_at`` (None when missing or unparseable)."""
    if not isinstance(event, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {_json_type(event)}")
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidEvent(f'event has no "id": a non-empty string is required, got {_json_type(event_id)}')
    # isprintable() is one C-level scan: it refuses C0 and C1 controls, DEL, format characters
    # (bidi overrides, zero-width), line separators and unassigned code points, and admits
    # any printable text (spaces and non-ASCII letters included). NUL would fail a PostgreSQL
    # commit; the others forge or hide text in every log line and index the id reaches.
    if len(event_id) > MAX_TEXT_CHARS or not event_id.isprintable():
        raise InvalidEvent(_bad_text("id", event_id, event_id))
    event_type = event.get("event")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent(
            f'event {_clip(event_id)} has no "event" type: a non-empty string is required, '
            f"got {_json_type(event_type)}"
        )
    if len(event_type) > MAX_TEXT_CHARS or not event_type.isprintable():
        raise InvalidEvent(_bad_text("event", event_type, event_id))
    data = event.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise InvalidEvent(f'event {_clip(event_id)}: "data" must be an object, got {_json_type(data)}')
    context = event.get("context")
    raw_created = event.get("created_at")

    # One lookup for a known type; a miss is a type this release does not know (noted once stored).
    described = catalog.DESCRIPTIONS.get(event_type) or catalog.describe_unknown(event_type)
    category, outcome, status, evt_category = described
    created = _parse_time(raw_created)

    user = data.get("user")  # dsync.group.user_* carry the directory user here
    if not isinstance(user, dict):
        user = {}
    user_id = _text(data.get("user_id")) or _text(user.get("id"))
    if not user_id and category == "user":
        user_id = _text(data.get("id"))
    email = _text(data.get("email")) or _text(user.get("email"))
    ip = _text(data.get("ip_address"))
    user_agent = _text(data.get("user_agent"))
    error_kind, error_message = _error(data, outcome)

    summary = event_type
    if email or user_id:
        summary = f"{summary} for {email or user_id}"
    if ip:
        summary = f"{summary} from {ip}"
    if error_kind or error_message:
        summary = f"{summary}: {error_kind or error_message}"

    record: dict[str, Any] = {
        "ddsource": "workos",
        "service": options.service,
        "ddtags": _ddtags(options.env, event_type),
        "status": status,
        "date": _record_date(raw_created, created),
        "message": summary,
        "evt": {"name": event_type, "outcome": outcome, "category": evt_category}
        if evt_category
        else {"name": event_type, "outcome": outcome},
    }
    if user_id and email:
        record["usr"] = {"id": user_id, "email": email}
    elif user_id:
        record["usr"] = {"id": user_id}
    elif email:
        record["usr"] = {"email": email}
    if ip:
        client: dict[str, Any] = {"ip": ip}
        # Located before redaction (below), so the location survives a hashed or dropped IP.
        if options.geoip is not None and (location := options.geoip.lookup(ip)) is not None:
            client["geoip"] = location
        record["network"] = {"client": client}
    if user_agent:
        record["http"] = {"useragent": user_agent}
    if error_kind or error_message:
        error = record["error"] = {}
        if error_kind:
            error["kind"] = error_kind
        if error_message:
            error["message"] = error_message

    workos: dict[str, Any] = {"id": event_id, "event": event_type, "category": category}
    if raw_created is not None:
        workos["created_at"] = raw_created
    organization_id = _organization_id(data, category)
    if organization_id:
        workos["organization_id"] = organization_id
    if evt_category or (user_id and not organization_id):
        attribute(workos, organization_id, user_id, evt_category is not None, options.memberships)
    if isinstance(context, dict):
        actor = context.get("actor")
        if isinstance(actor, dict) and actor:
            workos["actor"] = actor
    if category == "vault":
        _vault_actor(record, workos, data)
    workos["data"] = data
    if context is not None:
        workos["context"] = context
    workos["delivery"] = delivery
    record["workos"] = workos

    if options.redaction is not None:
        try:
            return options.redaction.apply(record), created
        except RecursionError:  # the walk recurses once per level: ~1,000 levels exhaust the stack
            raise InvalidEvent(_unencodable(event, "too deep to redact")) from None
    return record, created


def event_time(record: dict[str, Any]) -> float:
    """Epoch seconds of a normalized record's ``date`` (always set, always parseable)."""
    return datetime.fromisoformat(record["date"]).timestamp()


def _text(value: Any) -> str | None:
    """A non-empty string field, or None: WorkOS sends null for unknown users and IPs."""
    return value if type(value) is str and value else None


def _error(data: dict[str, Any], outcome: str) -> tuple[str | None, str | None]:
    """(kind, message) of the failure the event describes, in whichever shape WorkOS used."""
    kind = message = None
    error = data.get("error")
    if isinstance(error, dict):  # authentication.*_failed / sso_timed_out: error{code, message}
        kind, message = _text(error.get("code")), _text(error.get("message"))
    elif type(error) is str:
        message = error or None
    # pipes.connected_account.connection_failed: error_code / error_reason
    kind = kind or _text(data.get("error_code"))
    message = message or _text(data.get("error_reason"))
    if not kind and outcome == "failure":
        # organization_domain.verification_failed: reason. Elsewhere "reason" is not an error.
        kind = _text(data.get("reason"))
    return kind, message


def _organization_id(data: dict[str, Any], category: str) -> str | None:
    """The organization the event is about, by the rule of docs/record.md ("Which organization"):
    ``data.organization_id``, else the first of the nested objects that carries one, else the
    owner of an API key, else an organization event's own id. Never a guess: an event that
    names no organization (or two, as ``agent.registration.organization.switched``) has none."""
    organization_id = _text(data.get("organization_id"))
    if organization_id:
        return organization_id
    for nested in _ORGANIZATION_HOLDERS:
        value = data.get(nested)
        if (
            type(value) is dict
            and (organization_id := _text(value.get("organization_id")))
            and organization_id != "null"
        ):
            return organization_id
    owner = data.get("owner")  # api_key.*: owned by an organization, or by a user in one
    if type(owner) is dict and owner.get("type") == "organization":
        return _text(owner.get("id"))
    return _text(data.get("id")) if category == "organization" else None


_ORGANIZATION_HOLDERS = ("sso", "organization_domain", "connection", "group", "user", "owner", "claimed_by")
"""Nested objects whose ``organization_id`` is the event's, in the order they are looked at:
``sso`` (authentication.sso_*), ``organization_domain`` (its verification_failed), ``connection``
(connection.saml_certificate_*), ``group`` then ``user`` (dsync.group.user_*), ``owner`` (a
user's api_key.*), ``claimed_by`` (agent.registration.claim.completed, which may say "null")."""


def _vault_actor(record: dict[str, Any], workos: dict[str, Any], data: dict[str, Any]) -> None:
    """vault.*: who read, wrote or decrypted. ``actor_id`` and ``actor_name`` are Datadog's
    ``usr.id`` and ``usr.name`` (the one who acted); ``actor_source`` (api, dashboard) has no
    standard attribute, so the three go to ``workos.actor`` too, the shape of ``context.actor``."""
    actor_id, actor_name = _text(data.get("actor_id")), _text(data.get("actor_name"))
    if not actor_id and not actor_name:
        return
    if "usr" not in record:
        usr = record["usr"] = {}
        if actor_id:
            usr["id"] = actor_id
        if actor_name:
            usr["name"] = actor_name
    if "actor" not in workos:
        actor = {"id": actor_id, "source": _text(data.get("actor_source")), "name": actor_name}
        workos["actor"] = {key: value for key, value in actor.items() if value}


def _parse_time(raw: Any) -> datetime | None:
    """Lenient ISO-8601, in UTC; a string without a zone is UTC. None when unparseable."""
    if type(raw) is not str:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        try:  # RFC 3339 allows a lower-case "t" / "z"; surrounding whitespace is harmless.
            parsed = datetime.fromisoformat(raw.strip().upper())
        except ValueError:
            return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted out of range by its offset
        return None


def _record_date(raw: Any, created: datetime | None) -> str:
    """``date``: ``created`` as ``2026-11-26T23:31:00.123Z``; now when there is no ``created``."""
    if created is None:
        created = datetime.now(UTC)
    elif (
        len(raw) == 24
        and raw[4] == raw[7] == "-"
        and raw[10] == "T"
        and raw[13] == raw[16] == ":"
        and raw[19] == "."
        and raw[23] == "Z"
    ):
        return raw  # WorkOS's usual form is already ours: formatting costs more than this check
    return f"{created.replace(tzinfo=None).isoformat(timespec='milliseconds')}Z"


# Tags must start with a letter, be lower case and at most 200 characters; anything else
# Datadog mangles. Event types are short dotted snake_case words: anything else (or a
# long alphanumeric run, the shape of an id) is tagged "other" so a tag never carries an id.
_TAG_SAFE_TYPE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")
_TAG_UNSAFE_CHARS = re.compile(r"[^a-z0-9_.:/-]")
_TYPE_WORDS = re.compile(r"[._]")


@lru_cache(maxsize=1024)
def _ddtags(env: str, event_type: str) -> str:
    event_tag = event_type.lower()
    if (
        len(event_tag) > 150
        or not _TAG_SAFE_TYPE.fullmatch(event_tag)
        or any(len(word) >= 20 and not word.isalpha() for word in _TYPE_WORDS.split(event_tag))
    ):
        event_tag = "other"
    env_tag = _TAG_UNSAFE_CHARS.sub("_", env.lower())[:196] or "unknown"
    category = catalog.category(event_type)  # bounded by the catalog, as in workos.category
    return f"source:workos,env:{env_tag},event:{event_tag},category:{category},{FORWARDER_TAG}"


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def _clip(event_id: str) -> str:
    return event_id if len(event_id) <= 80 else f"{event_id[:80]}..."


_CHARACTER_KINDS = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Zs": "a space other than U+0020",
}


def _bad_text(field: str, value: str, event_id: str) -> str:
    """Why ``value`` (the event's ``id`` or ``event``) is refused, naming the field, the first
    offending character by code point, and the event (escaped: the id may be the culprit)."""
    if len(value) > MAX_TEXT_CHARS:
        problem = f'"{field}" is {len(value)} characters long; the limit is {MAX_TEXT_CHARS}'
    else:
        index, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
        kind = _CHARACTER_KINDS.get(unicodedata.category(char), "a non-printable character")
        problem = f'"{field}" contains {kind} (U+{ord(char):04X}) at index {index}'
    if field == "id":
        return f"{problem}: {_clip(event_id)!a}"
    return f"event {_clip(event_id)}: {problem}"


def _depth(value: Any) -> int:
    """How deep ``value`` nests (a scalar 0, ``[]`` 1), counting at most ``_JSON_MAX_DEPTH + 1``.

    Only for error messages: a walk over every container is what the hot path avoids."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if type(item) is dict else item if type(item) is list else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= _JSON_MAX_DEPTH:
            stack.extend((child, level + 1) for child in children)
    return deepest


def _unencodable(event: dict[str, Any], cause: str) -> str:
    """Why the record of ``event`` cannot be encoded: the field that nests too deep, by name."""
    for field in ("data", "context", "created_at"):
        depth = _depth(event.get(field))
        if depth > MAX_DEPTH:
            return (
                f'event {_clip(event["id"])}: "{field}" is nested {depth} levels deep; '
                f"the limit is {MAX_DEPTH}"
            )
    return f"event {_clip(event['id'])}: the record cannot be encoded as JSON ({cause})"
