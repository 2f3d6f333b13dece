"""Datadog log monitors and Cloud SIEM rules generated from the Sigma detections.

Who gets what:

- **Log monitors** (any Datadog Logs user, no Cloud SIEM) for the correlations a log monitor can
  express: a count (``event_count``) or a cardinality (``value_count``) of base-rule events, by
  at most a few facets, over one window. Credential stuffing's extra conditions
  (``also_required``) do not fit one monitor query: its monitor alerts on the distinct accounts
  alone, broader than the rule, and says so.
- **Cloud SIEM rules** (``SecurityMonitoringApi``) for every correlation, sequences included
  (``temporal_ordered``: one query per step, the case requiring every step), and for the two
  rules Sigma cannot express, impossible travel (Datadog's ``impossible_travel`` method) and a
  new country (``new_value``), which Datadog can run without ``FORWARDER_GEOIP_DB`` because its
  pipeline locates the IP.

``generate(root, extra)`` returns the files' contents (``extra``: the directory of
``FORWARDER_DETECTION_RULES``, whose rules replace shipped ones of the same name);
``workos-forwarder datadog generate`` writes them and ``datadog validate`` reports each that
differs from what the Sigma files give now.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigma.correlations import (
    SigmaCorrelationCondition,
    SigmaCorrelationConditionOperator,
    SigmaCorrelationRule,
    SigmaCorrelationType,
)
from sigma.rule import SigmaRule

from forwarder.datadog.assets import MANAGED_TAG
from forwarder.datadog.sigma import (
    SigmaLoadError,
    SigmaRules,
    attack_techniques,
    load_rules,
    log_search,
    source_name,
)

OUR_SEARCH = "service:workos-events"
"""What every generated query starts with: this forwarder's logs, not WorkOS's own stream."""

MONITOR_PREFIX = "detection-"
SECURITY_RULES = Path("monitors") / "datadog" / "security_rules"
MONITORS = Path("monitors") / "datadog"

SEVERITY = {"informational": "info", "low": "low", "medium": "medium", "high": "high", "critical": "critical"}
"""Sigma level -> Datadog severity (Datadog has no ``informational``)."""
PRIORITY = {"critical": 1, "high": 2, "medium": 3, "low": 4, "informational": 5}
_OPERATORS = {SigmaCorrelationConditionOperator.GTE: ">=", SigmaCorrelationConditionOperator.GT: ">"}
_KEEP_ALIVE_S = 3600
_MAX_SIGNAL_S = 86400


@dataclass(frozen=True)
class BuiltInRule:
    """A rule the forwarder's engine evaluates itself because Sigma cannot express it."""

    name: str
    title: str
    level: str
    attack: tuple[str, ...]
    description: str
    triage: str
    false_positives: tuple[str, ...]


IMPOSSIBLE_TRAVEL = BuiltInRule(
    "workos_impossible_travel",
    "WorkOS impossible travel",
    "high",
    ("T1078",),
    "Two successful sign-ins of one user whose locations are more than 500 km apart, at more than "
    "1,000 km/h: one of them is probably not the user.",
    "Are both sign-ins the user's? A VPN or a corporate proxy egressing elsewhere explains most. "
    "If the far one is unknown, revoke its session and reset the password.",
    (
        "VPNs and corporate proxies.",
        "Mobile carriers whose addresses geolocate to a distant hub.",
        "GeoIP errors for new address ranges.",
    ),
)
NEW_COUNTRY = BuiltInRule(
    "workos_new_country",
    "WorkOS sign-in from a new country",
    "low",
    ("T1078",),
    "A successful sign-in from a country the user has not signed in from in the last 7 days.",
    "Travel the user told you about, or a VPN exit? If not, and especially together with impossible "
    "travel, treat the session as suspect.",
    ("Travel.", "VPNs.", "A new office abroad."),
)
BUILT_IN = (IMPOSSIBLE_TRAVEL, NEW_COUNTRY)


class Unsupported(Exception):
    """The rule has no Datadog form of this kind; the message says why (it goes in the docs)."""


# --- Entry point ---------------------------------------------------------------------------------


def generate(root: Path, extra: Path | None = None) -> dict[Path, dict[str, Any]]:
    """Relative path -> document of every generated log monitor and Cloud SIEM rule."""
    rules = load_rules(root, extra)
    out: dict[Path, dict[str, Any]] = {}
    for name, correlation in sorted(rules.correlations.items()):
        # No log monitor for a sequence: its Cloud SIEM rule covers it.
        with contextlib.suppress(Unsupported):
            out[MONITORS / f"{MONITOR_PREFIX}{name}.json"] = log_monitor(rules, correlation)
        out[SECURITY_RULES / f"{name}.json"] = security_rule(rules, correlation)
    for built_in in BUILT_IN:
        out[SECURITY_RULES / f"{built_in.name}.json"] = built_in_security_rule(built_in)
    return out


