"""One environment variable at a time: the parsers every module and sink reads settings with.

Each parser names the variable and the fix in its ``ConfigError``. This module is apart from
``forwarder.config`` (which builds the core's ``Settings`` and needs normalization and
redaction) so that ``sinks.base`` can offer the parsers to a sink without loading the core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from forwarder.errors import ConfigError
from forwarder.retry_after import DEFAULT_CAP_S

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(env: Mapping[str, str], variable: str, default: str) -> float:
    """Seconds from values such as ``180``, ``30s``, ``5m``, ``24h`` or ``7d``."""
    raw = env.get(variable, default)
    match = _DURATION.match(raw)
    if not match:
        raise ConfigError(
            variable, f"{raw!r} is not a duration; use seconds or a unit, e.g. 30s, 5m, 24h, 7d"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


MAX_RETRY_AFTER_VARIABLE = "FORWARDER_MAX_RETRY_AFTER"
DEFAULT_MAX_RETRY_AFTER = f"{DEFAULT_CAP_S:g}s"


def max_retry_after(env: Mapping[str, str]) -> float:
    """``FORWARDER_MAX_RETRY_AFTER`` in seconds: the longest wait a server's ``Retry-After``
    or rate-limit reset may impose. The core, each sink and the Events API client read it
    from the same mapping, so one setting bounds every server-given wait."""
    return duration(env, MAX_RETRY_AFTER_VARIABLE, DEFAULT_MAX_RETRY_AFTER)


def integer(env: Mapping[str, str], variable: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(variable)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(variable, f"{raw!r} is not a whole number (default {default})") from None
    if value < minimum:
        raise ConfigError(variable, f"{value} is below the minimum {minimum}")
    return value


def switch(env: Mapping[str, str], variable: str, default: bool) -> bool:
    raw = env.get(variable, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "on", "yes"}:
        return True
    if raw in {"0", "false", "off", "no"}:
        return False
    raise ConfigError(variable, f"{raw!r} is not on/off (true/false, 1/0)")


def choice(env: Mapping[str, str], variable: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(variable, default).strip().lower() or default
    if value not in allowed:
        raise ConfigError(variable, f"{value!r} is not one of: {', '.join(allowed)}")
    return value
