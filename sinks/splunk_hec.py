"""Splunk HTTP Event Collector sink: each record as one HEC event on ``/services/collector/event``.

Built on the shared machinery (``sinks.http``): what it adds is HEC's own protocol.

* Each event is ``{"time", "host", "source", "sourcetype", "index", "event"}``: ``time`` is
  the event's ``created_at`` in epoch seconds with milliseconds, ``event`` the record as
  stored (its bytes are spliced in, never decoded). A request is events one after another
  (not an array), at most ``max_batch`` of them and 1 MB before gzip.
* HEC answers ``{"text", "code"}``, and the code says more than the status: code 4 (403, an
  invalid token) or 2/3 (401) make the sink unhealthy with a reason naming
  ``SPLUNK_HEC_TOKEN``, and nothing is dropped; codes 5, 6, 12 and 13 (400, invalid data)
  name the first bad event (``invalid-event-number``): that one is refused, the others are
  sent again (whether HEC kept the ones before it is not promised, so at least once); code
  7 names ``SPLUNK_HEC_INDEX``; code 9 (503, busy) and 8 (500) are retried.
* With indexer acknowledgment (``SPLUNK_HEC_ACK=on``, a token with it enabled), every
  request carries the sink's ``X-Splunk-Request-Channel`` and answers an ``ackId``; the
  batch counts as delivered only once ``/services/collector/ack`` says every id is indexed.
  Not acknowledged within ``SPLUNK_HEC_ACK_TIMEOUT``: the batch is sent again.

The token is sent as ``Authorization: Splunk <token>`` and never shown: reasons and logs
name the URL through ``mask_url`` and the variable, not the value.
"""

from __future__ import annotations

import asyncio
import functools
import math
import socket
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import orjson

from sinks.base import (
    DEFAULT_CAP_S,
    ConfigError,
    EventFilter,
    Record,
    Refused,
    RetryableError,
    choice,
    duration,
    isolate,
    max_retry_after,
    switch,
)
from sinks.http import (
    GZIP_LEVEL,
    Answer,
    Answers,
    Fixes,
    HttpDestination,
    chunks,
    excerpt,
    gzip,
    isolate_each,
    not_delivered,
)

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
HEALTH_PATH = "/services/collector/health"
MAX_BATCH = 500
MAX_REQUEST_BYTES = 1_000_000
"""Before gzip: Splunk Cloud's advice, and Vector's default batch size for HEC."""
DEFAULT_SOURCETYPE = "_json"
"""Splunk's built-in JSON source type: every field of the record is searchable with no
``props.conf`` on the indexers. Set ``workos:event`` (or any) when shipping your own."""
FIXES = Fixes(
    credentials="check SPLUNK_HEC_TOKEN (Settings > Data inputs > HTTP Event Collector; the token "
    "must be enabled)",
    address="check SPLUNK_HEC_URL: the base URL of HEC, e.g. https://splunk:8088 (the sink adds "
    f"{EVENT_PATH})",
)
_INVALID_DATA = {5, 6, 12, 13}
_BAD_TOKEN = {2, 3, 4}
_FIX_BY_CODE = {
    7: "check SPLUNK_HEC_INDEX: the index must exist and the token must be allowed to write to it",
    10: "check SPLUNK_HEC_ACK: HEC wants a data channel (indexer acknowledgment is on for the token)",
    11: "check SPLUNK_HEC_ACK: HEC refused the data channel",
    14: "set SPLUNK_HEC_ACK=off, or enable indexer acknowledgment on the token",
}


@dataclass(frozen=True, slots=True)
class _Event:
    event_id: str
    body: bytes


def _size(event: _Event) -> int:
    return len(event.body)


def answer_code(response: httpx.Response) -> int | None:
    """HEC's ``code`` in an answer, None when the body is not HEC's JSON (a proxy's page)."""
    try:
        code = orjson.loads(response.content).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return code if isinstance(code, int) else None


def meaning(response: httpx.Response) -> Answer:
    """What a HEC answer means: the status, refined by HEC's code."""
    status, code = response.status_code, answer_code(response)
    if 200 <= status < 300:
        return Answer.DELIVERED
    if code in _BAD_TOKEN or status in (401, 403):
        return Answer.CREDENTIALS
    if code in _FIX_BY_CODE:
        return Answer.ADDRESS
    if code in _INVALID_DATA or status in (400, 413):
        return Answer.REFUSED
    if status in (408, 429) or status >= 500:
        return Answer.RETRY
    return Answer.ADDRESS


