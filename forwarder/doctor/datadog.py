"""Check 6: Datadog knows the key, the logs intake answers, and (on request) one log arrives.

"Datadog is not receiving" has three usual causes, told apart here: a key from another
Datadog site (``DD_SITE``; the key-validation endpoint of that site refuses it), an intake
address nothing answers at (``DD_LOGS_URL`` or a proxy), and logs that arrive but are
filtered out of the search (``--send-test-log`` sends one tagged ``doctor:true`` to look for).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping

import httpx
import orjson

from forwarder.config import ConfigError
from forwarder.doctor.report import Check, failed, passed, skipped, warned
from forwarder.masking import mask_url
from sinks.datadog import create as create_sink
from sinks.datadog import request_headers, site

TIMEOUT_S = 10.0
TEST_LOG_TAGS = "doctor:true,source:workos,forwarder:workos-forwarder"
_KEY_FIX = (
    "set DD_API_KEY to an API key (not an application key) of the Datadog site in DD_SITE "
    "(Organization Settings > API Keys)"
)


def validation_url(env: Mapping[str, str]) -> str:
    """Datadog's key-validation endpoint for ``DD_SITE`` (``DD_API_URL`` overrides the address)."""
    base = env.get("DD_API_URL", "").strip() or f"https://api.{site(env, 'DD_API_URL')}"
    return f"{base.rstrip('/')}/api/v1/validate"


def probe_log(env: Mapping[str, str]) -> list[dict[str, object]]:
    """The one log ``--send-test-log`` sends: tagged ``doctor:true`` so it is easy to find and to
    exclude, under the service the forwarder's records use."""
    return [
        {
            "message": "workos-forwarder doctor: test log",
            "ddsource": "workos",
            "service": env.get("FORWARDER_SERVICE", "workos-events"),
            "ddtags": f"{TEST_LOG_TAGS},env:{env.get('FORWARDER_ENV', 'production')}",
            "hostname": socket.gethostname(),
            "status": "info",
            "date": int(time.time() * 1000),
        }
    ]


async def check_datadog(env: Mapping[str, str], *, send_test_log: bool) -> list[Check]:
    if not env.get("DD_API_KEY", "").strip():
        return [skipped("datadog", "DD_API_KEY is not set (the Datadog sink is off)")]
    try:
        sink = create_sink(env)
        validate = validation_url(env)
    except ConfigError as exc:
        return [failed("datadog", str(exc), f"correct {exc.variable}")]
    assert sink is not None
    intake = sink.url
    await sink.close()
    key = env["DD_API_KEY"].strip()
    headers = request_headers(key, user_agent="workos-forwarder-doctor")
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT_S) as client:
        results = [await _validate(client, validate)]
        results.append(await _intake(client, intake))
        if send_test_log:
            results.append(await _send_test_log(client, intake, env))
        else:
            results.append(
                skipped("datadog test log", "not sent; --send-test-log sends one tagged doctor:true")
            )
    return results


async def _validate(client: httpx.AsyncClient, url: str) -> Check:
    name = "datadog api key"
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        return failed(
            name, f"cannot reach {mask_url(url)}: {type(exc).__name__}", "check DD_SITE (or DD_API_URL)"
        )
    if response.status_code == 200:
        return passed(name, f"valid for {mask_url(url)}")
    if response.status_code in (401, 403):
        return failed(name, f"{mask_url(url)} refused the key ({response.status_code})", _KEY_FIX)
    return warned(
        name,
        f"{mask_url(url)} answered {response.status_code}: cannot tell whether the key is valid",
        "check DD_SITE (or DD_API_URL) and run doctor again",
    )


async def _intake(client: httpx.AsyncClient, url: str) -> Check:
    """An empty batch: proves address, TLS and key without adding a log."""
    name = "datadog intake"
    return _judge_post(name, url, await _post(client, url, b"[]"), "an empty batch")


async def _send_test_log(client: httpx.AsyncClient, url: str, env: Mapping[str, str]) -> Check:
    name = "datadog test log"
    check = _judge_post(name, url, await _post(client, url, orjson.dumps(probe_log(env))), "one test log")
    if check.status != "PASS":
        return check
    return passed(
        name,
        f"{check.detail}; search Datadog Logs for `tags:doctor:true` (no log there: an index filter "
        "or exclusion drops source:workos)",
    )


async def _post(client: httpx.AsyncClient, url: str, body: bytes) -> httpx.Response | str:
    try:
        return await client.post(url, content=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def _judge_post(name: str, url: str, answer: httpx.Response | str, what: str) -> Check:
    shown = mask_url(url)
    if isinstance(answer, str):
        return failed(name, f"cannot reach {shown}: {answer}", "check DD_LOGS_URL (or DD_SITE) and any proxy")
    status = answer.status_code
    if 200 <= status < 300:
        return passed(name, f"{shown} accepted {what} ({status})")
    if status in (401, 403):
        return failed(name, f"{shown} refused the key ({status})", _KEY_FIX)
    excerpt = " ".join(answer.text.split())[:200]
    return failed(
        name,
        f"{shown} answered {status} to {what}: {excerpt}",
        "check DD_LOGS_URL (or DD_SITE) points at a Datadog logs intake",
    )
