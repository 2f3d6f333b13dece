"""Check 2: the webhook secret(s) in ``WORKOS_WEBHOOK_SECRET``, by shape alone (pure).

A wrong secret shows up only as ``bad_signature`` on every webhook, long after set-up. The
usual causes can be seen in the value itself: quotes copied along with it (they become part
of the HMAC key), whitespace inside, or another WorkOS credential pasted by mistake. The
findings describe the value (length, prefix) and never echo it.
"""

from __future__ import annotations

import re

from forwarder.doctor.report import Check, failed, passed, warned

VARIABLE = "WORKOS_WEBHOOK_SECRET"
PREFIX = "whsec_"
MIN_LENGTH = 16
"""Shorter than any endpoint secret WorkOS issues; a guessable HMAC key."""
_QUOTES = frozenset("\"'`\u2018\u2019\u201c\u201d")
_SHAPE = re.compile(r"^whsec_[A-Za-z0-9_-]+$")
_PLACEHOLDERS = ("change_me", "changeme", "your_secret", "your-secret", "xxxx", "example", "replace_me")
_FIX_VALUE = (
    f"set {VARIABLE} to the endpoint secret exactly as the WorkOS dashboard shows it "
    "(Webhooks > your endpoint), without quotes or spaces"
)


def check_webhook_secrets(raw: str | None) -> list[Check]:
    """One result per comma-separated secret (a rotation lists several)."""
    if raw is None or not any(part.strip() for part in raw.split(",")):
        return [
            failed(
                "webhook secret",
                f"{VARIABLE} is not set: serve refuses to start and no webhook can be verified",
                f"set {VARIABLE} to the endpoint secret from the WorkOS dashboard (Webhooks > your endpoint)",
            )
        ]
    parts = raw.split(",")
    several = len(parts) > 1
    results = []
    seen: dict[str, int] = {}
    for position, part in enumerate(parts, start=1):
        name = f"webhook secret #{position}" if several else "webhook secret"
        if not part.strip():
            results.append(
                warned(name, "empty entry (a stray comma)", f"remove the extra comma from {VARIABLE}")
            )
            continue
        earlier = seen.setdefault(part.strip(), position)
        if earlier != position:
            results.append(warned(name, f"repeats secret #{earlier}", f"list each secret once in {VARIABLE}"))
            continue
        results.append(judge_secret(name, part))
    return results


def judge_secret(name: str, part: str) -> Check:
    """The verdict on one secret as written in the variable (before serve trims it)."""
    value = part.strip()
    described = f"{len(value)} characters" + (f", {PREFIX} prefix" if value.startswith(PREFIX) else "")
    if any(char in _QUOTES for char in value):
        return failed(
            name,
            f"contains quote characters ({described}): they become part of the key, so every "
            "webhook fails with bad_signature",
            f"remove the quotes around the value of {VARIABLE} (in a .env or TOML file write the bare value)",
        )
    if any(char.isspace() for char in value):
        return failed(name, f"contains whitespace inside the value ({described})", _FIX_VALUE)
    if not value.isascii() or not value.isprintable():
        return failed(name, f"contains non-ASCII or control characters ({described})", _FIX_VALUE)
    mistaken = _other_credential(value)
    if mistaken:
        return failed(name, f"is {mistaken}, not a webhook endpoint secret", _FIX_VALUE)
    if any(placeholder in value.lower() for placeholder in _PLACEHOLDERS):
        return failed(name, f"is a placeholder ({described})", _FIX_VALUE)
    if part != value:
        return warned(
            name,
            f"has leading or trailing whitespace ({described}); serve trims it, other tools may not",
            f"remove the spaces or newline around the value of {VARIABLE}",
        )
    if len(value) < MIN_LENGTH:
        return warned(
            name,
            f"only {described}: shorter than WorkOS endpoint secrets",
            f"check {VARIABLE} holds the whole endpoint secret",
        )
    if not _SHAPE.match(value):
        return warned(
            name,
            f"does not look like a WorkOS endpoint secret ({described}; expected {PREFIX}...)",
            f"check {VARIABLE} is the endpoint secret from the WorkOS dashboard (Webhooks > your endpoint)",
        )
    return passed(name, f"present, {described}, no stray whitespace or quotes")


def _other_credential(value: str) -> str | None:
    """What the value is when it is another WorkOS credential or a signature header."""
    if value.startswith("sk_"):
        return "a WorkOS API key (sk_...)"
    if value.startswith("client_"):
        return "a WorkOS client id (client_...)"
    if value.startswith(("t=", "v1=")) or "v1=" in value:
        return "a WorkOS-Signature header value"
    if value.startswith(("http://", "https://")):
        return "a URL"
    return None
