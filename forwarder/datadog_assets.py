"""Datadog monitors, dashboards and log-based metrics kept as code: offline checks and apply.

The JSON files under ``monitors/datadog/`` (monitors), ``monitors/datadog/log_metrics/``
(log-based metrics, one per file, named after the metric) and ``dashboards/datadog/``
(dashboards) are the source of truth. ``workos-forwarder datadog validate`` checks them
offline and ``workos-forwarder datadog apply`` makes Datadog match them.

Why the offline checks go beyond deserializing with datadog-api-client: the client accepts
a bad enum value without raising (it marks the object ``_unparsed``, which propagates to the
root) and keeps unknown keys silently, so a typo such as ``renotify`` instead of
``renotify_interval`` would be sent and ignored. So every key is checked against the
attribute map of the model the client chose, and the ``_unparsed`` mark is traced down to
the field that caused it. Log queries are parsed, and a monitor's critical threshold must
equal the number in its query (Datadog rejects the monitor otherwise, but only online).

Apply finds existing objects by name among those marked as ours (monitors by the tag
``managed-by:workos-forwarder``; dashboards by that marker in their description, because
Datadog only allows ``team:`` tags on dashboards; log-based metrics by their id), compares
only the fields the file sets (the server adds ids, timestamps, defaults), prints a diff and
creates or updates. A second apply finds nothing to change.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException, OpenApiException
from datadog_api_client.model_utils import (
    ModelComposed,
    ModelNormal,
    ModelSimple,
    OpenApiModel,
    UnparsedObject,
    model_to_dict,
    validate_and_convert_types,
)
from datadog_api_client.v1.api.dashboards_api import DashboardsApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest
from datadog_api_client.v2.api.logs_metrics_api import LogsMetricsApi
from datadog_api_client.v2.model.logs_metric_create_request import LogsMetricCreateRequest
from datadog_api_client.v2.model.logs_metric_update_request import LogsMetricUpdateRequest

MANAGED_TAG = "managed-by:workos-forwarder"
OUR_LOGS = ("service:workos-events", "forwarder:workos-forwarder")
"""Every log query must name one of these terms, because WorkOS's own Datadog stream also says
source:workos. The service is the default FORWARDER_SERVICE; the forwarder tag never changes."""

Kind = Literal["monitor", "dashboard", "log_metric"]
_MODELS: dict[str, type[OpenApiModel]] = {
    "monitor": Monitor,
    "dashboard": Dashboard,
    "log_metric": LogsMetricCreateRequest,
}
_NUMBER = r"-?\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file, located by a JSON path such as ``options.thresholds.critical``."""

    path: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.field or '<document>'}: {self.message}"


@dataclass
class Asset:
    kind: Kind
    path: Path
    document: dict[str, Any]

    @property
    def name(self) -> str:
        """What apply matches on: a monitor's name, a dashboard's title, a log metric's id."""
        if self.kind == "monitor":
            return str(self.document.get("name", ""))
        if self.kind == "dashboard":
            return str(self.document.get("title", ""))
        return str(self.document.get("data", {}).get("id", ""))


# --- Loading -------------------------------------------------------------------------------


def default_root() -> Path:
    """The directory holding ``monitors/`` and ``dashboards/``: the current one, else the checkout."""
    cwd = Path.cwd()
    if (cwd / "monitors" / "datadog").is_dir():
        return cwd
    return Path(__file__).resolve().parent.parent


def asset_files(root: Path) -> Iterator[tuple[Kind, Path]]:
    for path in sorted((root / "monitors" / "datadog" / "log_metrics").glob("*.json")):
        yield "log_metric", path
    for path in sorted((root / "monitors" / "datadog").glob("*.json")):
        yield "monitor", path
    for path in sorted((root / "dashboards" / "datadog").glob("*.json")):
        yield "dashboard", path


