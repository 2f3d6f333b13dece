"""Check 8: one signed test event through the URL WorkOS calls (``--url``).

It proves that DNS, TLS, every proxy, the ``WorkOS-Signature`` header and the raw body arrive
intact. The event has the reserved type ``forwarder.doctor``: the endpoint verifies it like
any webhook, answers 200 and stores nothing, so it reaches no sink and counts as no event.

A 401 says why: ``missing_signature`` (a proxy dropped the header), ``malformed_signature``
(a proxy rewrote it), ``stale_timestamp`` (a clock), or ``bad_signature``. For the last one
the endpoint reports a digest of the body it received; when it differs from the digest of
the body sent, the body was modified on the way, otherwise the secret differs.

The body is written so that re-serializing it changes it: compact separators, keys out of
alphabetical order and a non-ASCII character, as no JSON library writes by default.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from datetime import UTC, datetime

import httpx
import orjson

from forwarder.doctor.report import Check, failed, passed, skipped, warned
from forwarder.masking import mask_url
from forwarder.signature import sign
from forwarder.sources.webhook import BODY_DIGEST_CHARS, DOCTOR_EVENT_TYPE

NAME = "public path"
TIMEOUT_S = 15.0
_SECRET_FIX = (
    "give the service and doctor the same WORKOS_WEBHOOK_SECRET, the one the WorkOS dashboard shows "
    "for this endpoint"
)


def probe_body() -> bytes:
    """A ``forwarder.doctor`` event, laid out as no re-serializer would leave it."""
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event = {
        "id": f"event_doctor_{secrets.token_hex(8)}",
        "event": DOCTOR_EVENT_TYPE,
        "data": {"note": "workos-forwarder doctor probe, never stored (\u00e9)", "sent_at": time.time()},
        "created_at": created,
    }
    return orjson.dumps(event)


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:BODY_DIGEST_CHARS]


async def check_public_path(url: str | None, secret_list: tuple[str, ...]) -> Check:
    if not url:
        return skipped(NAME, "no --url given (the public webhook URL WorkOS calls)")
    if not secret_list:
        return skipped(
            NAME,
            "no secret to sign the test event (WORKOS_WEBHOOK_SECRET unset or the settings do not parse)",
        )
    shown = mask_url(url)
    body = probe_body()
    headers = {"content-type": "application/json", "workos-signature": sign(body, secret_list[0])}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return failed(
            NAME,
            f"cannot reach {shown}: {type(exc).__name__} {exc}".rstrip(),
            "check --url, DNS, TLS and the proxy in front of the service",
        )
    return judge_answer(shown, response.status_code, response.content, body_digest(body))


def judge_answer(shown: str, status: int, answer: bytes, sent_digest: str) -> Check:
    """The verdict on the endpoint's answer to the test event (pure)."""
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        parsed = None
    said = parsed if isinstance(parsed, dict) else {}
    if status == 200:
        if said.get("status") == "doctor":
            return passed(NAME, f"{shown} verified the signed test event (200; not stored)")
        return warned(
            NAME,
            f"{shown} answered 200 but not as a workos-forwarder doctor probe: an older forwarder "
            "(it stored the test event) or another service",
            "upgrade the service behind --url, or check --url reaches it",
        )
    if status == 401:
        return _unauthorized(shown, str(said.get("error", "")), said.get("received_sha256"), sent_digest)
    if status == 404:
        return failed(
            NAME,
            f"{shown} answered 404: no webhook endpoint at this path",
            "make --url end with FORWARDER_WEBHOOK_PATH (default /webhooks/workos) "
            "and check the proxy's routes",
        )
    if status == 413:
        return failed(
            NAME, f"{shown} answered 413: a proxy limits the body size", "raise the proxy's body limit"
        )
    excerpt = " ".join(answer.decode("utf-8", "replace").split())[:200]
    return failed(
        NAME, f"{shown} answered {status}: {excerpt}", "see the answer; run doctor on the service's host"
    )


def _unauthorized(shown: str, error: str, received: object, sent_digest: str) -> Check:
    if error == "missing_signature":
        return failed(
            NAME,
            f"{shown} received no WorkOS-Signature header: a proxy dropped it",
            "configure the proxy to forward the WorkOS-Signature header unchanged",
        )
    if error == "malformed_signature":
        return failed(
            NAME,
            f"{shown} received a rewritten WorkOS-Signature header",
            "configure the proxy to forward the WorkOS-Signature header unchanged",
        )
    if error == "stale_timestamp":
        return failed(
            NAME,
            f"{shown}: the signature is valid but its time is outside the service's window",
            "sync the service host's clock (NTP), or widen FORWARDER_SIGNATURE_TOLERANCE",
        )
    if error == "bad_signature":
        if not isinstance(received, str):
            return failed(
                NAME,
                f"{shown}: bad signature, wrong secret or body modified (the service reports no body digest)",
                f"upgrade the service to tell them apart; meanwhile {_SECRET_FIX}",
            )
        if received != sent_digest:
            return failed(
                NAME,
                f"{shown}: the body was modified on the way (digest sent {sent_digest}, received {received})",
                "make the proxy pass the raw body unchanged: no JSON re-serialization, re-encoding or "
                "decompression",
            )
        return failed(NAME, f"{shown}: the body arrived intact but the secret differs", _SECRET_FIX)
    return failed(
        NAME,
        f"{shown} answered 401 ({error or 'no reason given'}): not a workos-forwarder?",
        "check --url reaches the service",
    )
