"""Every error the forwarder raises on purpose, drawn in one place (as httpx's ``_exceptions``).

Each name says what whoever catches it must do::

    ForwarderError                    the root: one ``except`` for anything raised on purpose
    ├── ConfigError                   fix the variable it names (exit 2, one line, no traceback)
    │   └── SinkContractError         fix or remove the sink plugin it names
    ├── SinkError                     what a sink's ``send`` raises to the delivery loop
    │   ├── RetryableError            send the same batch again later (nothing is dropped)
    │   └── PermanentError            dead-letter: retrying will not help
    ├── JournalUnavailable            answer 503 + Retry-After, try again (webhooks, pollers)
    │   └── BacklogFull               the same, for longer: sinks are too far behind
    ├── InvalidEvent (ValueError)     answer 400: the payload is not a WorkOS event
    ├── SignatureError                answer 401: the webhook cannot be trusted
    ├── ApiRejected                   stop: the Events API refused, asking again will not help
    ├── ApiUnavailable                try later: the Events API kept failing through its retries
    └── ApplyError                    stop ``datadog apply``: Datadog refused an object

Three exceptions stay outside on purpose: ``failpoints.InjectedFault`` must not be caught by
anything that catches these, and ``webhook._Rejected`` and ``delivery._Stopped`` are control
flow private to one module. This module imports nothing from the project: anything may raise
these, and ``sinks.base`` re-exports the sink ones without loading the core.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

SignatureReason = Literal["missing_signature", "malformed_signature", "stale_timestamp", "bad_signature"]


class ForwarderError(Exception):
    """The root of every error the forwarder raises on purpose."""


class ConfigError(ForwarderError):
    """A setting is missing or invalid. The message names the variable and the fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class SinkContractError(ConfigError):
    """A sink plugin does not satisfy the contract of ``sinks.base.Sink``.

    ``variable`` is the plugin as an operator finds it: its entry-point name and target
    (``sink plugin 'mysink' (my_package.mysink:create)``); the message names what is missing.
    """


class SinkError(ForwarderError):
    """Base class of the errors a sink may raise from ``send``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableError(SinkError):
    """The batch could not be delivered now; the same batch should be tried again.

    ``retry_after`` (seconds) is the earliest useful retry, from ``Retry-After`` or a
    rate-limit header. ``unhealthy`` marks errors an operator must fix (a rejected API key):
    the sink is reported unhealthy on ``/readyz``, ``/status`` and in metrics until a send
    succeeds again, and retries slowly meanwhile.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None, unhealthy: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.unhealthy = unhealthy


class PermanentError(SinkError):
    """Retrying will not help.

    With ``event_ids`` the sink isolated the records it could not deliver and delivered all
    the others: those go straight to dead letters. Without, no record of the batch was
    delivered: the loop halves the batch at once to find the records that fail alone.
    """

    def __init__(self, reason: str, *, event_ids: Sequence[str] | None = None) -> None:
        super().__init__(reason)
        self.event_ids = list(event_ids) if event_ids is not None else None


class JournalUnavailable(ForwarderError):
    """The journal cannot take the write (or answer the read) now; webhooks get 503 + Retry-After."""

    retry_after_s = 5


class BacklogFull(JournalUnavailable):
    """Sinks are too far behind: accepting more would grow the journal without bound."""

    retry_after_s = 30


class InvalidEvent(ForwarderError, ValueError):
    """The payload is not a WorkOS event; the message says what is wrong (answered as HTTP 400)."""


class SignatureError(ForwarderError):
    """A webhook whose signature cannot be trusted.

    `reason` is a fixed vocabulary (it becomes the `result` label of workos_webhook_requests_total);
    `detail` is short human text that never contains a secret or a full signature; `skew_ms` is
    now - t on bad_signature and stale_timestamp (the header parsed), so clock problems show up even on
    rejected requests.
    """

    def __init__(self, reason: SignatureReason, detail: str, skew_ms: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: SignatureReason = reason
        self.detail = detail
        self.skew_ms = skew_ms


class ApiRejected(ForwarderError):
    """The API refused the request (400/401/403/404/422): asking again will not help.

    The message names the status, the server's own words and the likely cause.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ApiUnavailable(ForwarderError):
    """The API kept failing (5xx, timeouts, refused connections) through every retry."""


class ApplyError(ForwarderError):
    """Apply cannot go on; the message names the object and what Datadog answered."""
