"""Checks 4 and 5: the clock against WorkOS, and what the WorkOS API says about the key.

The clock matters because WorkOS signs a timestamp: past ``FORWARDER_SIGNATURE_TOLERANCE``
every authentic webhook is refused as ``stale_timestamp``. The reference is the ``Date``
header of the WorkOS API's own answer (any answer: it needs no key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

from forwarder.config import ConfigError
from forwarder.doctor.report import Check, Status, failed, passed, skipped, warned
from forwarder.sources.events_api import ApiSettings
from forwarder.sources.events_api_client import (
    DEFAULT_API_URL,
    ApiRejected,
    ApiUnavailable,
    EventsApiClient,
    iso_ms,
)

TIMEOUT_S = 10.0
ACTIVITY_WINDOW_S = 24 * 3600
MAX_PAGES = 10
"""Enough to tell "none" from "some"; the count is shown as a lower bound past it."""
_NO_KEY = "WORKOS_API_KEY is not set (the Events API poller is off)"


def classify_skew(skew_s: float, tolerance_s: float) -> Status:
    """FAIL past the signature tolerance, WARN past a third of it (room for drift), else PASS."""
    if abs(skew_s) > tolerance_s:
        return "FAIL"
    if abs(skew_s) > tolerance_s / 3:
        return "WARN"
    return "PASS"


def skew_from_date(date_header: str, sent_at: float, received_at: float) -> float:
    """Local clock minus the server's, in seconds (positive: this host is ahead).

    ``Date`` has one-second resolution and is stamped while the request is served, so it is
    compared with the middle of the round trip and taken as the middle of its second.
    """
    server = parsedate_to_datetime(date_header).timestamp() + 0.5
    return (sent_at + received_at) / 2 - server


def api_url(env: Mapping[str, str]) -> str:
    """The WorkOS API address the poller would use (``WORKOS_API_URL``), key or not."""
    settings = ApiSettings.from_env(env)
    if settings is not None:
        return settings.url
    return (env.get("WORKOS_API_URL", "").strip() or DEFAULT_API_URL).rstrip("/")


async def check_clock(env: Mapping[str, str], tolerance_s: float) -> Check:
    name = "clock"
    if not (env.get("WORKOS_API_KEY", "").strip() or env.get("WORKOS_WEBHOOK_SECRET", "").strip()):
        return skipped(name, "neither WORKOS_WEBHOOK_SECRET nor WORKOS_API_KEY is set")
    try:
        url = api_url(env)
    except ConfigError as exc:
        return skipped(name, f"the WorkOS API settings do not parse ({exc.variable})")
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        sent_at = time.time()
        try:
            response = await client.get(f"{url}/events", params={"limit": 1})
        except httpx.HTTPError as exc:
            return failed(
                name, f"cannot reach {url}: {type(exc).__name__}", "check WORKOS_API_URL and DNS/proxy"
            )
        received_at = time.time()
    date = response.headers.get("date")
    if not date:
        return warned(name, f"{url} answered without a Date header", "check WORKOS_API_URL (a proxy?)")
    try:
        skew = skew_from_date(date, sent_at, received_at)
    except (TypeError, ValueError):
        return warned(name, f"{url} answered an unreadable Date header", "check WORKOS_API_URL (a proxy?)")
    direction = "ahead of" if skew > 0 else "behind"
    detail = f"this host is {abs(skew):.1f} s {direction} WorkOS (tolerance {tolerance_s:g} s)"
    status = classify_skew(skew, tolerance_s)
    fix = "sync this host's clock (NTP, e.g. chrony or systemd-timesyncd)"
    if status == "FAIL":
        return failed(name, f"{detail}: every webhook is refused as stale_timestamp", fix)
    if status == "WARN":
        return warned(
            name,
            f"{detail}: over a third of the tolerance",
            f"{fix}; FORWARDER_SIGNATURE_TOLERANCE widens the window",
        )
    return passed(name, detail)


async def check_api(env: Mapping[str, str]) -> list[Check]:
    """Key accepted, an event source exists, the Events API answers, activity in the last 24 h."""
    try:
        settings = ApiSettings.from_env(env)
    except ConfigError as exc:
        return [failed("workos api key", str(exc), f"correct {exc.variable}")]
    if settings is None:
        return [skipped("workos api key", _NO_KEY)]
    headers = {"authorization": f"Bearer {settings.api_key}", "accept": "application/json"}
    async with httpx.AsyncClient(base_url=settings.url, headers=headers, timeout=TIMEOUT_S) as client:
        try:
            listed = {
                path: await client.get(f"/{path}", params={"limit": 1})
                for path in ("connections", "directories")
            }
        except httpx.HTTPError as exc:
            return [
                failed(
                    "workos api key",
                    f"cannot reach {settings.url}: {type(exc).__name__}",
                    "check WORKOS_API_URL",
                )
            ]
    statuses = {response.status_code for response in listed.values()}
    if 401 in statuses:
        return [
            failed(
                "workos api key",
                f"{settings.url} refused the key (401)",
                "set WORKOS_API_KEY to a secret key (sk_...) of the environment that sends your webhooks "
                "(WorkOS dashboard > API Keys)",
            )
        ]
    results = [passed("workos api key", f"accepted by {settings.url}")]
    results.append(_event_sources(listed))
    results.extend(await _events(settings))
    return results


def _event_sources(listed: Mapping[str, httpx.Response]) -> Check:
    name = "workos event source"
    found, refused = [], []
    for path, response in listed.items():
        if response.status_code != 200:
            refused.append(f"{path} {response.status_code}")
            continue
        try:
            data = response.json().get("data")
        except (ValueError, AttributeError):
            data = None
        if data:
            found.append(path)
    if found:
        return passed(name, f"found: {' and '.join(found)}")
    if refused:
        return warned(
            name,
            f"could not list event sources ({', '.join(refused)})",
            "give WORKOS_API_KEY read access to SSO connections and directories",
        )
    return warned(
        name,
        "no SSO connection and no directory in this environment: only AuthKit/user events can occur",
        "create a connection or directory in the WorkOS dashboard, or check WORKOS_API_KEY is the "
        "key of the environment you use",
    )


async def _events(settings: ApiSettings) -> list[Check]:
    client = EventsApiClient(
        settings.url, settings.api_key, max_attempts=1, timeout_s=TIMEOUT_S, max_retry_after_s=5
    )
    since = iso_ms(int((time.time() - ACTIVITY_WINDOW_S) * 1000))
    count, after, pages = 0, None, 0
    try:
        async with asyncio.timeout(60):
            while pages < MAX_PAGES:
                page = await client.list_events(
                    types=settings.types,
                    after=after,
                    range_start=since,
                    organization_id=settings.organization_id,
                )
                pages += 1
                count += len(page.events)
                after = page.after
                if after is None:
                    break
    except ApiRejected as exc:
        return [failed("workos events api", str(exc), "see the message: WORKOS_API_KEY, WORKOS_EVENTS")]
    except (ApiUnavailable, TimeoutError) as exc:
        return [failed("workos events api", f"no answer: {exc}", "check WORKOS_API_URL and the network")]
    finally:
        await client.aclose()
    answered = passed("workos events api", f"answers for {len(settings.types)} configured event type(s)")
    shown = f"{count}+" if after is not None else str(count)
    if count == 0:
        return [
            answered,
            warned(
                "workos activity",
                "0 events in the last 24 h: no activity yet, or the filter excludes it",
                "widen WORKOS_EVENTS (unset = every known type) or WORKOS_ORGANIZATION_ID; "
                "or cause an event (e.g. sign in) and run doctor again",
            ),
        ]
    return [answered, passed("workos activity", f"{shown} event(s) in the last 24 h")]
