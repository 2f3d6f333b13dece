"""Pre-generated, signed webhook requests for the load generators.

Signing is done before a run so that the load generator only copies bytes: ``wrk`` has no
HMAC, and a Python generator that signed on the fly would measure itself. Every request has
its own event id (a repeated id is answered "duplicate" and would flatter the numbers) and a
type drawn from a mix close to what a WorkOS tenant sends: mostly authentication and
sessions, some directory sync and admin changes, a few failures. Bodies are about 1 KB.

Requests are written to a file of records ``<8-digit length><raw HTTP/1.1 request>``, a
format both ``bench/webhooks.lua`` (wrk) and ``bench/loadgen.py`` read sequentially.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from forwarder.signature import sign

LENGTH_DIGITS = 8
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Mobile/15E148 Safari/604.1",
)
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tony")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")

# (event type, weight): authentication dominates real traffic; failures are a minority.
MIX: tuple[tuple[str, int], ...] = (
    ("authentication.password_succeeded", 22),
    ("authentication.sso_succeeded", 10),
    ("authentication.oauth_succeeded", 8),
    ("session.created", 18),
    ("authentication.password_failed", 6),
    ("authentication.mfa_failed", 2),
    ("authentication.sso_failed", 2),
    ("authentication.radar_risk_detected", 1),
    ("user.updated", 6),
    ("user.created", 3),
    ("organization_membership.created", 3),
    ("dsync.user.updated", 8),
    ("dsync.group.user_added", 4),
    ("organization_domain.verification_failed", 1),
    ("some_new_feature.thing_happened", 1),
)


def _ulid(rng: random.Random, prefix: str) -> str:
    return f"{prefix}_01J{''.join(rng.choice(_CROCKFORD) for _ in range(23))}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _person(rng: random.Random) -> tuple[str, str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    return first, last, f"{first.lower()}.{last.lower()}{rng.randrange(1000)}@example.com"


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"203.0.113.{rng.randrange(1, 255)}"
    return f"2001:db8::{rng.randrange(65536):x}"


def _data(event_type: str, rng: random.Random, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """(data, context) shaped like WorkOS's payload for ``event_type``."""
    first, last, email = _person(rng)
    user_id, org_id = _ulid(rng, "user"), _ulid(rng, "org")
    context: dict[str, Any] = {
        "client_id": "client_01HWZ9K2M4P6R8T0V2X4Z6B8DA",
        "google_analytics_client_id": f"GA1.1.{rng.randrange(10**9)}.{int(now) - rng.randrange(10**6)}",
        "google_analytics_sessions": [
            {
                "containerId": "G-8XBK2Q4M7N",
                "sessionId": str(int(now) - rng.randrange(3600)),
                "sessionNumber": str(rng.randrange(1, 40)),
            }
        ],
    }
    category = event_type.split(".")[0]
    if category == "authentication":
        kind = event_type.split(".")[1].rsplit("_", 1)[0]
        status = event_type.rsplit("_", 1)[1]
        data: dict[str, Any] = {
            "type": kind,
            "status": status,
            "user_id": user_id if status == "succeeded" else None,
            "email": email,
            "ip_address": _ip(rng),
            "user_agent": rng.choice(_USER_AGENTS),
        }
        if kind == "sso":
            data["sso"] = {
                "organization_id": org_id,
                "connection_id": _ulid(rng, "conn"),
                "session_id": _ulid(rng, "sso_session"),
            }
        if status == "failed":
            data["error"] = {"code": "invalid_credentials", "message": f"Invalid credentials for {email}."}
        if kind == "radar_risk":
            data = {
                "auth_method": "password",
                "action": "login",
                "control": "challenge",
                "blocklist_type": "ip_address",
                "ip_address": _ip(rng),
                "user_agent": rng.choice(_USER_AGENTS),
                "user_id": user_id,
                "email": email,
            }
        context["actor"] = {"id": user_id, "source": "api", "name": f"{first} {last}"}
        return data, context
    if category == "session":
        return {
            "object": "session",
            "id": _ulid(rng, "session"),
            "user_id": user_id,
            "organization_id": org_id,
            "ip_address": _ip(rng),
            "user_agent": rng.choice(_USER_AGENTS),
            "auth_method": rng.choice(("password", "sso", "oauth", "magic_code")),
            "status": "active",
            "expires_at": _iso(now + 7 * 86400),
            "ended_at": None,
            "created_at": _iso(now),
            "updated_at": _iso(now),
        }, context
    if category in ("user", "organization_membership"):
        context["actor"] = {"id": _ulid(rng, "key"), "source": "api", "name": "Provisioning key"}
        if event_type.endswith(".updated"):
            context["previous_attributes"] = {"last_name": rng.choice(_LAST), "updated_at": _iso(now - 86400)}
        if category == "organization_membership":
            return {
                "object": "organization_membership",
                "id": _ulid(rng, "om"),
                "user_id": user_id,
                "organization_id": org_id,
                "status": "active",
                "role": {"slug": rng.choice(("member", "admin", "billing"))},
                "created_at": _iso(now),
                "updated_at": _iso(now),
            }, context
        return {
            "object": "user",
            "id": user_id,
            "email": email,
            "email_verified": True,
            "first_name": first,
            "last_name": last,
            "profile_picture_url": None,
            "external_id": None,
            "last_sign_in_at": _iso(now - 3600),
            "metadata": {"plan": rng.choice(("free", "team", "enterprise")), "region": "eu-west-1"},
            "locale": "en-US",
            "created_at": _iso(now - 86400 * 30),
            "updated_at": _iso(now),
        }, context
    if category == "dsync":
        return {
            "object": "directory_user",
            "id": _ulid(rng, "directory_user"),
            "directory_id": _ulid(rng, "directory"),
            "organization_id": org_id,
            "idp_id": f"00u{rng.randrange(16**17):017x}",
            "email": email,
            "first_name": first,
            "last_name": last,
            "emails": [{"primary": True, "type": "work", "value": email}],
            "state": "active",
            "custom_attributes": {"department": "Engineering", "job_title": "Staff Engineer"},
            "raw_attributes": {
                "userName": email,
                "name": {"givenName": first, "familyName": last},
                "emails": [{"value": email, "primary": True}],
                "active": True,
            },
            "role": {"slug": "member"},
            "created_at": _iso(now - 86400),
            "updated_at": _iso(now),
        }, {}
    if category == "organization_domain":
        return {
            "object": "organization_domain",
            "id": _ulid(rng, "org_domain"),
            "organization_id": org_id,
            "domain": "example.com",
            "state": "failed",
            "reason": "domain_verification_record_not_found",
            "verification_strategy": "dns",
            "created_at": _iso(now - 86400),
            "updated_at": _iso(now),
        }, context
    return {"object": "thing", "id": _ulid(rng, "thing"), "organization_id": org_id, "note": "new"}, context


