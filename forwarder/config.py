"""Configuration from environment variables, optionally layered over a TOML file.

One source of truth: every setting is an environment variable. ``FORWARDER_CONFIG`` may name
a TOML file whose top-level keys are those same variable names; the environment wins over
the file. Sinks read their own variables from the same merged mapping, so a sink added as a
new module documents and parses its own settings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from forwarder.config_values import (
    DEFAULT_MAX_RETRY_AFTER,
    MAX_RETRY_AFTER_VARIABLE,
    choice,
    duration,
    integer,
    max_retry_after,
    switch,
)
from forwarder.errors import ConfigError
from forwarder.geoip import GeoIP, GeoIPError
from forwarder.normalize import NormalizeOptions
from forwarder.redaction import Redactor

# The one-variable parsers and ConfigError live in config_values and errors (so sinks.base can
# offer them without loading normalization); the core keeps importing them from here.
__all__ = [
    "DEFAULT_MAX_RETRY_AFTER",
    "MAX_RETRY_AFTER_VARIABLE",
    "ConfigError",
    "Settings",
    "choice",
    "duration",
    "integer",
    "load_environment",
    "max_retry_after",
    "switch",
]

DEFAULT_MAX_BODY_BYTES = 256 * 1024
"""Four times the largest event measured with the WorkOS SDK's models (``python -m
bench.event_sizes``; docs/security.md says why)."""


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
    min_body_rate: int
    max_buffered_bytes: int
    max_header_bytes: int
    header_timeout_s: float
    keepalive_timeout_s: float
    max_connections: int
    admin_host: str
    admin_port: int | None
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
            max_body_bytes=integer(env, "FORWARDER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=1024),
            body_timeout_s=duration(env, "FORWARDER_BODY_TIMEOUT", "10s"),
            min_body_rate=integer(env, "FORWARDER_MIN_BODY_RATE", 500),
            max_buffered_bytes=integer(
                env, "FORWARDER_MAX_BUFFERED_BYTES", 32 * 1024 * 1024, minimum=64 * 1024
            ),
            # The HTTP edge (forwarder/http_edge.py): what one unauthenticated client can hold.
            max_header_bytes=integer(env, "FORWARDER_MAX_HEADER_BYTES", 16 * 1024, minimum=1024),
            header_timeout_s=_positive(env, "FORWARDER_HEADER_TIMEOUT", "10s"),
            keepalive_timeout_s=duration(env, "FORWARDER_KEEPALIVE_TIMEOUT", "5s"),
            max_connections=integer(env, "FORWARDER_MAX_CONNECTIONS", 1000, minimum=1),
            admin_host=env.get("FORWARDER_ADMIN_HOST", "127.0.0.1"),
            admin_port=_admin_port(env),
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


def _admin_port(env: Mapping[str, str]) -> int | None:
    """``FORWARDER_ADMIN_PORT``: unset, /metrics and /status share the public port."""
    if not env.get("FORWARDER_ADMIN_PORT", "").strip():
        return None
    port = integer(env, "FORWARDER_ADMIN_PORT", 0, minimum=1)
    if port > 65535:
        raise ConfigError("FORWARDER_ADMIN_PORT", f"{port} is not a TCP port (1-65535)")
    if port == integer(env, "FORWARDER_PORT", 8080, minimum=0):
        raise ConfigError(
            "FORWARDER_ADMIN_PORT", f"{port} is FORWARDER_PORT too; choose another port (e.g. 8081)"
        )
    return port


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