def render(document: dict[str, Any]) -> str:
    """The file text: two-space JSON, keys in the order written, a final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def out_of_date(root: Path, extra: Path | None = None) -> list[tuple[Path, str]]:
    """(path, reason) for each generated file missing, different, or no longer generated."""
    expected = generate(root, extra)
    problems = []
    for relative, document in expected.items():
        path = root / relative
        if not path.exists():
            problems.append((path, "missing"))
        elif path.read_text(encoding="utf-8") != render(document):
            problems.append((path, "differs from what the Sigma rules give"))
    generated_names = {root / relative for relative in expected}
    stale = [
        *sorted((root / MONITORS).glob(f"{MONITOR_PREFIX}*.json")),
        *sorted((root / SECURITY_RULES).glob("*.json")),
    ]
    problems.extend(
        (path, "no longer generated by any rule") for path in stale if path not in generated_names
    )
    return problems


def write(root: Path, extra: Path | None = None) -> list[Path]:
    """Write every generated file and delete the ones no rule generates any more; the changed paths."""
    changed = [path for path, _ in out_of_date(root, extra)]
    expected = {root / relative: document for relative, document in generate(root, extra).items()}
    for path in changed:
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(expected[path]), encoding="utf-8")
        else:
            path.unlink()
    return changed


# --- Log monitors ----------------------------------------------------------------------------------


def log_monitor(rules: SigmaRules, correlation: SigmaCorrelationRule) -> dict[str, Any]:
    """A ``log alert`` monitor for a count or cardinality correlation over base rules."""
    kind = correlation.type
    if kind not in (SigmaCorrelationType.EVENT_COUNT, SigmaCorrelationType.VALUE_COUNT):
        raise Unsupported(f"{kind.name.lower()} is a sequence: a log monitor counts one query")
    search = _search_of(correlation)
    operator, threshold = _threshold(correlation)
    group_by = [f"@{field}" for field in correlation.group_by or []]
    if kind == SigmaCorrelationType.VALUE_COUNT:
        rollup = f'.rollup("cardinality", "@{_counted_field(correlation)}")'
    else:
        rollup = '.rollup("count")'
    by = f'.by("{",".join(group_by)}")' if group_by else ""
    query = (
        f'logs({json.dumps(search)}).index("*"){rollup}{by}'
        f'.last("{correlation.timespan.spec}") {operator} {threshold}'
    )
    level = _level(correlation)
    return {
        "name": f"[WorkOS] {_title(correlation)}",
        "type": "log alert",
        "query": query,
        "message": _monitor_message(correlation, group_by),
        "tags": _tags(str(correlation.name), level),
        "priority": PRIORITY[level],
        "options": {
            "thresholds": {"critical": threshold},
            "notify_no_data": False,
            "include_tags": True,
            "enable_logs_sample": True,
            "groupby_simple_monitor": False,
        },
    }


def _monitor_message(correlation: SigmaCorrelationRule, group_by: list[str]) -> str:
    who = " ".join(f"`{{{{[{facet}].name}}}}`" for facet in group_by) or "the environment"
    also = correlation.custom_attributes.get("also_required")
    broader = (
        "\n\n**Broader than the rule**: the forwarder's engine also requires "
        + "; ".join(_describe_condition(item) for item in also)
        + " in the same window. A log monitor takes one query, so this one alerts on the first "
        "condition alone: check the others in the log sample."
        if also
        else ""
    )
    false_positives = "\n".join(f"- {item}" for item in correlation.falsepositives or [])
    return (
        f"{{{{#is_alert}}}}{_title(correlation)} for {who}: {{{{value}}}} in "
        f"{correlation.timespan.spec} (alert at {{{{threshold}}}}).{{{{/is_alert}}}}\n"
        f"{{{{#is_recovery}}}}{_title(correlation)} for {who} has stopped.{{{{/is_recovery}}}}\n\n"
        f"**What happened**: {_text(correlation.description)}{broader}\n\n"
        f"**First checks**\n{_text(correlation.custom_attributes.get('triage'))}\n\n"
        f"**False positives**\n{false_positives}\n\n"
        f"ATT&CK: {', '.join(attack_techniques(correlation))}. Severity {_level(correlation)}.\n\n"
        f"Generated from {source_name(correlation)} by `workos-forwarder datadog generate`: "
        "edit the Sigma rule, not this monitor."
    )


def _describe_condition(item: Any) -> str:
    condition = item.get("condition", {}) if isinstance(item, dict) else {}
    words = {"gte": "at least", "gt": "more than"}
    bound = next((f"{words[op]} {value}" for op, value in condition.items() if op in words), "?")
    if item.get("type") == "value_count":
        return f"{bound} distinct {condition.get('field')}"
    return f"{bound} events"


# --- Cloud SIEM rules ------------------------------------------------------------------------------


def security_rule(rules: SigmaRules, correlation: SigmaCorrelationRule) -> dict[str, Any]:
    """A Cloud SIEM ``threshold`` rule: one query per counted condition (or per sequence step),
    the case requiring all of them."""
    group_by = [f"@{field}" for field in correlation.group_by or []]
    queries: list[dict[str, Any]] = []
    conditions: list[str] = []
    if correlation.type == SigmaCorrelationType.TEMPORAL_ORDERED:
        for reference in correlation.rules or []:
            step = reference.rule
            name = _query_name(len(queries))
            if isinstance(step, SigmaCorrelationRule):
                query, condition = _counting_query(step, name, group_by)
            else:
                query = _query(name, log_search(step), "count", group_by)
                condition = f"{name} > 0"
            queries.append(query)
            conditions.append(condition)
    else:
        query, condition = _counting_query(correlation, _query_name(0), group_by)
        queries.append(query)
        conditions.append(condition)
        for extra in correlation.custom_attributes.get("also_required") or []:
            name = _query_name(len(queries))
            query, condition = _extra_query(correlation, extra, name, group_by)
            queries.append(query)
            conditions.append(condition)
    level = _level(correlation)
    return _rule_document(
        title=_title(correlation),
        message=_rule_message(
            _text(correlation.description),
            _text(correlation.custom_attributes.get("triage")),
            list(correlation.falsepositives or []),
            attack_techniques(correlation),
            f"Generated from {source_name(correlation)} by `workos-forwarder datadog generate`: "
            "edit the Sigma rule, not this rule.",
        ),
        name=str(correlation.name),
        level=level,
        queries=queries,
        case={"name": level, "status": SEVERITY[level], "condition": " && ".join(conditions)},
        options={
            "detectionMethod": "threshold",
            "evaluationWindow": correlation.timespan.seconds,
            "keepAlive": _KEEP_ALIVE_S,
            "maxSignalDuration": _MAX_SIGNAL_S,
        },
    )


def built_in_security_rule(rule: BuiltInRule) -> dict[str, Any]:
    """Impossible travel and new country with Datadog's own methods, on successful sign-ins."""
    search = f"{OUR_SEARCH} @evt.category:authentication @evt.outcome:success"
    if rule is IMPOSSIBLE_TRAVEL:
        query = {
            "name": "a",
            "query": search,
            "aggregation": "geo_data",
            "metric": "@network.client.geoip",
            "groupByFields": ["@usr.email"],
            "distinctFields": [],
        }
        options: dict[str, Any] = {
            "detectionMethod": "impossible_travel",
            "impossibleTravelOptions": {"baselineUserLocations": False},
            "evaluationWindow": 0,
            "keepAlive": _KEEP_ALIVE_S,
            "maxSignalDuration": _MAX_SIGNAL_S,
        }
    else:
        query = {
            "name": "a",
            "query": search,
            "aggregation": "new_value",
            "metrics": ["@network.client.geoip.country.iso_code"],
            "groupByFields": ["@usr.email"],
            "distinctFields": [],
        }
        options = {
            "detectionMethod": "new_value",
            "newValueOptions": {
                "forgetAfter": 7,
                "learningDuration": 7,
                "learningMethod": "duration",
                "learningThreshold": 0,
            },
            "keepAlive": _KEEP_ALIVE_S,
            "maxSignalDuration": _MAX_SIGNAL_S,
        }
    return _rule_document(
        title=_title(rule),
        message=_rule_message(
            rule.description,
            rule.triage,
            list(rule.false_positives),
            list(rule.attack),
            "Built into the forwarder's detection engine (docs/detections.md), which runs it when "
            "FORWARDER_GEOIP_DB is set; here Datadog's pipeline locates the IP. Generated by "
            "`workos-forwarder datadog generate` (forwarder/datadog/detections.py).",
        ),
        name=rule.name,
        level=rule.level,
        queries=[query],
        case={"name": rule.level, "status": SEVERITY[rule.level]},
        options=options,
    )


