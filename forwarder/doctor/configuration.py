"""Check 1: every variable parses, with the errors ``serve`` gives.

The same parsers as ``serve`` run here (core settings, every registered sink, the Events
API settings), so a value this check passes is one ``serve`` accepts. A missing webhook
secret is left to the secret check, which says more about it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from forwarder.config import ConfigError, Settings
from forwarder.doctor.report import Check, failed, passed
from forwarder.sources.events_api import ApiSettings
from sinks.base import load_sinks

NAME = "configuration"


async def check_configuration(env: Mapping[str, str]) -> tuple[Check, Settings | None]:
    """The verdict and, when the core settings parse, the settings the other checks use."""
    settings = None
    try:
        # The core settings first: when only a sink is wrong, the journal and the public path
        # can still be checked with them.
        settings = Settings.from_env(env, require_secret=False)
        sinks = load_sinks(env)
        ApiSettings.from_env(env)
    except ConfigError as exc:
        return failed(NAME, str(exc), f"correct {exc.variable}"), settings
    await asyncio.gather(*(sink.close() for sink in sinks))
    names = ", ".join(sink.name for sink in sinks) or "none"
    return passed(NAME, f"every variable parses; sinks: {names}"), settings
