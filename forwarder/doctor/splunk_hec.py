"""After check 7: Splunk HEC is healthy and accepts the token (when the HEC sink is on).

Through the sink's own settings and client (``sinks.splunk_hec``: URL, token, TLS
verification and CA file), so what it proves is what the sink will use: ``GET
/services/collector/health``, then an empty post, which HEC answers "No data" (code 5) for a
good token and "Invalid token" (403, code 4) for a bad one. Nothing is indexed.
"""

from __future__ import annotations

from collections.abc import Mapping

from forwarder.config import ConfigError
from forwarder.doctor.report import Check, failed, passed, skipped
from sinks.base import RetryableError
from sinks.splunk_hec import create

NAME = "splunk hec"


async def check_splunk_hec(env: Mapping[str, str]) -> Check:
    if not env.get("SPLUNK_HEC_URL", "").strip():
        return skipped(NAME, "SPLUNK_HEC_URL is not set (the Splunk HEC sink is off)")
    try:
        sink = create(env)
    except ConfigError as exc:
        return failed(NAME, str(exc), f"correct {exc.variable}")
    assert sink is not None
    try:
        ok, found, variable = await sink.check_token()
    except RetryableError as exc:
        return failed(NAME, exc.reason, "check SPLUNK_HEC_URL and TLS (SPLUNK_HEC_TLS_CA_FILE)")
    finally:
        await sink.close()
    return passed(NAME, found) if ok else failed(NAME, found, f"correct {variable}")
