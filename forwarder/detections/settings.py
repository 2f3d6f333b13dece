"""The detection settings: on or off, the user's rule directory, the state's bounds.

Read when the service is built and by ``serve --check-config``, so a rule that does not
parse stops the start with a configuration error naming the file and the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from forwarder.config import ConfigError, integer, switch
from forwarder.detections.engine import DEFAULT_MAX_EVENTS, DEFAULT_MAX_GROUPS, Limits
from forwarder.detections.rules import SHIPPED_RULES, RuleError, RuleSet, load_rules


@dataclass(frozen=True)
class DetectionSettings:
    rules: RuleSet
    limits: Limits
    user_rules: Path | None


def detection_settings(env: Mapping[str, str]) -> DetectionSettings | None:
    """The settings, or None with ``FORWARDER_DETECTIONS=off``. Raises ``ConfigError``."""
    if not switch(env, "FORWARDER_DETECTIONS", True):
        return None
    limits = Limits(
        max_events=integer(env, "FORWARDER_DETECTION_MAX_EVENTS", DEFAULT_MAX_EVENTS, minimum=1000),
        max_groups=integer(env, "FORWARDER_DETECTION_MAX_GROUPS", DEFAULT_MAX_GROUPS, minimum=100),
    )
    raw = env.get("FORWARDER_DETECTION_RULES", "").strip()
    user_rules = Path(raw) if raw else None
    directories = [SHIPPED_RULES] if user_rules is None else [SHIPPED_RULES, user_rules]
    try:
        rules = load_rules(directories)
    except RuleError as exc:
        shipped = exc.path.resolve().is_relative_to(SHIPPED_RULES.resolve())
        if shipped:
            raise ConfigError(
                "FORWARDER_DETECTIONS",
                f"shipped rule {exc.path.name}: {exc.reason}; reinstall the forwarder, or turn"
                " detections off with FORWARDER_DETECTIONS=off",
            ) from None
        raise ConfigError(
            "FORWARDER_DETECTION_RULES",
            f"{exc.path}: {exc.reason}; fix or remove the rule (docs/detections.md, Adding a rule)",
        ) from None
    return DetectionSettings(rules, limits, user_rules)
