"""Loading rules: the shipped files, a user's directory overriding them by name, and every
Sigma feature the engine refuses, refused with the file and the reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from forwarder.config import ConfigError
from forwarder.detections.engine import Engine
from forwarder.detections.rules import SHIPPED_RULES, RuleError, load_rules
from forwarder.detections.settings import detection_settings
from forwarder.records import Entry

SHIPPED_CORRELATIONS = {
    "workos_brute_force",
    "workos_brute_force_then_success",
    "workos_password_spraying",
    "workos_credential_stuffing",
    "workos_mfa_guessing",
}


def test_the_shipped_rules_and_what_each_carries() -> None:
    rules = load_rules([SHIPPED_RULES])
    assert set(rules.correlations) == SHIPPED_CORRELATIONS
    assert list(rules.correlations).index("workos_brute_force") < list(rules.correlations).index(
        "workos_brute_force_then_success"
    )  # a correlation is evaluated after the one it uses
    stuffing = rules.correlations["workos_credential_stuffing"]
    assert stuffing.group_by == () and stuffing.span_s == 900
    assert [t.describe() for t in stuffing.thresholds] == [
        "distinct usr.email >= 15",
        "events >= 25",
        "distinct network.client.ip >= 5",
    ]
    assert rules.correlations["workos_mfa_guessing"].about.attack == ("T1110.001", "T1621")
    assert not any(rule.standalone for rule in rules.base.values())


def test_each_shipped_rule_carries_triage_false_positives_tags_and_a_level() -> None:
    from sigma.collection import SigmaCollection

    collection = SigmaCollection.load_ruleset([SHIPPED_RULES])
    for rule in collection:
        assert rule.title and rule.description and rule.falsepositives, rule.name
        assert rule.custom_attributes.get("triage"), rule.name
        assert rule.level is not None and any(tag.namespace == "attack" for tag in rule.tags), rule.name


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_a_user_rule_with_a_shipped_name_replaces_it(tmp_path: Path) -> None:
    """How a threshold is changed: copy the file, keep the name, edit the number."""
    shipped = (SHIPPED_RULES / "workos_mfa_guessing.yml").read_text()
    write(tmp_path, "workos_mfa_guessing.yml", shipped.replace("gte: 5", "gte: 3"))
    settings = detection_settings({"FORWARDER_DETECTION_RULES": str(tmp_path)})
    assert settings is not None
    (threshold,) = settings.rules.correlations["workos_mfa_guessing"].thresholds
    assert threshold.at_least == 3

    record = b'{"evt":{"name":"authentication.mfa_failed"},"usr":{"email":"a@example.com"}}'
    entries = [Entry(n, f"e{n}", "authentication.mfa_failed", 1e9 + n, record) for n in range(1, 4)]
    firings = Engine(settings.rules, settings.limits).process(entries)
    assert [f.about.name for f in firings] == ["workos_mfa_guessing"]


def test_a_base_rule_no_correlation_uses_fires_on_each_matching_record(tmp_path: Path) -> None:
    write(
        tmp_path,
        "radar.yml",
        "title: Radar blocked a sign-in\nname: radar_block\nlevel: high\nlogsource: {product: workos}\n"
        "detection:\n  selection:\n    evt.name|startswith: authentication.radar\n"
        "    workos.data.action|contains: [block, deny]\n  condition: selection\n",
    )
    settings = detection_settings({"FORWARDER_DETECTION_RULES": str(tmp_path)})
    assert settings is not None
    blocked = {"evt": {"name": "authentication.radar_risk_detected"}, "workos": {"data": {"action": "Block"}}}
    allowed = {"evt": {"name": "authentication.radar_risk_detected"}, "workos": {"data": {"action": "allow"}}}
    entries = [
        Entry(1, "e1", "authentication.radar_risk_detected", 1e9, orjson.dumps(blocked)),
        Entry(2, "e2", "authentication.radar_risk_detected", 1e9, orjson.dumps(allowed)),
    ]
    (firing,) = Engine(settings.rules, settings.limits).process(entries)
    assert firing.about.name == "radar_block" and firing.group == {"workos.id": "e1"}


CORRELATION = (
    "title: t\nname: mine\ncorrelation:\n  type: {type}\n  rules: [workos_failed_password_sign_in]\n"
    "  group-by: [usr.email]\n  timespan: 5m\n  condition: {condition}\n"
)
REFUSED = {
    "value_sum": (CORRELATION.format(type="value_sum", condition="{gte: 3, field: x}"), "type value_sum"),
    "lt": (CORRELATION.format(type="event_count", condition="{lt: 3}"), "condition lt is not supported"),
    "a fraction": (CORRELATION.format(type="event_count", condition="{gte: 2.5}"), "whole number"),
    "also_required of a bad type": (
        CORRELATION.format(type="event_count", condition="{gte: 3}")
        + "also_required:\n  - type: value_sum\n    condition: {gte: 1}\n",
        "also_required type 'value_sum'",
    ),
    "field aliases": (
        CORRELATION.format(type="event_count", condition="{gte: 3}").replace(
            "  timespan", "  aliases:\n    who:\n      workos_failed_password_sign_in: usr.email\n  timespan"
        ),
        "field aliases",
    ),
    "a field reference": (
        "title: t\nlogsource: {product: workos}\ndetection:\n  s:\n    usr.email|fieldref: usr.id\n"
        "  condition: s\n",
        "SigmaFieldReference",
    ),
    "a bad condition": (
        "title: t\nlogsource: {product: workos}\ndetection:\n  s: {a: b}\n  condition: s and\n",
        "",
    ),
    "no rule at all": ("# nothing\n", "holds no rule"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_the_engine_cannot_evaluate_is_refused_with_the_file_and_reason(
    tmp_path: Path, case: str
) -> None:
    text, reason = REFUSED[case]
    path = write(tmp_path, "mine.yml", text)
    with pytest.raises(RuleError) as raised:
        load_rules([SHIPPED_RULES, tmp_path])
    assert raised.value.path == path and reason in raised.value.reason
    with pytest.raises(ConfigError) as config:
        detection_settings({"FORWARDER_DETECTION_RULES": str(tmp_path)})
    assert config.value.variable == "FORWARDER_DETECTION_RULES" and str(path) in str(config.value)


def test_a_missing_rule_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory of Sigma rules"):
        detection_settings({"FORWARDER_DETECTION_RULES": str(tmp_path / "nope")})


def test_off_loads_nothing() -> None:
    assert (
        detection_settings({"FORWARDER_DETECTIONS": "off", "FORWARDER_DETECTION_RULES": "/nonexistent"})
        is None
    )