def _rule_document(
    *,
    title: str,
    message: str,
    name: str,
    level: str,
    queries: list[dict[str, Any]],
    case: dict[str, Any],
    options: dict[str, Any],
) -> dict[str, Any]:
    return {
        "name": f"[WorkOS] {title}",
        "type": "log_detection",
        "isEnabled": True,
        "hasExtendedTitle": True,
        "message": message,
        "tags": _tags(name, level),
        "queries": queries,
        "cases": [{**case, "notifications": []}],
        "options": options,
    }


def _rule_message(
    description: str, triage: str, false_positives: list[str], attack: list[str], origin: str
) -> str:
    listed = "\n".join(f"- {item}" for item in false_positives)
    return (
        f"## Goal\n{description}\n\n## Triage and response\n{triage}\n\n"
        f"## False positives\n{listed}\n\nATT&CK: {', '.join(attack)}.\n\n{origin}"
    )


def _counting_query(
    correlation: SigmaCorrelationRule, name: str, group_by: list[str]
) -> tuple[dict[str, Any], str]:
    operator, threshold = _threshold(correlation)
    if correlation.type == SigmaCorrelationType.VALUE_COUNT:
        query = _query(name, _search_of(correlation), "cardinality", group_by, _counted_field(correlation))
    elif correlation.type == SigmaCorrelationType.EVENT_COUNT:
        query = _query(name, _search_of(correlation), "count", group_by)
    else:
        raise SigmaLoadError(
            f"{source_name(correlation)}: a {correlation.type.name.lower()} step inside a sequence has no "
            "Cloud SIEM form; use event_count or value_count"
        )
    return query, f"{name} {operator} {threshold}"


