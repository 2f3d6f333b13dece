"""The webhook endpoint, end to end over loopback HTTP against the real service."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import orjson
import pytest

from forwarder.signature import sign
from tests.samples import make_event
from tests.service import SECRET, Service, wait_for

StartService = Callable[..., Service]


def test_signed_event_is_acknowledged_stored_and_forwarded(start_service: StartService) -> None:
    service = start_service()
    event = make_event("authentication.password_failed")

    response = service.post(event)

    assert response.status_code == 200
    assert response.json() == {"status": "accepted", "id": event["id"]}
    records = wait_for(service.records, what="the record on the jsonl sink")
    assert [record["workos"]["id"] for record in records] == [event["id"]]
    record = records[0]
    assert record["ddsource"] == "workos"
    assert "source:workos" in record["ddtags"].split(",")
    assert record["status"] == "error"
    assert record["workos"]["delivery"] == "webhook"
    wait_for(
        lambda: (
            service.metric(
                "workos_events_total",
                event="authentication.password_failed",
                category="authentication",
                outcome="failure",
            )
            == 1
        ),
        what="workos_events_total to count the event",
    )
    assert service.metric("workos_webhook_requests_total", result="accepted") == 1


def test_duplicate_id_is_acknowledged_but_delivered_once(start_service: StartService) -> None:
    service = start_service()
    event = make_event("user.created")

    first, second = service.post(event), service.post(event)

    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    assert (second.status_code, second.json()["status"]) == (200, "duplicate")
    wait_for(service.records, what="the record")
    time.sleep(0.5)
    assert service.record_ids() == [event["id"]]
    assert service.metric("workos_webhook_requests_total", result="duplicate") == 1


def _stale_signature(body: bytes) -> str:
    return sign(body, SECRET, timestamp_ms=int(time.time() * 1000) - 10 * 60 * 1000)


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "missing_signature"),
        ("t=abc, v1=00", "malformed_signature"),
        ("v1=" + "0" * 64, "malformed_signature"),
        ("stale", "stale_timestamp"),
        ("wrong-secret", "bad_signature"),
    ],
)
def test_bad_signature_is_401_with_reason_and_stores_nothing(
    start_service: StartService, signature: str | None, reason: str
) -> None:
    service = start_service()
    event = make_event("authentication.password_succeeded")
    body = orjson.dumps(event)
    headers = {"content-type": "application/json"}
    if signature == "stale":
        headers["workos-signature"] = _stale_signature(body)
    elif signature == "wrong-secret":
        headers["workos-signature"] = sign(body, "whsec_some_other_secret")
    elif signature is not None:
        headers["workos-signature"] = signature

    response = httpx.post(f"{service.url}/webhooks/workos", content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["error"] == reason
    assert service.status()["journal"]["events"] == 0
    assert service.metric("workos_webhook_requests_total", result=reason) == 1
    log = service.stderr_path.read_text()
    assert reason in log
    assert SECRET not in log
    digest = headers.get("workos-signature", "").split("v1=")[-1]
    if len(digest) == 64:
        assert digest not in log


def test_stale_rejection_logs_the_clock_skew(start_service: StartService) -> None:
    service = start_service()
    body = orjson.dumps(make_event("user.updated"))
    service.post(body, signature=_stale_signature(body))
    line = next(line for line in service.stderr_path.read_text().splitlines() if "stale_timestamp" in line)
    assert orjson.loads(line)["skew_ms"] >= 10 * 60 * 1000 - 5000


def test_rotation_accepts_either_secret(start_service: StartService) -> None:
    service = start_service(WORKOS_WEBHOOK_SECRET=f"whsec_new_secret,{SECRET}")
    assert service.post(make_event("user.created"), secret="whsec_new_secret").status_code == 200
    assert service.post(make_event("user.created"), secret=SECRET).status_code == 200


def test_oversized_body_is_413(start_service: StartService) -> None:
    service = start_service(FORWARDER_MAX_BODY_BYTES="2048")
    event = make_event("user.created", data={"padding": "x" * 4096})
    body = orjson.dumps(event)

    declared = service.post(body)

    def chunks() -> object:
        yield body[:1000]
        yield body[1000:]

    streamed = httpx.post(
        f"{service.url}/webhooks/workos",
        content=chunks(),
        headers={"workos-signature": sign(body, SECRET), "content-type": "application/json"},
    )
    assert declared.status_code == 413
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "too_large"
    assert service.status()["journal"]["events"] == 0


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b"[1, 2, 3]", b'{"event": "user.created"}', b'{"id": 42, "event": "user.created"}'],
)
def test_verified_body_that_is_not_an_event_is_400(start_service: StartService, body: bytes) -> None:
    service = start_service()
    response = service.post(body)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["detail"]
    assert service.status()["journal"]["events"] == 0


def test_unknown_event_type_passes_through(start_service: StartService) -> None:
    service = start_service()
    event = make_event("widget.frobnicated", data={"id": "widget_01"})

    assert service.post(event).status_code == 200

    (record,) = wait_for(service.records, what="the record")
    assert record["workos"]["event"] == "widget.frobnicated"
    assert record["workos"]["category"] == "other"  # "widget" is no category the catalog knows
    wait_for(
        lambda: service.metric("workos_events_total", event="other", category="other", outcome="info") == 1
    )


def test_full_journal_answers_503_with_retry_after_never_200(start_service: StartService) -> None:
    service = start_service(FORWARDER_JOURNAL_MAX_BYTES=str(160 * 1024))
    padding = "y" * 2_000
    answers = [service.post(make_event("user.updated", data={"note": padding})) for _ in range(120)]

    statuses = {response.status_code for response in answers}
    assert statuses <= {200, 503}
    assert 503 in statuses, "the capped journal never filled up"
    refused = next(response for response in answers if response.status_code == 503)
    assert int(refused.headers["retry-after"]) > 0
    accepted = {response.json()["id"] for response in answers if response.status_code == 200}
    wait_for(lambda: set(service.record_ids()) == accepted, what="every acknowledged event on the sink")
    assert httpx.get(f"{service.url}/readyz").status_code == 503


def test_backlog_over_limit_answers_503(start_service: StartService, tmp_path) -> None:
    from tests.conftest import with_flaky_sink

    service = start_service(FORWARDER_BACKLOG_LIMIT="5", **with_flaky_sink(tmp_path, "retryable"))
    answers = [service.post(make_event("user.created")).status_code for _ in range(8)]
    assert answers[:5] == [200] * 5
    assert set(answers[5:]) == {503}
    ready = httpx.get(f"{service.url}/readyz")
    assert ready.status_code == 503
    assert "backlog" in ready.json()["problems"][0]


def test_redaction_hides_emails_and_ips_everywhere(start_service: StartService) -> None:
    service = start_service(FORWARDER_REDACT="email,ip", FORWARDER_REDACT_KEY="k" * 32)
    event = make_event("authentication.password_failed")
    email, ip = event["data"]["email"], event["data"]["ip_address"]

    assert service.post(event).status_code == 200

    wait_for(service.records, what="the record")
    stored = service.jsonl.read_text()
    assert email not in stored
    assert ip not in stored
    assert "redacted:" in stored


def test_a_body_that_never_finishes_is_408_and_others_are_unaffected(start_service: StartService) -> None:
    service = start_service(FORWARDER_BODY_TIMEOUT="1s")
    body = orjson.dumps(make_event("user.created"))
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as slow:
        slow.sendall(
            b"POST /webhooks/workos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"WorkOS-Signature: {sign(body, SECRET)}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        started = time.monotonic()
        assert service.post(make_event("user.created")).status_code == 200  # not held up meanwhile
        answer = slow.recv(4096)
        waited = time.monotonic() - started
        while b'"timeout"' not in answer:  # the head and the body may arrive in separate segments
            more = slow.recv(4096)
            if not more:
                break
            answer += more

    assert answer.startswith(b"HTTP/1.1 408")
    assert b'"timeout"' in answer
    assert 0.9 <= waited < 5
    assert service.metric("workos_webhook_requests_total", result="timeout") == 1
