"""The HTTP client of the WorkOS Events API: one page of ``GET /events`` per call, with retries.

What a request looks like (the filter, ``limit``, ``order=asc``, the ``after`` and
``range_*`` positions), how long to wait on a 429 (``Retry-After``, capped), how often to try
again on a 5xx or a network error, and how to word a refusal so that an operator knows what to
change. Where in the list to ask next is ``events_sync``'s job, not this module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import httpx
import orjson

from forwarder.backoff import EVENTS_API_BASE_S, EVENTS_API_CAP_S, backoff_delay
from forwarder.errors import ApiRejected, ApiUnavailable
from forwarder.masking import mask_url
from forwarder.retry_after import DEFAULT_CAP_S, retry_after_seconds
from forwarder.sources.events_page import Page, decode_page

DEFAULT_API_URL = "https://api.workos.com"
PAGE_LIMIT = 100
RETENTION_DAYS = 30

WaitNotice = Callable[[str, float], None]
"""Called before each retry wait with the reason and the seconds about to be waited."""


def iso_ms(ms: int) -> str:
    """``range_start``/``range_end`` form: UTC with a ``Z`` (the API refuses ``+00:00``)."""
    moment = datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)
    return f"{moment.isoformat(timespec='milliseconds')}Z"


class EventsApiClient:
    """``GET /events`` with the retries the API documents; one instance per process."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        max_attempts: int = 6,
        timeout_s: float = 30.0,
        on_wait: WaitNotice | None = None,
        max_retry_after_s: float = DEFAULT_CAP_S,
    ) -> None:
        """``max_retry_after_s`` caps a 429's ``Retry-After`` (``FORWARDER_MAX_RETRY_AFTER``, 5m default)."""
        self.url = mask_url(url)
        """For messages and ``/status``: the URL without a password (requests use the real one)."""
        self._max_attempts = max_attempts
        self._max_retry_after_s = max_retry_after_s
        self._on_wait = on_wait
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={
                "authorization": f"Bearer {api_key}",
                "accept": "application/json",
                "user-agent": "workos-forwarder",
            },
            timeout=timeout_s,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def list_events(
        self,
        *,
        types: Sequence[str],
        after: str | None = None,
        range_start: str | None = None,
        range_end: str | None = None,
        organization_id: str | None = None,
    ) -> Page:
        """One page. 429 waits as ``Retry-After`` says (as often as needed); 5xx and network
        errors back off with jitter, ``max_attempts`` times; 4xx raise ``ApiRejected``."""
        params: dict[str, str | int] = {"events": ",".join(types), "limit": PAGE_LIMIT, "order": "asc"}
        optional = {
            "after": after,
            "range_start": range_start,
            "range_end": range_end,
            "organization_id": organization_id,
        }
        params.update({name: value for name, value in optional.items() if value is not None})
        return await self.get_list("/events", params)

    async def get_list(self, path: str, params: dict[str, str | int]) -> Page:
        """One page of any WorkOS list endpoint (``{"data": [...], "list_metadata": {"after"}}``),
        with the retries of ``list_events`` (the membership lookups use it too)."""
        failures = limited = 0
        while True:
            try:
                response = await self._http.get(path, params=params)
            except httpx.TransportError as exc:
                reason = f"cannot reach {self.url}: {type(exc).__name__} {exc}".rstrip()
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return decode_page(response.content)
                    except ValueError as exc:
                        reason = f"unexpected answer from {self.url}{path}: {exc}"
                elif status == 429:
                    limited += 1
                    header = response.headers.get("retry-after")
                    wait = retry_after_seconds(header, cap=self._max_retry_after_s)
                    if wait is None:
                        await self._wait("rate limited (429) without Retry-After", backoff_delay(limited))
                    else:
                        await self._wait(f"rate limited (429), Retry-After: {header}", wait)
                    continue
                elif status >= 500 or status == 408:
                    reason = f"{_api_name(path)} answered {status}"
                else:
                    raise ApiRejected(status, _explain(status, response, self.url, path))
            failures += 1
            if failures >= self._max_attempts:
                raise ApiUnavailable(f"{reason}; gave up after {failures} attempts")
            await self._wait(reason, backoff_delay(failures, base=EVENTS_API_BASE_S, cap=EVENTS_API_CAP_S))

    async def _wait(self, reason: str, seconds: float) -> None:
        if self._on_wait is not None:
            self._on_wait(reason, seconds)
        await asyncio.sleep(seconds)


def _explain(status: int, response: httpx.Response, url: str, path: str = "/events") -> str:
    """The refusal in one line: what the API said and what to change."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    said = ""
    if isinstance(body, dict):
        said = str(body.get("message") or body.get("error") or "")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            said = f"{said} {orjson.dumps(errors[:3]).decode()}".strip()
    said = said[:300] or response.reason_phrase
    if status == 401:
        cause = (
            "WORKOS_API_KEY was not accepted: it is wrong, revoked, or belongs to another WorkOS "
            "environment (staging and production keys differ). Copy a secret key (sk_...) from the "
            "WorkOS dashboard, API Keys"
        )
    elif status == 403:
        cause = (
            "WORKOS_API_KEY is valid but may not read events: give the key permission to read events "
            "(WorkOS dashboard, API Keys) or use a key of the environment that owns the events"
        )
    elif status == 404 and path != "/events":
        cause = f"{url}{path} found nothing to list"
    elif status == 404:
        cause = f"there is no Events API at {url}/events: check WORKOS_API_URL (default {DEFAULT_API_URL})"
    else:
        cause = (
            "the request was refused; likely a bad filter: an event type the API does not know "
            "(WORKOS_EVENTS / --events), a malformed organization id (WORKOS_ORGANIZATION_ID / "
            "--organization, org_...), or a date range the API will not serve (--since/--until: "
            f"within the last {RETENTION_DAYS} days, at most {RETENTION_DAYS} days apart)"
        )
    return f"{_api_name(path)} answered {status} ({said}): {cause}"


def _api_name(path: str) -> str:
    return "Events API" if path == "/events" else f"WorkOS API ({path})"
