"""Datadog log-search and monitor queries: parsed offline, and found in the asset files.

Datadog checks a query only when the monitor or dashboard is sent; these parsers catch what
breaks silently or loudly before that, and say which facets, tags and metrics an asset uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from forwarder.datadog.assets import Asset
from forwarder.datadog.pipelines import read_attributes

OUR_LOGS = ("service:workos-events", "forwarder:workos-forwarder")
"""Every log query must name one of these terms, because WorkOS's own Datadog stream also says
source:workos. The service is the default FORWARDER_SERVICE; the forwarder tag never changes."""

_NUMBER = r"-?\d+(?:\.\d+)?"


# --- Log search syntax -----------------------------------------------------------------------

FACET = re.compile(r"@[A-Za-z_][\w-]*(?:\.[\w-]+)*")
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
    pattern = FACET if key.startswith("@") else _TAG_KEY
    if not pattern.fullmatch(key):
        problems.append(
            f"{key!r} is not a valid {'facet path' if key.startswith('@') else 'tag or attribute'}"
        )


def selects_our_logs(search: str) -> bool:
    """True when ``search`` requires one of ``OUR_LOGS`` (as a term, not negated)."""
    return any(term in OUR_LOGS for term in re.split(r"[\s()]+", _strip_quoted(search)))


def search_facets(query: str) -> set[str]:
    """``@facet`` paths (without ``@``) used in a log search query."""
    return {match.group(0)[1:] for match in FACET.finditer(_strip_quoted(query))}


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
METRIC_REFERENCE = re.compile(r"\b(?:avg|sum|min|max):(?P<metric>[A-Za-z][\w.]*)\{(?P<scope>[^}]*)\}")


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
            elif args[0] != "count" and (len(args) != 2 or not FACET.fullmatch(args[1])):
                problems.append(f'rollup "{args[0]}" needs a measure: .rollup("{args[0]}", "@attribute")')
        elif method == "last" and (len(args) != 1 or not _WINDOW.fullmatch(args[0])):
            problems.append(f'.last() takes one window such as "5m", "1h" or "2d", got {args}')
        elif method == "by":
            for facet in (part.strip() for arg in args for part in arg.split(",")):
                if not (FACET.fullmatch(facet) or _TAG_KEY.fullmatch(facet)):
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
    if unbalanced(expression):
        problems.append("unbalanced parentheses, braces or quotes in the metric expression")
    parsed.metrics = [reference["metric"] for reference in METRIC_REFERENCE.finditer(expression)]
    if not parsed.metrics:
        problems.append("no metric found: expected <space aggregation>:<metric>{<scope>}")
    by = re.search(r"\bby \{([^}]*)\}", expression)
    if by:
        parsed.group_by = [part.strip() for part in by.group(1).split(",")]
    return parsed, problems


def unbalanced(expression: str) -> bool:
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


# --- Queries in asset files ------------------------------------------------------------------


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


def walk_metric_queries(document: Any, location: str) -> Iterator[tuple[str, str]]:
    if isinstance(document, dict):
        if document.get("data_source") == "metrics" and isinstance(document.get("query"), str):
            yield f"{location}.query", document["query"]
        for key, value in document.items():
            yield from walk_metric_queries(value, f"{location}.{key}" if location else key)
    elif isinstance(document, list):
        for index, item in enumerate(document):
            yield from walk_metric_queries(item, f"{location}[{index}]")


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
    elif asset.kind == "pipeline":
        facets |= search_facets(str(document.get("filter", {}).get("query", "")))
        facets |= read_attributes(document)
    elif asset.kind == "security_rule":
        for query in security_rule_queries(document):
            facets |= search_facets(str(query.get("query", "")))
            named = [
                *query.get("groupByFields", []),
                *query.get("distinctFields", []),
                *query.get("metrics", []),
            ]
            named += [query["metric"]] if query.get("metric") else []
            facets |= {str(facet)[1:] for facet in named if str(facet).startswith("@")}
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
    elif asset.kind == "pipeline":
        searches = [str(document.get("filter", {}).get("query", ""))]
    elif asset.kind == "security_rule":
        searches = [str(query.get("query", "")) for query in security_rule_queries(document)]
    else:
        searches = [document.get("data", {}).get("attributes", {}).get("filter", {}).get("query", "")]
    return {key for search in searches for key in search_tag_keys(search)}


def security_rule_queries(document: Any) -> list[dict[str, Any]]:
    """The queries of a Cloud SIEM rule document (each a dict with ``query``, ``groupByFields``...)."""
    queries = document.get("queries") if isinstance(document, dict) else None
    return [query for query in queries or [] if isinstance(query, dict)]


def referenced_metrics(asset: Asset) -> set[str]:
    """Metric names a monitor or dashboard queries (log-based metrics and Agent-collected ones)."""
    if asset.kind == "monitor":
        parsed, _ = parse_monitor_query(str(asset.document.get("type")), str(asset.document.get("query", "")))
        return set(parsed.metrics) if parsed is not None else set()
    if asset.kind == "dashboard":
        return {
            m["metric"]
            for _, query in walk_metric_queries(asset.document, "")
            for m in METRIC_REFERENCE.finditer(query)
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