def events(
    count: int, *, seed: int = 1, now: float | None = None, spacing_s: float | None = None
) -> Iterator[dict[str, Any]]:
    """``count`` WorkOS events with unique ids, types drawn from ``MIX``.

    Created within the second before ``now`` in no order (webhooks), or with ``spacing_s``
    oldest first, ``spacing_s`` apart up to ``now`` (an Events API list, ids in the same order).
    """
    rng = random.Random(seed)
    now = time.time() if now is None else now
    types = [event_type for event_type, _ in MIX]
    weights = [weight for _, weight in MIX]
    run = hashlib.sha256(f"{seed}:{now}".encode()).hexdigest()[:6].upper()
    for index in range(count):
        event_type = rng.choices(types, weights)[0]
        data, context = _data(event_type, rng, now)
        event: dict[str, Any] = {
            "object": "event",
            # Unique across runs too (a reused journal would answer "duplicate").
            "id": f"event_01J{run}{index:017d}",
            "event": event_type,
            "data": data,
            "created_at": _iso(
                now - rng.random() if spacing_s is None else now - (count - index) * spacing_s
            ),
        }
        if context:
            event["context"] = context
        yield event


def request_bytes(body: bytes, secret: str, *, host: str, path: str, timestamp_ms: int) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: workos-bench\r\n"
        f"Content-Type: application/json\r\n"
        f"WorkOS-Signature: {sign(body, secret, timestamp_ms=timestamp_ms)}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def write_requests(
    path: Path, count: int, secret: str, *, host: str, webhook_path: str, seed: int
) -> tuple[int, float]:
    """Write ``count`` signed requests to ``path``; return (bytes written, mean body size)."""
    timestamp_ms = time.time_ns() // 1_000_000
    total = body_bytes = 0
    with open(path, "wb") as out:
        for event in events(count, seed=seed):
            body = orjson.dumps(event)
            body_bytes += len(body)
            raw = request_bytes(body, secret, host=host, path=webhook_path, timestamp_ms=timestamp_ms)
            out.write(f"{len(raw):0{LENGTH_DIGITS}d}".encode() + raw)
            total += LENGTH_DIGITS + len(raw)
    return total, body_bytes / max(count, 1)


def iter_requests(path: Path) -> Iterator[bytes]:
    """The requests of a file written by ``write_requests``, read as needed (files can be GBs)."""
    with open(path, "rb", buffering=1 << 20) as source:
        while header := source.read(LENGTH_DIGITS):
            yield source.read(int(header))
