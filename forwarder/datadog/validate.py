"""The rules a pipeline, monitor, dashboard, log-based metric or Cloud SIEM rule file must follow:
``datadog validate``.

Each file must parse as its datadog-api-client model (see ``assets``), carry the marker apply
finds it by, and query this forwarder's logs. Log queries are parsed, and a monitor's critical
threshold must equal the number in its query (Datadog rejects the monitor otherwise, but only
online). A pipeline and each of its processors must be enabled explicitly (Datadog's default
is disabled), and a facet that monitors and dashboards use under a parser's target must be one
the parser writes. A Cloud SIEM rule's case conditions may name only its queries, and the files
generated from ``monitors/sigma/`` must match what those rules give now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from forwarder.datadog.assets import MANAGED_TAG, MODELS, Asset, Problem, check_model, load_assets
from forwarder.datadog.detections import out_of_date
from forwarder.datadog.pipelines import parser_targets, processors, written_attributes
from forwarder.datadog.queries import (
    FACET,
    METRIC_REFERENCE,
    OUR_LOGS,
    check_log_search,
    dashboard_log_searches,
    parse_monitor_query,
    referenced_facets,
    selects_our_logs,
    unbalanced,
    walk_metric_queries,
)
from forwarder.datadog.sigma import SIGMA_DIRECTORY, SigmaLoadError

_NOT_OURS = f"must select this forwarder's logs with {' or '.join(OUR_LOGS)}, not only source:workos"


def validate_assets(assets: list[Asset]) -> list[Problem]:
    problems: list[Problem] = []
    for asset in assets:
        problems.extend(check_model(asset.document, MODELS[asset.kind], asset.path))
        problems.extend(_CHECKS[asset.kind](asset))
    seen: dict[tuple[str, str], Path] = {}
    for asset in assets:
        key = (asset.kind, asset.name)
        if asset.name and key in seen:
            problems.append(
                Problem(asset.path, "", f"same {asset.kind} name as {seen[key]}: apply matches by name")
            )
        seen.setdefault(key, asset.path)
    return problems + _parser_outputs_used(assets)


def _check_pipeline(asset: Asset) -> list[Problem]:
    document, path = asset.document, asset.path
    problems = _server_fields(asset)
    if not isinstance(document.get("name"), str) or not document["name"].strip():
        problems.append(
            Problem(path, "name", "required, a non-empty string: apply matches pipelines by name")
        )
    if MANAGED_TAG not in (document.get("tags") or []):
        problems.append(
            Problem(path, "tags", f"must include {MANAGED_TAG!r}: apply finds its pipelines by it")
        )
    search = str((document.get("filter") or {}).get("query", ""))
    problems.extend(Problem(path, "filter.query", problem) for problem in check_log_search(search))
    if not selects_our_logs(search):
        problems.append(Problem(path, "filter.query", _NOT_OURS))
    if document.get("is_enabled") is not True:
        problems.append(
            Problem(path, "is_enabled", "set true: Datadog creates a pipeline disabled otherwise")
        )
    for location, processor in processors(document):
        if processor.get("is_enabled") is not True:
            problems.append(
                Problem(
                    path,
                    f"{location}.is_enabled",
                    "set true: Datadog creates a processor disabled otherwise",
                )
            )
    return problems


def _parser_outputs_used(assets: list[Asset]) -> list[Problem]:
    """A facet under a GeoIP or user-agent parser's target must be one that parser writes."""
    targets: dict[str, str] = {}
    written: set[str] = set()
    for asset in assets:
        if asset.kind == "pipeline":
            targets |= parser_targets(asset.document)
            written |= written_attributes(asset.document)
    problems = []
    for asset in assets:
        if asset.kind == "pipeline":
            continue
        for facet in sorted(referenced_facets(asset)):
            parser = next((kind for target, kind in targets.items() if facet.startswith(f"{target}.")), None)
            if parser is not None and facet not in written:
                problems.append(
                    Problem(asset.path, f"@{facet}", f"the pipeline's {parser} writes no such attribute")
                )
    return problems