class SplunkHecSink:
    """Records to Splunk HEC; see the module docstring."""

    max_batch = MAX_BATCH

    def __init__(
        self,
        *,
        url: str,
        token: str,
        events: EventFilter,
        host: str,
        source: str = "workos",
        sourcetype: str = DEFAULT_SOURCETYPE,
        index: str | None = None,
        compression_level: int = GZIP_LEVEL,
        verify: bool | ssl.SSLContext = True,
        ack: bool = False,
        ack_timeout_s: float = 60.0,
        ack_interval_s: float = 1.0,
        max_retry_after_s: float = DEFAULT_CAP_S,
        linger_s: float = 1.0,
        name: str = "splunk_hec",
    ) -> None:
        self.name = name
        self.events = events
        self.linger_s = linger_s
        self.base_url = url.rstrip("/")
        self.ack = ack
        self._ack_timeout_s = ack_timeout_s
        self._ack_interval_s = ack_interval_s
        self._compression_level = compression_level
        self.channel = str(uuid.uuid4())
        headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
        if ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        if compression_level:
            headers["Content-Encoding"] = "gzip"
        self.answers = Answers(name, self.base_url + EVENT_PATH, FIXES, max_retry_after_s)
        self.destination = HttpDestination(self.answers, headers=headers, verify=verify)
        metadata = {"host": host, "source": source, "sourcetype": sourcetype}
        if index:
            metadata["index"] = index
        # Everything but the time and the event is the same for every event: encoded once.
        self._metadata = orjson.dumps(metadata)[1:-1]

    async def send(self, batch: Sequence[Record]) -> None:
        events = [_Event(record.event_id, self._event(record)) for record in batch]
        requests = chunks(events, _size, max_items=MAX_BATCH, max_bytes=MAX_REQUEST_BYTES, separator=1)
        ack_ids: list[int] = []
        refused = await isolate_each(requests, functools.partial(self._attempt, ack_ids=ack_ids))
        if self.ack and ack_ids:
            await self._acknowledged(ack_ids)
        if refused:
            raise not_delivered(self.name, [(event.event_id, reason) for event, reason in refused])

    async def close(self) -> None:
        await self.destination.aclose()

    def _event(self, record: Record) -> bytes:
        stamp = b'"time":%.3f,' % record.time if math.isfinite(record.time) else b""
        return b"{" + stamp + self._metadata + b',"event":' + record.json + b"}"

    async def _attempt(self, events: Sequence[_Event], ack_ids: list[int]) -> Refused[_Event] | None:
        """Post ``events`` once; HEC's answer as None (accepted), Refused, or RetryableError."""
        body = b"\n".join(event.body for event in events)
        if self._compression_level:
            body = await gzip(body, self._compression_level)
        url = self.base_url + EVENT_PATH
        response, answer = await self.destination.post(url, body, meaning=meaning)
        if answer is Answer.DELIVERED:
            if self.ack:
                ack_id = _json(response).get("ackId")
                if not isinstance(ack_id, int):
                    detail = "the answer has no ackId: indexer acknowledgment is off for the token"
                    raise self.answers.error(
                        response.status_code, Answer.ADDRESS, detail, fix=_FIX_BY_CODE[14]
                    )
                ack_ids.append(ack_id)
            return None
        status, detail = response.status_code, excerpt(response.text)
        if answer is Answer.REFUSED:
            bad = _json(response).get("invalid-event-number")
            if isinstance(bad, int) and 0 <= bad < len(events) and len(events) > 1:
                reason = f"{self.name}: HTTP {status} for event {events[bad].event_id}: {detail}"
                rest = [event for index, event in enumerate(events) if index != bad]
                again = await isolate(rest, functools.partial(self._attempt, ack_ids=ack_ids))
                return Refused(reason, [(events[bad], reason), *again])
            about = f" for event {events[0].event_id}" if len(events) == 1 else ""
            return Refused(f"{self.name}: HTTP {status}{about}: {detail}")
        raise self._error(response, answer)

    def _error(self, response: httpx.Response, answer: Answer) -> RetryableError:
        """The error for an answer that delivered nothing, naming the variable HEC's code points at."""
        code = answer_code(response)
        fix = _FIX_BY_CODE.get(code) if code is not None else None
        return self.answers.error(
            response.status_code, answer, excerpt(response.text), headers=response.headers, fix=fix
        )

    async def _acknowledged(self, ack_ids: list[int]) -> None:
        """Wait until HEC says every id is indexed; RetryableError past the ack timeout."""
        url = f"{self.base_url}{ACK_PATH}?channel={self.channel}"
        waiting = set(ack_ids)
        deadline = time.monotonic() + self._ack_timeout_s
        while True:
            response, answer = await self.destination.post(
                url,
                orjson.dumps({"acks": sorted(waiting)}),
                headers={"Content-Encoding": "identity"},
                meaning=meaning,
            )
            if answer is not Answer.DELIVERED:
                raise self._error(response, answer)
            acks = _json(response).get("acks")
            if isinstance(acks, dict):
                waiting -= {ack_id for ack_id in waiting if acks.get(str(ack_id)) is True}
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise RetryableError(
                    f"{self.name}: {len(waiting)} request(s) not acknowledged by {self.answers.shown_url}"
                    f" within {self._ack_timeout_s:g} s (SPLUNK_HEC_ACK_TIMEOUT); sending the batch again"
                )
            await asyncio.sleep(self._ack_interval_s)

    async def check_token(self) -> tuple[bool, str, str]:
        """``doctor``'s probe: HEC's health, then an empty post, whose ``code`` 5 ("No data")
        means the token is good. Answers (ok, what was found, the variable to fix)."""
        health = await self.destination.get(self.base_url + HEALTH_PATH)
        if health.status_code != 200:
            found = (
                f"{self.answers.shown_url}{HEALTH_PATH} answered {health.status_code}: {excerpt(health.text)}"
            )
            return False, found, "SPLUNK_HEC_URL"
        response, answer = await self.destination.post(self.base_url + EVENT_PATH, b"", meaning=meaning)
        code = answer_code(response)
        if answer is Answer.CREDENTIALS:
            return (
                False,
                f"HEC refused the token (HTTP {response.status_code}, code {code})",
                "SPLUNK_HEC_TOKEN",
            )
        if code == 5 or answer is Answer.DELIVERED:
            return True, f"{self.answers.shown_url} is healthy and accepts the token", ""
        return False, f"HEC answered HTTP {response.status_code}: {excerpt(response.text)}", "SPLUNK_HEC_URL"


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        value = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tls_verify(env: Mapping[str, str]) -> bool | ssl.SSLContext:
    """``SPLUNK_HEC_TLS_VERIFY`` (on) and ``SPLUNK_HEC_TLS_CA_FILE``, as Vector's ``tls.verify_certificate``
    and ``tls.ca_file``: HEC often has a self-signed certificate; trust its CA rather than turn checks off."""
    if not switch(env, "SPLUNK_HEC_TLS_VERIFY", True):
        return False
    ca_file = env.get("SPLUNK_HEC_TLS_CA_FILE", "").strip()
    if not ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "SPLUNK_HEC_TLS_CA_FILE",
            f"cannot read {ca_file!r} as PEM certificates ({exc}); give the CA's PEM file",
        ) from None