def _extra_query(
    correlation: SigmaCorrelationRule, extra: Any, name: str, group_by: list[str]
) -> tuple[dict[str, Any], str]:
    condition = extra.get("condition", {}) if isinstance(extra, dict) else {}
    bounds = [(op, value) for op, value in condition.items() if op in ("gte", "gt")]
    if len(bounds) != 1 or not isinstance(bounds[0][1], int):
        raise SigmaLoadError(
            f"{source_name(correlation)}: also_required needs one gte or gt bound, got {extra}"
        )
    op, value = bounds[0]
    operator = ">=" if op == "gte" else ">"
    if extra.get("type") == "value_count":
        query = _query(name, _search_of(correlation), "cardinality", group_by, str(condition.get("field")))
    else:
        query = _query(name, _search_of(correlation), "count", group_by)
    return query, f"{name} {operator} {value}"


def _query(
    name: str, search: str, aggregation: str, group_by: list[str], distinct: str | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "query": search if search.startswith(OUR_SEARCH) else f"{OUR_SEARCH} ({search})",
        "aggregation": aggregation,
        "groupByFields": group_by,
        "distinctFields": [f"@{distinct}"] if distinct else [],
    }


def _query_name(index: int) -> str:
    return "abcdefghij"[index]


# --- Shared --------------------------------------------------------------------------------------


def _search_of(correlation: SigmaCorrelationRule) -> str:
    """The forwarder's logs matching any of the base rules the correlation counts."""
    searches = []
    for reference in correlation.rules or []:
        if not isinstance(reference.rule, SigmaRule):
            raise Unsupported("it counts another correlation's firings")
        searches.append(log_search(reference.rule))
    if len(searches) == 1:
        return f"{OUR_SEARCH} {_grouped(searches[0])}"
    return f"{OUR_SEARCH} ({' OR '.join(_grouped(search) for search in searches)})"


def _grouped(search: str) -> str:
    return search if " " not in search else f"({search})"


def _condition(correlation: SigmaCorrelationRule) -> SigmaCorrelationCondition:
    if not isinstance(correlation.condition, SigmaCorrelationCondition):
        raise SigmaLoadError(
            f"{source_name(correlation)}: an extended (multi-part) condition has no Datadog form"
        )
    return correlation.condition


def _counted_field(correlation: SigmaCorrelationRule) -> str:
    """The one field a ``value_count`` counts the distinct values of."""
    field = _condition(correlation).fieldref
    if not isinstance(field, str):
        raise SigmaLoadError(f"{source_name(correlation)}: value_count of several fields has no Datadog form")
    return field


def _threshold(correlation: SigmaCorrelationRule) -> tuple[str, int]:
    condition = _condition(correlation)
    operator = _OPERATORS.get(condition.op)
    if operator is None or not isinstance(condition.count, int):
        raise SigmaLoadError(
            f"{source_name(correlation)}: condition {condition.op.name.lower()} cannot alert in Datadog; "
            "use gte or gt"
        )
    return operator, condition.count


def _level(rule: SigmaRule | SigmaCorrelationRule) -> str:
    return rule.level.name.lower() if rule.level is not None else "medium"


def _title(rule: SigmaRule | SigmaCorrelationRule | BuiltInRule) -> str:
    title = rule.title.removeprefix("WorkOS ").strip()
    return title[:1].upper() + title[1:]


def _text(value: Any) -> str:
    return " ".join(str(value or "").split())


def _tags(name: str, level: str) -> list[str]:
    return [MANAGED_TAG, "service:workos-events", "source:workos", f"detection:{name}", f"severity:{level}"]