def _check_monitor(asset: Asset) -> list[Problem]:
    document, path = asset.document, asset.path
    problems = _server_fields(asset)
    for key in ("name", "type", "query", "message"):
        if not isinstance(document.get(key), str) or not document[key].strip():
            problems.append(Problem(path, key, "required, a non-empty string"))
    tags = document.get("tags") or []
    if MANAGED_TAG not in tags:
        problems.append(
            Problem(path, "tags", f"must include {MANAGED_TAG!r}: apply finds its monitors by it")
        )
    if not any(str(tag).startswith("service:") for tag in tags):
        problems.append(Problem(path, "tags", "must include a service: tag (service:workos-events)"))
    if document.get("priority") not in (1, 2, 3, 4, 5):
        problems.append(Problem(path, "priority", "set a priority from 1 (highest) to 5"))
    if problems:
        return problems
    parsed, query_problems = parse_monitor_query(document["type"], document["query"])
    problems.extend(Problem(path, "query", problem) for problem in query_problems)
    if parsed is None:
        return problems
    if parsed.search is not None and not selects_our_logs(parsed.search):
        problems.append(Problem(path, "query", _NOT_OURS))
    thresholds = (document.get("options") or {}).get("thresholds") or {}
    critical = thresholds.get("critical")
    if not isinstance(critical, int | float):
        problems.append(Problem(path, "options.thresholds.critical", "required, the number in the query"))
    elif float(critical) != parsed.threshold:
        problems.append(
            Problem(
                path,
                "options.thresholds.critical",
                f"{critical} differs from the query's threshold {parsed.threshold:g}: they must be equal",
            )
        )
    else:
        problems.extend(_threshold_order(path, parsed.comparator, thresholds))
    if parsed.anomaly and not (document.get("options") or {}).get("threshold_windows"):
        problems.append(
            Problem(path, "options.threshold_windows", "anomaly monitors need trigger and recovery windows")
        )
    group_variable = re.compile(r"(\{\{\s*\[?(@?[\w.-]+?)\]?\.name\s*\}\})")
    for written, variable in group_variable.findall(document["message"]):
        if variable not in parsed.group_by:
            problems.append(
                Problem(
                    path, "message", f"{written} names no group of the query (grouped by: {parsed.group_by})"
                )
            )
    return problems


def _threshold_order(path: Path, comparator: str, thresholds: Mapping[str, Any]) -> list[Problem]:
    """Warning fires before critical, recovery after: on the right side of critical for the comparator."""
    critical = float(thresholds["critical"])
    above = comparator in (">", ">=")
    problems = []
    for name, must_be_lower in (("warning", above), ("critical_recovery", above)):
        value = thresholds.get(name)
        if isinstance(value, int | float) and comparator not in ("==", "!="):
            wrong = value >= critical if must_be_lower else value <= critical
            if wrong:
                side = "below" if must_be_lower else "above"
                problems.append(
                    Problem(
                        path, f"options.thresholds.{name}", f"{value} must be {side} critical {critical:g}"
                    )
                )
    return problems


def _check_dashboard(asset: Asset) -> list[Problem]:
    problems = _server_fields(asset)
    if MANAGED_TAG not in str(asset.document.get("description") or ""):
        problems.append(
            Problem(
                asset.path, "description", f"must contain {MANAGED_TAG!r}: apply finds its dashboards by it"
            )
        )
    for location, search in dashboard_log_searches(asset.document):
        problems.extend(Problem(asset.path, location, problem) for problem in check_log_search(search))
        if not selects_our_logs(search):
            problems.append(Problem(asset.path, location, _NOT_OURS))
    for location, query in walk_metric_queries(asset.document, ""):
        if unbalanced(query) or not METRIC_REFERENCE.search(query):
            problems.append(
                Problem(asset.path, location, "expected <aggregation>:<metric>{<scope>} [by {tags}]")
            )
    return problems


def _check_log_metric(asset: Asset) -> list[Problem]:
    data = asset.document.get("data") or {}
    attributes = data.get("attributes") or {}
    problems = []
    if asset.path.stem != data.get("id"):
        problems.append(Problem(asset.path, "data.id", f"must equal the file name ({asset.path.stem!r})"))
    search = (attributes.get("filter") or {}).get("query", "")
    problems.extend(Problem(asset.path, "data.attributes.filter.query", p) for p in check_log_search(search))
    if not selects_our_logs(search):
        problems.append(Problem(asset.path, "data.attributes.filter.query", _NOT_OURS))
    for index, group in enumerate(attributes.get("group_by") or []):
        if not FACET.fullmatch(str(group.get("path", ""))):
            problems.append(
                Problem(asset.path, f"data.attributes.group_by[{index}].path", "expected an @facet path")
            )
    return problems


_CASE_CONDITION_TOKEN = re.compile(
    r"\s*(?:(?P<name>[a-z]\w*)|(?P<number>\d+(?:\.\d+)?)|(?P<op>>=|>|&&|\|\||[()]))"
)
_METHOD_AGGREGATION = {"impossible_travel": "geo_data", "new_value": "new_value"}


