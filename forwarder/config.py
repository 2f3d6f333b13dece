"""Configuration from environment variables, optionally layered over a TOML file.

One source of truth: every setting is an environment variable. ``FORWARDER_CONFIG`` may name
a TOML file whose top-level keys are those same variable names; the environment wins over
the file. Sinks read their own variables from the same merged mapping, so a sink added as a
new module documents and parses its own settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forwarder.geoip import GeoIP, GeoIPError
from forwarder.normalize import NormalizeOptions
from forwarder.redaction import Redactor
from forwarder.retry_after import DEFAULT_CAP_S


class ConfigError(Exception):
    """A setting is missing or invalid. The message names the variable and the fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def load_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment merged over the optional ``FORWARDER_CONFIG`` TOML file."""
    env = dict(os.environ if environ is None else environ)
    path = env.get("FORWARDER_CONFIG")
    if not path:
        return env
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("FORWARDER_CONFIG", f"cannot read {path!r} ({exc.strerror}); fix the path") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("FORWARDER_CONFIG", f"{path!r} is not valid TOML ({exc})") from exc
    from_file = {str(key): _toml_value(value) for key, value in table.items()}
    return {**from_file, **env}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


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


@dataclass(frozen=True)
class Settings:
    """The core's settings. Sinks and sources parse their own variables."""

    secrets: tuple[str, ...]
    host: str
    port: int
    webhook_path: str
    signature_tolerance_s: float
    max_body_bytes: int
    body_timeout_s: float
    max_header_bytes: int
    header_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    data_dir: Path
    journal_url: str
    sqlite_synchronous: str
    journal_max_bytes: int
    backlog_limit: int
    retention_s: float
    max_attempts: int
    max_retry_after_s: float
    shutdown_timeout_s: float
    log_level: str
    normalize: NormalizeOptions

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, require_secret: bool = True) -> Settings:
        secrets = tuple(
            part.strip() for part in env.get("WORKOS_WEBHOOK_SECRET", "").split(",") if part.strip()
        )
        if require_secret and not secrets:
            raise ConfigError(
                "WORKOS_WEBHOOK_SECRET",
                "not set; copy the endpoint secret from the WorkOS dashboard (Webhooks > your endpoint). "
                "Several secrets may be given comma-separated while rotating.",
            )
        data_dir = Path(env.get("FORWARDER_DATA_DIR", "./data"))
        webhook_path = env.get("FORWARDER_WEBHOOK_PATH", "/webhooks/workos")
        if not webhook_path.startswith("/"):
            raise ConfigError("FORWARDER_WEBHOOK_PATH", f"{webhook_path!r} must start with '/'")
        return cls(
            secrets=secrets,
            host=env.get("FORWARDER_HOST", "127.0.0.1"),
            port=integer(env, "FORWARDER_PORT", 8080, minimum=0),
            webhook_path=webhook_path,
            signature_tolerance_s=duration(env, "FORWARDER_SIGNATURE_TOLERANCE", "180s"),
            max_body_bytes=integer(env, "FORWARDER_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            body_timeout_s=duration(env, "FORWARDER_BODY_TIMEOUT", "10s"),
            # The HTTP edge (forwarder/http_edge.py): what one unauthenticated client can hold.
            max_header_bytes=integer(env, "FORWARDER_MAX_HEADER_BYTES", 16 * 1024, minimum=1024),
            header_timeout_s=_positive(env, "FORWARDER_HEADER_TIMEOUT", "10s"),
            keepalive_timeout_s=duration(env, "FORWARDER_KEEPALIVE_TIMEOUT", "5s"),
            max_connections=integer(env, "FORWARDER_MAX_CONNECTIONS", 1000, minimum=1),
            data_dir=data_dir,
            journal_url=env.get("FORWARDER_JOURNAL_URL") or f"sqlite:///{data_dir / 'journal.sqlite3'}",
            sqlite_synchronous=choice(env, "FORWARDER_SQLITE_SYNCHRONOUS", "full", ("full", "normal")),
            journal_max_bytes=integer(env, "FORWARDER_JOURNAL_MAX_BYTES", 0),
            backlog_limit=integer(env, "FORWARDER_BACKLOG_LIMIT", 1_000_000, minimum=1),
            retention_s=duration(env, "FORWARDER_RETENTION", "7d"),
            max_attempts=integer(env, "FORWARDER_MAX_ATTEMPTS", 5, minimum=1),
            max_retry_after_s=max_retry_after(env),
            shutdown_timeout_s=duration(env, "FORWARDER_SHUTDOWN_TIMEOUT", "10s"),
            log_level=choice(env, "FORWARDER_LOG_LEVEL", "info", ("debug", "info", "warning", "error")),
            normalize=NormalizeOptions(
                service=env.get("FORWARDER_SERVICE", "workos-events"),
                env=env.get("FORWARDER_ENV", "production"),
                redaction=_redactor(env),
                geoip=_geoip(env),
            ),
        )


def _positive(env: Mapping[str, str], variable: str, default: str) -> float:
    """A duration that must be above zero: a deadline of 0 would refuse every request."""
    value = duration(env, variable, default)
    if value <= 0:
        raise ConfigError(variable, f"must be above zero (default {default})")
    return value


def _geoip(env: Mapping[str, str]) -> GeoIP | None:
    """``FORWARDER_GEOIP_DB``: the MaxMind database that locates client IPs, opened once."""
    path = env.get("FORWARDER_GEOIP_DB", "").strip()
    if not path:
        return None
    try:
        return GeoIP(path)
    except GeoIPError as exc:
        raise ConfigError("FORWARDER_GEOIP_DB", str(exc)) from None


def _redactor(env: Mapping[str, str]) -> Redactor | None:
    fields = frozenset(
        part.strip().lower() for part in env.get("FORWARDER_REDACT", "").split(",") if part.strip()
    )
    if not fields:
        return None
    unknown = fields - {"email", "ip"}
    if unknown:
        raise ConfigError(
            "FORWARDER_REDACT", f"unknown field(s) {sorted(unknown)}; use email, ip or email,ip"
        )
    mode: Literal["hash", "drop"] = (
        "drop" if choice(env, "FORWARDER_REDACT_MODE", "hash", ("hash", "drop")) == "drop" else "hash"
    )
    key = env.get("FORWARDER_REDACT_KEY", "")
    if mode == "hash" and not key:
        raise ConfigError(
            "FORWARDER_REDACT_KEY",
            "required when FORWARDER_REDACT is set in hash mode; set a long random secret "
            "(e.g. `openssl rand -hex 32`) or FORWARDER_REDACT_MODE=drop",
        )
    return Redactor(fields, mode, key.encode() if key else None)