def load_assets(root: Path) -> tuple[list[Asset], list[Problem]]:
    assets: list[Asset] = []
    problems: list[Problem] = []
    for kind, path in asset_files(root):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path, "", f"cannot read the file: {exc}"))
            continue
        except json.JSONDecodeError as exc:
            problems.append(
                Problem(path, "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
            )
            continue
        if not isinstance(document, dict):
            problems.append(Problem(path, "", "the file must hold one JSON object"))
            continue
        assets.append(Asset(kind, path, document))
    if not assets and not problems:
        problems.append(
            Problem(root, "", "no Datadog asset found under monitors/datadog or dashboards/datadog")
        )
    return assets, problems


# --- Model checks (the two gaps of deserialize) -----------------------------------------------


def _offline_client() -> ApiClient:
    return ApiClient(Configuration())


def check_model(document: dict[str, Any], model: type[OpenApiModel], path: Path) -> list[Problem]:
    """Deserialize with datadog-api-client and report type errors, bad enum values and unknown keys."""
    try:
        parsed = _offline_client().deserialize(json.dumps(document), (model,), True)
    except OpenApiException as exc:
        location = _json_path(getattr(exc, "path_to_item", None) or [])
        return [Problem(path, location, str(exc).splitlines()[0])]
    problems: list[Problem] = []
    _walk(parsed, document, "", path, problems)
    if parsed._unparsed and not problems:
        problems.append(Problem(path, "", f"datadog-api-client could not parse this {model.__name__}"))
    return problems


def _walk(parsed: Any, raw: Any, location: str, path: Path, problems: list[Problem]) -> None:
    if isinstance(parsed, UnparsedObject):
        problems.append(Problem(path, location, "matches none of the shapes this field accepts"))
    elif isinstance(parsed, ModelComposed):
        chosen = parsed._composed_instances[0] if parsed._composed_instances else None
        if chosen is None or isinstance(chosen, UnparsedObject):
            # The client only says "no oneOf member matched"; parse as the member the
            # discriminator names to find the field at fault, else say what was expected.
            found = len(problems)
            _walk_candidate(type(parsed), raw, location, path, problems)
            if len(problems) == found:
                problems.append(Problem(path, location, _explain_composed(type(parsed), raw)))
        else:
            _walk(chosen, raw, location, path, problems)
    elif isinstance(parsed, ModelSimple):
        if parsed._unparsed:
            allowed = ", ".join(sorted(map(str, parsed.allowed_values)))
            problems.append(Problem(path, location, f"{raw!r} is not one of: {allowed}"))
    elif isinstance(parsed, ModelNormal) and isinstance(raw, dict):
        json_to_python = {json_name: name for name, json_name in parsed.attribute_map.items()}
        for key, value in raw.items():
            child = f"{location}.{key}" if location else key
            if key not in json_to_python:
                known = ", ".join(sorted(json_to_python))
                problems.append(
                    Problem(path, child, f"unknown key for {type(parsed).__name__} (known: {known})")
                )
                continue
            _walk(parsed._data_store.get(json_to_python[key]), value, child, path, problems)
    elif isinstance(parsed, list) and isinstance(raw, list):
        for index, (item, raw_item) in enumerate(zip(parsed, raw, strict=False)):
            _walk(item, raw_item, f"{location}[{index}]", path, problems)


_DISCRIMINATORS = ("type", "data_source")
"""Keys whose enum value tells which oneOf member a JSON object means (widgets, queries)."""


def _enum_values(member: Any, key: str) -> set[str]:
    if not isinstance(member, type):
        return set()
    values: set[str] = set()
    for candidate in getattr(member, "openapi_types", {}).get(key, ()):
        if isinstance(candidate, type) and issubclass(candidate, ModelSimple):
            values |= set(map(str, candidate.allowed_values))
    return values


def _discriminated(composed: type[ModelComposed], raw: Any) -> type[OpenApiModel] | None:
    """The only oneOf member whose ``type`` (or ``data_source``) enum holds the object's value."""
    if not isinstance(raw, dict):
        return None
    members = composed._composed_schemas.get("oneOf", ())
    for key in _DISCRIMINATORS:
        if key in raw:
            matching = [member for member in members if str(raw[key]) in _enum_values(member, key)]
            if len(matching) == 1:
                return matching[0]
    return None


def _explain_composed(composed: type[ModelComposed], raw: Any) -> str:
    members = composed._composed_schemas.get("oneOf", ())
    for key in _DISCRIMINATORS:
        allowed = sorted(set().union(*(_enum_values(member, key) for member in members)))
        if isinstance(raw, dict) and key in raw and allowed and str(raw[key]) not in allowed:
            return f"{key} {raw[key]!r} is not one of: {', '.join(allowed)}"
    return f"matches none of the shapes of {composed.__name__}"


def _walk_candidate(
    composed: type[ModelComposed], raw: Any, location: str, path: Path, problems: list[Problem]
) -> None:
    member = _discriminated(composed, raw)
    if member is None:
        return
    try:
        parsed = validate_and_convert_types(
            raw, (member,), [location] if location else [], True, True, Configuration()
        )
    except OpenApiException as exc:
        problems.append(
            Problem(path, _json_path(getattr(exc, "path_to_item", None) or []), str(exc).splitlines()[0])
        )
        return
    _walk(parsed, raw, location, path, problems)


def _json_path(items: list[Any]) -> str:
    parts: list[str] = []
    for item in items:
        if item == "received_data":
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


# --- Log search syntax -----------------------------------------------------------------------

_FACET = re.compile(r"@[A-Za-z_][\w-]*(?:\.[\w-]+)*")
_TAG_KEY = re.compile(r"[A-Za-z][\w./-]*")
_OPERATORS = {"AND", "OR", "NOT"}


def check_log_search(query: str) -> list[str]:
    """Problems with a Datadog log search query (empty list when it parses).

    Covers what breaks silently or loudly in practice: unbalanced parentheses or quotes,
    lower-case ``and``/``or``/``not`` (searched as words), dangling operators, empty values,
    malformed ``@facet`` paths.
    """
    try:
        tokens = _tokenize(query)
    except ValueError as exc:
        return [str(exc)]
    if not tokens:
        return ["the query is empty (use * to match everything)"]
    problems: list[str] = []
    position = _parse_expression(tokens, 0, problems, in_field=False)
    if position < len(tokens):
        problems.append("unbalanced parentheses: ')' without '('")
    return problems


def _tokenize(query: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    index = 0
    while index < len(query):
        char = query[index]
        if char.isspace():
            index += 1
        elif char in "()":
            tokens.append(("(" if char == "(" else ")", char))
            index += 1
        else:
            start = index
            while index < len(query) and not query[index].isspace() and query[index] not in "()":
                if query[index] == '"':
                    end = _closing_quote(query, index)
                    index = end + 1
                elif query[index] == "[":
                    end = query.find("]", index)
                    if end < 0:
                        raise ValueError(f"unclosed range '[' at position {index}")
                    index = end + 1
                elif query[index] == "\\":
                    index += 2
                else:
                    index += 1
            word = query[start:index]
            if word.endswith(":") and index < len(query) and query[index] == "(":
                tokens.append(("field", word[:-1]))  # key:( ... ): the field token opens the group
                index += 1
            elif word in _OPERATORS:
                tokens.append(("op", word))
            else:
                tokens.append(("term", word))
    return tokens


def _closing_quote(query: str, start: int) -> int:
    index = start + 1
    while index < len(query):
        if query[index] == "\\":
            index += 2
            continue
        if query[index] == '"':
            return index
        index += 1
    raise ValueError(f"unclosed quote at position {start}")


def _parse_expression(
    tokens: list[tuple[str, str]], position: int, problems: list[str], *, in_field: bool
) -> int:
    """Parse operands and operators up to a ``)`` or the end; return that position."""
    previous: str | None = None  # None (start), "AND"/"OR"/"NOT" (an operator), "operand"
    while position < len(tokens):
        kind, text = tokens[position]
        if kind == ")":
            break
        if kind == "op":
            if text != "NOT" and previous != "operand":
                problems.append(f"{text} has nothing on its left")
            previous = text
            position += 1
            continue
        if kind in ("(", "field"):
            if kind == "field":
                _check_key(text, problems)
            inner = _parse_expression(tokens, position + 1, problems, in_field=in_field or kind == "field")
            if inner >= len(tokens):
                problems.append("unbalanced parentheses: a '(' is never closed")
                return inner
            if inner == position + 1:
                problems.append("empty parentheses")
            position = inner + 1
        else:
            _check_term(text, problems, in_field=in_field)
            position += 1
        previous = "operand"
    if previous in _OPERATORS:
        problems.append(f"{previous} has nothing on its right")
    return position


def _check_term(term: str, problems: list[str], *, in_field: bool) -> None:
    if term.lower() in ("and", "or", "not"):
        problems.append(
            f"{term!r} is searched as a word: boolean operators must be upper case ({term.upper()})"
        )
        return
    body = term[1:] if term.startswith("-") else term
    if in_field or body.startswith('"'):
        return
    if ":" not in body:
        if body.startswith("@"):
            problems.append(f"{term!r}: a facet needs a value (@facet:value)")
        return
    key, _, value = body.partition(":")
    _check_key(key, problems)
    if not value:
        problems.append(f"{term!r}: empty value after ':' (use * for any value)")


def _check_key(key: str, problems: list[str]) -> None:
    key = key.removeprefix("-")
    pattern = _FACET if key.startswith("@") else _TAG_KEY
    if not pattern.fullmatch(key):
        problems.append(
            f"{key!r} is not a valid {'facet path' if key.startswith('@') else 'tag or attribute'}"
        )


_NOT_OURS = f"must select this forwarder's logs with {' or '.join(OUR_LOGS)}, not only source:workos"


def selects_our_logs(search: str) -> bool:
    """True when ``search`` requires one of ``OUR_LOGS`` (as a term, not negated)."""
    return any(term in OUR_LOGS for term in re.split(r"[\s()]+", _strip_quoted(search)))


def search_facets(query: str) -> set[str]:
    """``@facet`` paths (without ``@``) used in a log search query."""
    return {match.group(0)[1:] for match in _FACET.finditer(_strip_quoted(query))}


def search_tag_keys(query: str) -> set[str]:
    """Reserved attributes and tag keys (``service``, ``source``, ``env``...) used in a log search query."""
    keys = set()
    for match in re.finditer(r"(?:^|[\s(])-?([A-Za-z][\w./-]*):", _strip_quoted(query)):
        keys.add(match.group(1))
    return keys


def _strip_quoted(query: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)


# --- Monitor queries ---------------------------------------------------------------------------

_ARG = r'"(?:[^"\\]|\\.)*"'
_LOG_QUERY = re.compile(
    rf"^logs\((?P<search>{_ARG})\)(?P<chain>(?:\.[a-z_]+\((?:{_ARG}(?:\s*,\s*{_ARG})*)?\))*)"
    rf"\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<number>{_NUMBER})$"
)
_CHAIN_CALL = re.compile(rf"\.(?P<method>[a-z_]+)\((?P<args>(?:{_ARG}(?:\s*,\s*{_ARG})*)?)\)")
_ROLLUPS = frozenset(("count", "cardinality", "sum", "avg", "min", "max", "median"))
_ROLLUPS |= {f"pc{n}" for n in (75, 90, 95, 98, 99)}
_WINDOW = re.compile(r"\d+[mhd]")
_METRIC_QUERY = re.compile(
    rf"^(?P<aggregation>avg|sum|min|max|median|percentile\(\d+\))\((?P<window>last_\d+[mhdw])\):(?P<expression>.+?)"
    rf"\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<number>{_NUMBER})$"
)
_METRIC_REFERENCE = re.compile(r"\b(?:avg|sum|min|max):(?P<metric>[A-Za-z][\w.]*)\{(?P<scope>[^}]*)\}")


@dataclass
class MonitorQuery:
    """What validation and the facet test need from a monitor query."""

    comparator: str
    threshold: float
    search: str | None = None
    group_by: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    anomaly: bool = False


def parse_monitor_query(monitor_type: str, query: str) -> tuple[MonitorQuery | None, list[str]]:
    """Parse a ``log alert`` or ``query alert``/``metric alert`` query; (result, problems)."""
    query = query.strip()
    if monitor_type == "log alert":
        return _parse_log_monitor_query(query)
    if monitor_type in ("query alert", "metric alert"):
        return _parse_metric_monitor_query(query)
    return None, [f"monitor type {monitor_type!r} is not checked offline: use 'log alert' or 'query alert'"]


def _parse_log_monitor_query(query: str) -> tuple[MonitorQuery | None, list[str]]:
    match = _LOG_QUERY.match(query)
    if match is None:
        expected = 'logs("<search>").index("*").rollup("count").by("@facet").last("5m") <comparator> <number>'
        return None, [f"expected {expected}"]
    parsed = MonitorQuery(match["op"], float(match["number"]), search=json.loads(match["search"]))
    problems = [f"search: {problem}" for problem in check_log_search(parsed.search or "")]
    calls = [
        (call["method"], [json.loads(arg) for arg in re.findall(_ARG, call["args"])])
        for call in _CHAIN_CALL.finditer(match["chain"])
    ]
    methods = [method for method, _ in calls]
    order = ["index", "rollup", "by", "last"]
    for method in methods:
        if method not in order:
            problems.append(f"unknown method .{method}(): expected {', '.join(order)}")
    known = [method for method in methods if method in order]
    if known != sorted(known, key=order.index) or len(set(known)) != len(known):
        problems.append("methods must appear once each, in the order .index().rollup().by().last()")
    for required in ("index", "rollup", "last"):
        if required not in methods:
            problems.append(f".{required}() is missing")
    for method, args in calls:
        if method == "rollup":
            if not args or args[0] not in _ROLLUPS:
                problems.append(f"rollup {args[:1]} is not one of: {', '.join(sorted(_ROLLUPS))}")
            elif args[0] != "count" and (len(args) != 2 or not _FACET.fullmatch(args[1])):
                problems.append(f'rollup "{args[0]}" needs a measure: .rollup("{args[0]}", "@attribute")')
        elif method == "last" and (len(args) != 1 or not _WINDOW.fullmatch(args[0])):
            problems.append(f'.last() takes one window such as "5m", "1h" or "2d", got {args}')
        elif method == "by":
            for facet in (part.strip() for arg in args for part in arg.split(",")):
                if not (_FACET.fullmatch(facet) or _TAG_KEY.fullmatch(facet)):
                    problems.append(f".by(): {facet!r} is not a facet path or tag")
                parsed.group_by.append(facet)
    return parsed, problems


def _parse_metric_monitor_query(query: str) -> tuple[MonitorQuery | None, list[str]]:
    match = _METRIC_QUERY.match(query)
    if match is None:
        return None, ["expected <aggregation>(last_<window>):<metric expression> <comparator> <number>"]
    expression = match["expression"]
    parsed = MonitorQuery(match["op"], float(match["number"]), anomaly="anomalies(" in expression)
    problems = []
    if _unbalanced(expression):
        problems.append("unbalanced parentheses, braces or quotes in the metric expression")
    parsed.metrics = [reference["metric"] for reference in _METRIC_REFERENCE.finditer(expression)]
    if not parsed.metrics:
        problems.append("no metric found: expected <space aggregation>:<metric>{<scope>}")
    by = re.search(r"\bby \{([^}]*)\}", expression)
    if by:
        parsed.group_by = [part.strip() for part in by.group(1).split(",")]
    return parsed, problems


def _unbalanced(expression: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "}": "{"}
    quote: str | None = None
    for char in expression:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "({":
            stack.append(char)
        elif char in ")}" and (not stack or stack.pop() != pairs[char]):
            return True
    return bool(stack) or quote is not None


# --- Per-kind checks -----------------------------------------------------------------------------


def validate_assets(assets: list[Asset]) -> list[Problem]:
    problems: list[Problem] = []
    for asset in assets:
        problems.extend(check_model(asset.document, _MODELS[asset.kind], asset.path))
        problems.extend(_CHECKS[asset.kind](asset))
    seen: dict[tuple[str, str], Path] = {}
    for asset in assets:
        key = (asset.kind, asset.name)
        if asset.name and key in seen:
            problems.append(
                Problem(asset.path, "", f"same {asset.kind} name as {seen[key]}: apply matches by name")
            )
        seen.setdefault(key, asset.path)
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
    for location, query in _walk_metric_queries(asset.document, ""):
        if _unbalanced(query) or not _METRIC_REFERENCE.search(query):
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
        if not _FACET.fullmatch(str(group.get("path", ""))):
            problems.append(
                Problem(asset.path, f"data.attributes.group_by[{index}].path", "expected an @facet path")
            )
    return problems


_CHECKS = {"monitor": _check_monitor, "dashboard": _check_dashboard, "log_metric": _check_log_metric}


def _server_fields(asset: Asset) -> list[Problem]:
    model = _MODELS[asset.kind]
    return [
        Problem(asset.path, key, "set by Datadog: remove it from the file")
        for key in sorted(asset.document)
        if key in model.read_only_vars
    ]


def dashboard_log_searches(document: Any, location: str = "") -> Iterator[tuple[str, str]]:
    """(JSON path, search) of every log query in a dashboard, whatever the widget."""
    if isinstance(document, dict):
        source = document.get("data_source")
        if source == "logs" and isinstance(document.get("search"), dict):
            yield f"{location}.search.query", str(document["search"].get("query", ""))
        if source == "logs_stream" and "query_string" in document:
            yield f"{location}.query_string", str(document["query_string"])
        if isinstance(document.get("log_query"), dict):
            search = document["log_query"].get("search") or {}
            yield f"{location}.log_query.search.query", str(search.get("query", ""))
        for key, value in document.items():
            yield from dashboard_log_searches(value, f"{location}.{key}" if location else key)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from dashboard_log_searches(item, f"{location}[{index}]")


def _walk_metric_queries(document: Any, location: str) -> Iterator[tuple[str, str]]:
    if isinstance(document, dict):
        if document.get("data_source") == "metrics" and isinstance(document.get("query"), str):
            yield f"{location}.query", document["query"]
        for key, value in document.items():
            yield from _walk_metric_queries(value, f"{location}.{key}" if location else key)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from _walk_metric_queries(item, f"{location}[{index}]")


def referenced_facets(asset: Asset) -> set[str]:
    """Every ``@facet`` path (without ``@``) the asset queries, groups by, shows or names in its message."""
    facets: set[str] = set()
    document = asset.document
    if asset.kind == "monitor":
        parsed, _ = parse_monitor_query(str(document.get("type")), str(document.get("query", "")))
        if parsed is not None:
            facets |= search_facets(parsed.search or "")
            facets |= {facet[1:] for facet in parsed.group_by if facet.startswith("@")}
        message = str(document.get("message", ""))
        facets |= {m[1:] for m in re.findall(r"`(@[\w.-]+)", message)}
        facets |= {m[1:] for m in re.findall(r"\{\{\s*\[(@[\w.-]+)\]", message)}
    elif asset.kind == "dashboard":
        for _, search in dashboard_log_searches(document):
            facets |= search_facets(search)
        facets |= {value[1:] for value in _values_of(document, ("facet", "field")) if value.startswith("@")}
    else:
        attributes = document.get("data", {}).get("attributes", {})
        facets |= search_facets(attributes.get("filter", {}).get("query", ""))
        facets |= {str(group.get("path", ""))[1:] for group in attributes.get("group_by", [])}
    return facets


def referenced_tag_keys(asset: Asset) -> set[str]:
    """Reserved attributes and tag keys (``service``, ``source``...) used in the asset's log searches."""
    document = asset.document
    if asset.kind == "monitor":
        parsed, _ = parse_monitor_query(str(document.get("type")), str(document.get("query", "")))
        searches = [parsed.search] if parsed is not None and parsed.search is not None else []
    elif asset.kind == "dashboard":
        searches = [search for _, search in dashboard_log_searches(document)]
    else:
        searches = [document.get("data", {}).get("attributes", {}).get("filter", {}).get("query", "")]
    return {key for search in searches for key in search_tag_keys(search)}


def referenced_metrics(asset: Asset) -> set[str]:
    """Metric names a monitor or dashboard queries (log-based metrics and Agent-collected ones)."""
    if asset.kind == "monitor":
        parsed, _ = parse_monitor_query(str(asset.document.get("type")), str(asset.document.get("query", "")))
        return set(parsed.metrics) if parsed is not None else set()
    if asset.kind == "dashboard":
        return {
            m["metric"]
            for _, query in _walk_metric_queries(asset.document, "")
            for m in _METRIC_REFERENCE.finditer(query)
        }
    return set()


def _values_of(document: Any, keys: tuple[str, ...]) -> Iterator[str]:
    if isinstance(document, dict):
        for key, value in document.items():
            if key in keys and isinstance(value, str):
                yield value
            yield from _values_of(value, keys)
    elif isinstance(document, list):
        for item in document:
            yield from _values_of(item, keys)


def validate(root: Path) -> tuple[list[Asset], list[Problem]]:
    assets, problems = load_assets(root)
    return assets, problems + validate_assets(assets)


# --- Apply ---------------------------------------------------------------------------------


class ApplyError(Exception):
    """Apply cannot go on; the message names the object and what Datadog answered."""


def api_configuration(env: Mapping[str, str]) -> Configuration:
    """Client settings from DD_API_KEY, DD_APP_KEY and DD_SITE; DD_API_URL for tests or proxies."""
    missing = [name for name in ("DD_API_KEY", "DD_APP_KEY") if not env.get(name)]
    if missing:
        raise ApplyError(
            f"{' and '.join(missing)} not set: apply needs an API key and an application key "
            "(Datadog: Organization Settings > API Keys / Application Keys) with monitors, dashboards "
            "and logs-metrics write access"
        )
    config = Configuration(enable_retry=True, max_retries=3)
    config.api_key["apiKeyAuth"] = env["DD_API_KEY"]
    config.api_key["appKeyAuth"] = env["DD_APP_KEY"]
    if env.get("DD_SITE"):
        config.server_variables["site"] = env["DD_SITE"]
    if env.get("DD_API_URL"):
        config.host = env["DD_API_URL"].rstrip("/")
    return config


@dataclass
class Change:
    asset: Asset
    action: Literal["create", "update", "unchanged"]
    remote_id: str | None = None
    diff: str = ""


def plan(client: ApiClient, assets: list[Asset]) -> list[Change]:
    """What apply would do for each asset, by comparing it with what Datadog holds."""
    remote_monitors = _managed_monitors(client)
    remote_dashboards = _managed_dashboards(client)
    remote_metrics = _log_metrics(client)
    changes = []
    for asset in sorted(assets, key=lambda a: ("log_metric", "monitor", "dashboard").index(a.kind)):
        if asset.kind == "monitor":
            changes.append(_compare(asset, remote_monitors.get(asset.name), asset.document))
        elif asset.kind == "dashboard":
            remote = remote_dashboards.get(asset.name)
            if remote is not None:
                remote = _call(f"dashboard {asset.name!r}", DashboardsApi(client).get_dashboard, remote["id"])
            changes.append(_compare(asset, remote, asset.document))
        else:
            changes.append(_compare_log_metric(asset, remote_metrics.get(asset.name)))
    return changes


def execute(client: ApiClient, changes: list[Change]) -> None:
    monitors, dashboards, metrics = MonitorsApi(client), DashboardsApi(client), LogsMetricsApi(client)
    for change in changes:
        asset = change.asset
        label = f"{asset.kind} {asset.name!r} ({asset.path})"
        if change.action == "unchanged":
            continue
        if asset.kind == "monitor":
            body = _model(asset.document, Monitor)
            _call(label, monitors.validate_monitor, body)
            if change.action == "create":
                _call(label, monitors.create_monitor, body)
            else:
                _call(
                    label,
                    monitors.update_monitor,
                    int(change.remote_id or 0),
                    _model(asset.document, MonitorUpdateRequest),
                )
        elif asset.kind == "dashboard":
            body = _model(asset.document, Dashboard)
            if change.action == "create":
                _call(label, dashboards.create_dashboard, body)
            else:
                _call(label, dashboards.update_dashboard, change.remote_id, body)
        elif change.action == "create":
            _call(label, metrics.create_logs_metric, _model(asset.document, LogsMetricCreateRequest))
        else:
            attributes = asset.document["data"]["attributes"]
            update = {
                "data": {
                    "type": "logs_metrics",
                    "attributes": {k: v for k, v in attributes.items() if k != "compute"},
                }
            }
            _call(label, metrics.update_logs_metric, asset.name, _model(update, LogsMetricUpdateRequest))


def _managed_monitors(client: ApiClient) -> dict[str, dict[str, Any]]:
    api = MonitorsApi(client)
    found: dict[str, dict[str, Any]] = {}
    page = 0
    while True:
        batch = _call("monitor list", api.list_monitors, monitor_tags=MANAGED_TAG, page=page, page_size=100)
        for monitor in batch:
            remote = _to_json(monitor)
            if MANAGED_TAG in (remote.get("tags") or []):
                _add_unique(found, str(remote.get("name")), remote, "monitors")
        if len(batch) < 100:
            return found
        page += 1


def _managed_dashboards(client: ApiClient) -> dict[str, dict[str, Any]]:
    api = DashboardsApi(client)
    found: dict[str, dict[str, Any]] = {}
    start = 0
    while True:
        summary = _to_json(
            _call("dashboard list", api.list_dashboards, filter_shared=False, count=100, start=start)
        )
        batch = summary.get("dashboards") or []
        for dashboard in batch:
            if MANAGED_TAG in str(dashboard.get("description") or ""):
                _add_unique(found, str(dashboard.get("title")), dashboard, "dashboards")
        if len(batch) < 100:
            return found
        start += len(batch)


def _log_metrics(client: ApiClient) -> dict[str, dict[str, Any]]:
    response = _to_json(_call("logs metrics list", LogsMetricsApi(client).list_logs_metrics))
    return {str(item.get("id")): item for item in response.get("data") or []}


def _add_unique(found: dict[str, dict[str, Any]], name: str, remote: dict[str, Any], what: str) -> None:
    if name in found:
        raise ApplyError(
            f"two managed {what} are named {name!r} (ids {found[name].get('id')} and {remote.get('id')}): "
            f"delete one in Datadog, apply matches by name"
        )
    found[name] = remote


def _compare(asset: Asset, remote: Any, desired: dict[str, Any]) -> Change:
    if remote is None:
        return Change(asset, "create")
    remote_json = remote if isinstance(remote, dict) else _to_json(remote)
    current = _normalized(_project(_strip_server_fields(asset.kind, remote_json), desired))
    wanted = _normalized(desired)
    remote_id = str(remote_json.get("id"))
    if current == wanted:
        return Change(asset, "unchanged", remote_id)
    return Change(
        asset, "update", remote_id, _diff(current, wanted, f"datadog ({remote_id})", str(asset.path))
    )


def _compare_log_metric(asset: Asset, remote: dict[str, Any] | None) -> Change:
    if remote is None:
        return Change(asset, "create")
    desired = asset.document["data"]["attributes"]
    current = _normalized(_project(remote.get("attributes") or {}, desired))
    wanted = _normalized(desired)
    if current == wanted:
        return Change(asset, "unchanged", asset.name)
    if current.get("compute") != wanted.get("compute"):
        raise ApplyError(
            f"log metric {asset.name!r} ({asset.path}): Datadog cannot change compute "
            f"({current.get('compute')} -> {wanted.get('compute')}) on an existing metric; "
            "delete the metric in Datadog (Logs > Generate Metrics) and apply again"
        )
    return Change(
        asset, "update", asset.name, _diff(current, wanted, f"datadog ({asset.name})", str(asset.path))
    )


_WIDGET_SERVER_FIELDS = {"id"}


def _strip_server_fields(kind: Kind, remote: dict[str, Any]) -> dict[str, Any]:
    """Remove what Datadog sets (ids, timestamps, author, state): it never appears in a file."""
    read_only = _MODELS[kind].read_only_vars
    stripped = {key: value for key, value in remote.items() if key not in read_only}
    if kind == "dashboard":
        stripped["widgets"] = [_strip_widget(widget) for widget in stripped.get("widgets") or []]
    return stripped


def _strip_widget(widget: Any) -> Any:
    if not isinstance(widget, dict):
        return widget
    stripped = {key: value for key, value in widget.items() if key not in _WIDGET_SERVER_FIELDS}
    definition = stripped.get("definition")
    if isinstance(definition, dict) and isinstance(definition.get("widgets"), list):
        stripped["definition"] = dict(definition, widgets=[_strip_widget(w) for w in definition["widgets"]])
    return stripped


def _project(remote: Any, desired: Any) -> Any:
    """``remote`` reduced to the keys ``desired`` sets: defaults the server adds are not changes."""
    if isinstance(desired, dict) and isinstance(remote, dict):
        return {key: _project(remote[key], value) for key, value in desired.items() if key in remote}
    if isinstance(desired, list) and isinstance(remote, list) and len(desired) == len(remote):
        return [_project(r, d) for r, d in zip(remote, desired, strict=True)]
    return remote


def _normalized(value: Any) -> Any:
    """Comparable form: 50.0 == 50, tag order does not matter, datetimes as text."""
    if isinstance(value, dict):
        return {
            key: sorted(map(str, item)) if key == "tags" and isinstance(item, list) else _normalized(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def _diff(current: Any, wanted: Any, current_label: str, wanted_label: str) -> str:
    lines = difflib.unified_diff(
        json.dumps(current, indent=2, sort_keys=True).splitlines(),
        json.dumps(wanted, indent=2, sort_keys=True).splitlines(),
        current_label,
        wanted_label,
        lineterm="",
    )
    return "\n".join(lines)


def _to_json(model: Any) -> dict[str, Any]:
    if isinstance(model, OpenApiModel):
        return json.loads(json.dumps(model_to_dict(model, serialize=True), default=str))
    return dict(model)


def _model(document: dict[str, Any], model: type[OpenApiModel]) -> Any:
    return _offline_client().deserialize(json.dumps(document), (model,), True)


def _call(label: str, operation: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return operation(*args, **kwargs)
    except ApiException as exc:
        body = (
            exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        ).strip()
        raise ApplyError(f"{label}: Datadog answered {exc.status} {exc.reason}: {body[:500]}") from exc
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        raise ApplyError(f"{label}: cannot reach Datadog: {exc}") from exc


# --- CLI -----------------------------------------------------------------------------------

_ROOT_OPTION = click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory holding monitors/ and dashboards/ [default: the current one, else the checkout].",
)


@click.group(name="datadog")
def datadog() -> None:
    """Datadog monitors, dashboards and log-based metrics kept as code (monitors/, dashboards/)."""


@datadog.command(name="validate")
@_ROOT_OPTION
def validate_command(root: Path | None) -> None:
    """Check every Datadog JSON file offline; exit 1 naming the file and field of each problem."""
    assets, problems = validate(root or default_root())
    _report(problems)
    click.echo(f"{len(assets)} Datadog assets checked: all valid.")


@datadog.command(name="apply")
@_ROOT_OPTION
@click.option("--dry-run", is_flag=True, help="Print what would change and change nothing.")
def apply_command(root: Path | None, dry_run: bool) -> None:
    """Create or update the monitors, dashboards and log-based metrics in Datadog.

    Uses DD_API_KEY, DD_APP_KEY and DD_SITE (DD_API_URL overrides the API address). Objects
    are matched by name among those marked managed-by:workos-forwarder; a second apply
    changes nothing.
    """
    assets, problems = validate(root or default_root())
    _report(problems)
    try:
        with ApiClient(api_configuration(os.environ)) as client:
            changes = plan(client, assets)
            for change in changes:
                where = f" (id {change.remote_id})" if change.remote_id else ""
                click.echo(f"{change.asset.kind} {change.asset.name!r}: {change.action}{where}")
                if change.diff:
                    click.echo(change.diff)
            counts = {
                action: sum(c.action == action for c in changes)
                for action in ("create", "update", "unchanged")
            }
            summary = (
                f"{counts['create']} to create, {counts['update']} to update, {counts['unchanged']} unchanged"
            )
            if dry_run:
                click.echo(f"Dry run: {summary}; nothing was changed.")
                return
            execute(client, changes)
    except ApplyError as exc:
        click.echo(f"workos-forwarder datadog apply: {exc}", err=True)
        sys.exit(1)
    click.echo(
        f"Applied: {counts['create']} created, {counts['update']} updated, {counts['unchanged']} unchanged."
    )


def _report(problems: list[Problem]) -> None:
    if not problems:
        return
    for problem in problems:
        click.echo(str(problem), err=True)
    click.echo(f"{len(problems)} problem(s) in the Datadog assets.", err=True)
    sys.exit(1)