def _check_security_rule(asset: Asset) -> list[Problem]:
    """What Datadog refuses only online, or accepts and then never fires on."""
    document, path = asset.document, asset.path
    problems = _server_fields(asset)
    if not isinstance(document.get("name"), str) or not document["name"].strip():
        problems.append(Problem(path, "name", "required, a non-empty string: apply matches rules by name"))
    if MANAGED_TAG not in (document.get("tags") or []):
        problems.append(Problem(path, "tags", f"must include {MANAGED_TAG!r}: apply finds its rules by it"))
    if document.get("isEnabled") is not True:
        problems.append(Problem(path, "isEnabled", "set true: a disabled rule never fires"))
    queries = document.get("queries") or []
    names = [str(query.get("name", "")) for query in queries if isinstance(query, dict)]
    if len(set(names)) != len(names) or "" in names:
        problems.append(Problem(path, "queries", "every query needs a name of its own (a, b, ...)"))
    for index, query in enumerate(queries):
        if not isinstance(query, dict):
            continue
        where = f"queries[{index}]"
        search = str(query.get("query", ""))
        problems.extend(Problem(path, f"{where}.query", problem) for problem in check_log_search(search))
        if not selects_our_logs(search):
            problems.append(Problem(path, f"{where}.query", _NOT_OURS))
        for key in ("groupByFields", "distinctFields", "metrics"):
            for position, facet in enumerate(query.get(key) or []):
                if not FACET.fullmatch(str(facet)):
                    problems.append(Problem(path, f"{where}.{key}[{position}]", "expected an @facet path"))
        if query.get("aggregation") == "cardinality" and not query.get("distinctFields"):
            problems.append(
                Problem(path, f"{where}.distinctFields", "a cardinality counts one @facet: name it")
            )
    options = document.get("options") or {}
    method = str(options.get("detectionMethod", "threshold"))
    for index, case in enumerate(document.get("cases") or []):
        condition = str((case or {}).get("condition", ""))
        if method == "threshold" and not condition:
            problems.append(
                Problem(path, f"cases[{index}].condition", "a threshold rule's case needs a condition")
            )
        problems.extend(
            Problem(path, f"cases[{index}].condition", problem)
            for problem in _case_problems(condition, names)
        )
    wanted = _METHOD_AGGREGATION.get(method)
    if wanted and not any(isinstance(q, dict) and q.get("aggregation") == wanted for q in queries):
        problems.append(
            Problem(path, "queries", f"the {method} method needs a query with aggregation {wanted!r}")
        )
    window, keep_alive, longest = (
        options.get(k) for k in ("evaluationWindow", "keepAlive", "maxSignalDuration")
    )
    if isinstance(window, int) and isinstance(keep_alive, int) and keep_alive < window:
        problems.append(
            Problem(path, "options.keepAlive", f"{keep_alive} must be at least evaluationWindow {window}")
        )
    if isinstance(keep_alive, int) and isinstance(longest, int) and longest < keep_alive:
        problems.append(
            Problem(path, "options.maxSignalDuration", f"{longest} must be at least keepAlive {keep_alive}")
        )
    return problems


def _case_problems(condition: str, names: list[str]) -> list[str]:
    """A case condition uses the queries' names, numbers, ``> >= && ||`` and parentheses only."""
    position, problems = 0, list[str]()
    while position < len(condition.rstrip()):
        match = _CASE_CONDITION_TOKEN.match(condition, position)
        if match is None or match.end() == position:
            allowed = "only query names, numbers, >, >=, && and || are allowed"
            return [*problems, f"{condition[position:].strip()!r}: {allowed}"]
        if match["name"] and match["name"] not in names:
            problems.append(f"{match['name']!r} names no query (queries: {', '.join(names)})")
        position = match.end()
    return problems


_CHECKS = {
    "pipeline": _check_pipeline,
    "monitor": _check_monitor,
    "dashboard": _check_dashboard,
    "log_metric": _check_log_metric,
    "security_rule": _check_security_rule,
}


def _server_fields(asset: Asset) -> list[Problem]:
    model = MODELS[asset.kind]
    return [
        Problem(asset.path, key, "set by Datadog: remove it from the file")
        for key in sorted(asset.document)
        if key in model.read_only_vars
    ]


def generated_problems(root: Path, extra: Path | None = None) -> list[Problem]:
    """Files generated from the Sigma rules that no longer match them (when the root has rules)."""
    if not (root / SIGMA_DIRECTORY).is_dir():
        return []
    try:
        lagging = out_of_date(root, extra)
    except SigmaLoadError as exc:
        return [Problem(root / SIGMA_DIRECTORY, "", str(exc))]
    return [
        Problem(
            path, "", f"{reason}: run `workos-forwarder datadog generate` after changing {SIGMA_DIRECTORY}/"
        )
        for path, reason in lagging
    ]


def validate(root: Path, extra: Path | None = None) -> tuple[list[Asset], list[Problem]]:
    """Every problem of the asset files under ``root``; ``extra``: ``FORWARDER_DETECTION_RULES``."""
    assets, problems = load_assets(root)
    return assets, problems + validate_assets(assets) + generated_problems(root, extra)