def create(env: Mapping[str, str]) -> SplunkHecSink | None:
    """The HEC sink when ``SPLUNK_HEC_URL`` is set, else None. Each variable is in docs/configuration.md."""
    url = env.get("SPLUNK_HEC_URL", "").strip()
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "SPLUNK_HEC_URL", f"{url!r} is not an http(s) URL; use HEC's base URL, e.g. https://splunk:8088"
        )
    if "/services/collector" in parts.path:
        raise ConfigError(
            "SPLUNK_HEC_URL", f"give HEC's base URL without a path (the sink adds {EVENT_PATH})"
        )
    token = env.get("SPLUNK_HEC_TOKEN", "").strip()
    if not token:
        raise ConfigError(
            "SPLUNK_HEC_TOKEN", "not set; copy the token from Settings > Data inputs > HTTP Event Collector"
        )
    return SplunkHecSink(
        url=url,
        token=token,
        events=EventFilter.from_env(env, "SPLUNK_HEC"),
        host=env.get("SPLUNK_HEC_HOST", "").strip() or socket.gethostname(),
        source=env.get("SPLUNK_HEC_SOURCE", "").strip() or "workos",
        sourcetype=env.get("SPLUNK_HEC_SOURCETYPE", "").strip() or DEFAULT_SOURCETYPE,
        index=env.get("SPLUNK_HEC_INDEX", "").strip() or None,
        compression_level=GZIP_LEVEL
        if choice(env, "SPLUNK_HEC_COMPRESSION", "gzip", ("gzip", "none")) == "gzip"
        else 0,
        verify=_tls_verify(env),
        ack=switch(env, "SPLUNK_HEC_ACK", False),
        ack_timeout_s=duration(env, "SPLUNK_HEC_ACK_TIMEOUT", "60s"),
        ack_interval_s=duration(env, "SPLUNK_HEC_ACK_INTERVAL", "1s"),
        max_retry_after_s=max_retry_after(env),
        linger_s=duration(env, "SPLUNK_HEC_BATCH_LINGER", "1s"),
    )
