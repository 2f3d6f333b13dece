"""The part of Datadog's API that ``workos-forwarder datadog apply`` uses, on loopback.

Monitors (list with ``monitor_tags``, paging, create, update, validate), dashboards (list,
get, create, update), log-based metrics (list, get, create, update), logs pipelines (list,
get, create, replace; read-only integration pipelines refuse changes) and Cloud SIEM detection
rules (list by page, get, create, update, validate; a case condition naming no query, an
unknown severity or a keepAlive shorter than the window is a 400). Like the real
service it answers 403 without both keys, fills in what the server owns (ids, timestamps,
creator, state, widget ids, option defaults, thresholds as floats) so apply has to strip
and ignore them, rejects a monitor whose critical threshold differs from its query, and
refuses to change the compute of an existing log-based metric. Pipelines and processors are
stored disabled unless ``is_enabled`` is sent, as Datadog does. ``requests`` records every
call so tests can assert that a second apply writes nothing.
"""

from __future__ import annotations

import copy
import gzip
import itertools
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles import LoopbackServer

API_KEY = "test-api-key"
APP_KEY = "test-app-key"


@dataclass(frozen=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any


class DatadogApi(LoopbackServer):
    def __init__(self) -> None:
        self.monitors: dict[int, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.log_metrics: dict[str, dict[str, Any]] = {}
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.security_rules: dict[str, dict[str, Any]] = {}
        self.requests: list[ApiRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1001)
        app = Starlette(
            routes=[
                Route("/api/v1/validate", self._validate_key, methods=["GET"]),
                Route("/api/v1/monitor", self._monitors, methods=["GET", "POST"]),
                Route("/api/v1/monitor/validate", self._validate_monitor, methods=["POST"]),
                Route("/api/v1/monitor/{monitor_id:int}", self._monitor, methods=["GET", "PUT"]),
                Route("/api/v1/dashboard", self._dashboards, methods=["GET", "POST"]),
                Route("/api/v1/dashboard/{dashboard_id}", self._dashboard, methods=["GET", "PUT"]),
                Route("/api/v2/logs/config/metrics", self._log_metrics, methods=["GET", "POST"]),
                Route("/api/v2/logs/config/metrics/{metric_id}", self._log_metric, methods=["GET", "PATCH"]),
                Route("/api/v1/logs/config/pipelines", self._pipelines, methods=["GET", "POST"]),
                Route("/api/v1/logs/config/pipelines/{pipeline_id}", self._pipeline, methods=["GET", "PUT"]),
                Route("/api/v2/security_monitoring/rules", self._security_rules, methods=["GET", "POST"]),
                Route(
                    "/api/v2/security_monitoring/rules/validation",
                    self._validate_security_rule,
                    methods=["POST"],
                ),
                Route(
                    "/api/v2/security_monitoring/rules/{rule_id}", self._security_rule, methods=["GET", "PUT"]
                ),
            ]
        )
        super().__init__(app)

    @property
    def writes(self) -> list[ApiRequest]:
        """Requests that change something (validation is not a change)."""
        return [
            r
            for r in self.requests
            if r.method != "GET" and not r.path.endswith(("/validate", "/validation"))
        ]

    # --- helpers used by tests to play "someone edited it in the UI" ---

    def add_monitor(self, monitor: dict[str, Any]) -> int:
        with self._lock:
            return self._store_monitor(copy.deepcopy(monitor))["id"]

    def monitor_named(self, name: str) -> dict[str, Any]:
        matches = [m for m in self.monitors.values() if m["name"] == name]
        assert len(matches) == 1, f"{len(matches)} monitors named {name!r}"
        return matches[0]

    # --- key validation (``doctor``): needs the API key only, as Datadog's does ---

    async def _validate_key(self, request: Request) -> Response:
        self.requests.append(ApiRequest(request.method, request.url.path, dict(request.query_params), None))
        if request.headers.get("dd-api-key") != API_KEY:
            return _json({"errors": ["Forbidden"]}, 403)
        return _json({"valid": True})

    def add_pipeline(self, pipeline: dict[str, Any], *, read_only: bool = False) -> str:
        """Store a pipeline as if made elsewhere: by hand, or an integration's (``read_only``)."""
        with self._lock:
            return self._store_pipeline(copy.deepcopy(pipeline), None, read_only=read_only)["id"]

    # --- monitors ---

    async def _monitors(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        if request.method == "GET":
            tags = [t for t in request.query_params.get("monitor_tags", "").split(",") if t]
            found = [m for m in self.monitors.values() if all(t in m.get("tags", []) for t in tags)]
            found.sort(key=lambda m: m["id"])
            if "page" in request.query_params:
                size = int(request.query_params.get("page_size", "100"))
                page = int(request.query_params["page"])
                found = found[page * size : (page + 1) * size]
            return _json(found)
        problem = _monitor_problem(body)
        if problem:
            return _json({"errors": [problem]}, 400)
        with self._lock:
            return _json(self._store_monitor(body))

    async def _validate_monitor(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        problem = _monitor_problem(body)
        return _json({"errors": [problem]}, 400) if problem else _json({})

    async def _monitor(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        monitor_id = request.path_params["monitor_id"]
        if monitor_id not in self.monitors:
            return _json({"errors": ["Monitor not found"]}, 404)
        if request.method == "GET":
            return _json(self.monitors[monitor_id])
        with self._lock:
            merged = {**self.monitors[monitor_id], **body}
            problem = _monitor_problem(merged)
            if problem:
                return _json({"errors": [problem]}, 400)
            merged["options"] = _monitor_options(body.get("options", merged["options"]))
            merged["modified"] = _now()
            self.monitors[monitor_id] = merged
            return _json(merged)

    def _store_monitor(self, body: dict[str, Any]) -> dict[str, Any]:
        monitor_id = next(self._ids)
        now = _now()
        monitor = {
            **body,
            "id": monitor_id,
            "created": now,
            "modified": now,
            "creator": {"email": "sre@example.com", "handle": "sre@example.com", "name": "SRE"},
            "overall_state": "No Data",
            "multi": ".by(" in body.get("query", ""),
            "deleted": None,
            "restricted_roles": None,
            "options": _monitor_options(body.get("options", {})),
        }
        self.monitors[monitor_id] = monitor
        return monitor

    # --- dashboards ---

    async def _dashboards(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        if request.method == "GET":
            start = int(request.query_params.get("start", "0"))
            count = int(request.query_params.get("count", "100"))
            summaries = [
                {
                    key: d.get(key)
                    for key in ("id", "title", "description", "layout_type", "url", "author_handle")
                }
                | {"created_at": d["created_at"], "modified_at": d["modified_at"], "is_read_only": False}
                for d in self.dashboards.values()
            ]
            return _json({"dashboards": summaries[start : start + count]})
        with self._lock:
            dashboard_id = f"abc-{next(self._ids)}-xyz"
            self.dashboards[dashboard_id] = _server_dashboard(body, dashboard_id, None)
            return _json(self.dashboards[dashboard_id])

    async def _dashboard(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        dashboard_id = request.path_params["dashboard_id"]
        if dashboard_id not in self.dashboards:
            return _json({"errors": ["Dashboard not found"]}, 404)
        if request.method == "GET":
            return _json(self.dashboards[dashboard_id])
        with self._lock:
            self.dashboards[dashboard_id] = _server_dashboard(
                body, dashboard_id, self.dashboards[dashboard_id]
            )
            return _json(self.dashboards[dashboard_id])

    # --- log-based metrics ---

    async def _log_metrics(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        if request.method == "GET":
            return _json({"data": list(self.log_metrics.values())})
        data = body["data"]
        if data["id"] in self.log_metrics:
            return _json({"errors": [f"Metric {data['id']} already exists"]}, 409)
        with self._lock:
            self.log_metrics[data["id"]] = {
                "id": data["id"],
                "type": "logs_metrics",
                "attributes": data["attributes"],
            }
            return _json({"data": self.log_metrics[data["id"]]})

    async def _log_metric(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        metric_id = request.path_params["metric_id"]
        if metric_id not in self.log_metrics:
            return _json({"errors": ["Metric not found"]}, 404)
        if request.method == "GET":
            return _json({"data": self.log_metrics[metric_id]})
        attributes = body["data"]["attributes"]
        current = self.log_metrics[metric_id]["attributes"]
        if set(attributes.get("compute", {})) - {"include_percentiles"}:
            return _json({"errors": ["compute.aggregation_type and compute.path cannot be updated"]}, 400)
        with self._lock:
            current.update({key: value for key, value in attributes.items() if key != "compute"})
            return _json({"data": self.log_metrics[metric_id]})

    # --- logs pipelines ---

    async def _pipelines(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        if request.method == "GET":
            return _json(list(self.pipelines.values()))  # every pipeline, in processing order
        problem = _pipeline_problem(body)
        if problem:
            return _json({"errors": [problem]}, 400)
        with self._lock:
            return _json(self._store_pipeline(body, None, read_only=False))

    async def _pipeline(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        pipeline_id = request.path_params["pipeline_id"]
        if pipeline_id not in self.pipelines:
            return _json({"errors": ["Pipeline not found"]}, 404)
        if request.method == "GET":
            return _json(self.pipelines[pipeline_id])
        if self.pipelines[pipeline_id]["is_read_only"]:
            return _json({"errors": ["Integration pipelines cannot be modified"]}, 400)
        problem = _pipeline_problem(body)
        if problem:
            return _json({"errors": [problem]}, 400)
        with self._lock:
            return _json(self._store_pipeline(body, pipeline_id, read_only=False))

    def _store_pipeline(
        self, body: dict[str, Any], pipeline_id: str | None, *, read_only: bool
    ) -> dict[str, Any]:
        """PUT replaces the whole pipeline; what is not sent takes Datadog's defaults again."""
        pipeline_id = pipeline_id or f"pl{next(self._ids)}AbCdEf"
        pipeline = {
            "is_enabled": False,
            "filter": {"query": ""},
            "tags": [],
            **{key: value for key, value in body.items() if key not in ("id", "type", "is_read_only")},
            "id": pipeline_id,
            "type": "pipeline",
            "is_read_only": read_only,
            "processors": [_server_processor(p) for p in body.get("processors", [])],
        }
        self.pipelines[pipeline_id] = pipeline
        return pipeline

    # --- Cloud SIEM detection rules ---

    def add_security_rule(self, rule: dict[str, Any]) -> str:
        """Store a rule as if made elsewhere: by hand, or one of Datadog's default rules."""
        with self._lock:
            return self._store_security_rule(copy.deepcopy(rule), None)["id"]

    def security_rule_named(self, name: str) -> dict[str, Any]:
        matches = [r for r in self.security_rules.values() if r["name"] == name]
        assert len(matches) == 1, f"{len(matches)} security rules named {name!r}"
        return matches[0]

    async def _security_rules(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        if request.method == "GET":
            size = int(request.query_params.get("page[size]", "10"))
            number = int(request.query_params.get("page[number]", "0"))
            listed = list(self.security_rules.values())
            page = listed[number * size : (number + 1) * size]
            return _json({"data": page, "meta": {"page": {"total_count": len(listed)}}})
        problem = _security_rule_problem(body)
        if problem:
            return _json({"errors": [problem]}, 400)
        with self._lock:
            return _json(self._store_security_rule(body, None))

    async def _validate_security_rule(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        problem = _security_rule_problem(body)
        return _json({"errors": [problem]}, 400) if problem else Response(status_code=204)

    async def _security_rule(self, request: Request) -> Response:
        body = await self._begin(request)
        if isinstance(body, Response):
            return body
        rule_id = request.path_params["rule_id"]
        if rule_id not in self.security_rules:
            return _json({"errors": ["Rule not found"]}, 404)
        current = self.security_rules[rule_id]
        if request.method == "GET":
            return _json(current)
        if "type" in body:
            return _json({"errors": ["The rule type cannot be updated"]}, 400)
        merged = {**current, **body}
        problem = _security_rule_problem(merged)
        if problem:
            return _json({"errors": [problem]}, 400)
        with self._lock:
            return _json(self._store_security_rule(merged, current))

    def _store_security_rule(self, body: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        """What Datadog answers: ids, authors, versions, and defaults in queries, cases and options."""
        now = int(datetime.now(UTC).timestamp() * 1000)
        rule_id = previous["id"] if previous else f"abc-{next(self._ids)}-def"
        rule = {
            "hasExtendedTitle": False,
            "filters": [],
            "tags": [],
            **body,
            "type": previous["type"] if previous else body.get("type", "log_detection"),
            "id": rule_id,
            "createdAt": previous["createdAt"] if previous else now,
            "creationAuthorId": 1234,
            "updateAuthorId": 1234,
            "isDefault": False,
            "isDeleted": False,
            "version": previous["version"] + 1 if previous else 1,
            "queries": [_server_rule_query(query) for query in body.get("queries", [])],
            "cases": [
                {"name": "", "notifications": [], "condition": "", **case} for case in body.get("cases", [])
            ],
            "options": {"decreaseCriticalityBasedOnEnv": False, **body.get("options", {})},
        }
        self.security_rules[rule_id] = rule
        return rule

    # --- plumbing ---

    async def _begin(self, request: Request) -> Any:
        """Record the request, check the keys; the decoded body, or the error Response."""
        wire = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            wire = gzip.decompress(wire)
        body = orjson.loads(wire) if wire else None
        self.requests.append(ApiRequest(request.method, request.url.path, dict(request.query_params), body))
        if (
            request.headers.get("dd-api-key") != API_KEY
            or request.headers.get("dd-application-key") != APP_KEY
        ):
            return _json({"errors": ["Forbidden"]}, 403)
        return body


_DETECTION_METHODS = {
    "threshold",
    "new_value",
    "anomaly_detection",
    "impossible_travel",
    "sequence_detection",
}
_SEVERITIES = {"info", "low", "medium", "high", "critical"}
_CASE_TOKEN = re.compile(r"\s*(?:([a-z]\w*)|\d+(?:\.\d+)?|>=|>|&&|\|\||[()])")


def _security_rule_problem(rule: dict[str, Any]) -> str | None:
    """What Datadog's rule validation answers 400 for, in the cases apply can meet."""
    for key in ("name", "message", "queries", "cases", "options"):
        if not rule.get(key):
            return f"The parameter '{key}' is required"
    options = rule["options"]
    method = options.get("detectionMethod", "threshold")
    if method not in _DETECTION_METHODS:
        return f"Invalid detection method: {method}"
    if options.get("keepAlive", 0) < options.get("evaluationWindow", 0):
        return "keepAlive must be greater than or equal to evaluationWindow"
    names = {query.get("name") or "" for query in rule["queries"]}
    for case in rule["cases"]:
        if case.get("status") not in _SEVERITIES:
            return f"Invalid case status: {case.get('status')}"
        condition = case.get("condition", "")
        position = 0
        while position < len(condition.rstrip()):
            match = _CASE_TOKEN.match(condition, position)
            if match is None or match.end() == position:
                return f"Invalid case condition: {condition}"
            if match.group(1) and match.group(1) not in names:
                return f"Case condition references an unknown query: {match.group(1)}"
            position = match.end()
    return None


def _server_rule_query(query: dict[str, Any]) -> dict[str, Any]:
    return {
        "aggregation": "count",
        "distinctFields": [],
        "groupByFields": [],
        "hasOptionalGroupByFields": False,
        "dataSource": "logs",
        **query,
    }


def _monitor_problem(monitor: dict[str, Any]) -> str | None:
    for key in ("name", "type", "query"):
        if not monitor.get(key):
            return f"The parameter '{key}' is required"
    match = re.search(r"(?:<=|>=|<|>|==|!=)\s*(-?\d+(?:\.\d+)?)\s*$", monitor["query"])
    critical = monitor.get("options", {}).get("thresholds", {}).get("critical")
    if match and critical is not None and float(match.group(1)) != float(critical):
        return f"Alert threshold ({critical}) does not match that used in the query ({match.group(1)})."
    return None


_PROCESSOR_TYPES = {
    "arithmetic-processor", "attribute-remapper", "category-processor", "date-remapper",
    "geo-ip-parser", "grok-parser", "lookup-processor", "message-remapper", "pipeline",
    "service-remapper", "status-remapper", "string-builder-processor", "trace-id-remapper",
    "url-parser", "user-agent-parser",
}  # fmt: skip
_NEEDS_TARGET = {"geo-ip-parser", "user-agent-parser", "attribute-remapper", "url-parser"}


def _pipeline_problem(pipeline: dict[str, Any]) -> str | None:
    if not pipeline.get("name"):
        return "The parameter 'name' is required"
    for processor in pipeline.get("processors", []):
        kind = processor.get("type")
        if kind not in _PROCESSOR_TYPES:
            return f"Unknown processor type: {kind}"
        if kind in _NEEDS_TARGET and not (processor.get("sources") and processor.get("target")):
            return f"{kind}: 'sources' and 'target' are required"
        if kind == "pipeline" and (problem := _pipeline_problem({"name": "nested", **processor})):
            return problem
    return None


def _server_processor(processor: dict[str, Any]) -> dict[str, Any]:
    """What Datadog answers for a processor: disabled unless said otherwise, parser defaults filled."""
    filled = {"is_enabled": False, "name": "", **processor}
    if processor.get("type") == "user-agent-parser":
        filled.setdefault("is_encoded", False)
    if processor.get("type") == "pipeline":
        filled["processors"] = [_server_processor(p) for p in processor.get("processors", [])]
    return filled


def _monitor_options(options: dict[str, Any]) -> dict[str, Any]:
    """What Datadog answers: defaults filled in, thresholds as floats."""
    filled = {"notify_audit": False, "include_tags": True, "silenced": {}, "new_host_delay": 300, **options}
    filled["thresholds"] = {key: float(value) for key, value in options.get("thresholds", {}).items()}
    return filled


def _server_dashboard(
    body: dict[str, Any], dashboard_id: str, previous: dict[str, Any] | None
) -> dict[str, Any]:
    now = _now()
    widget_ids = itertools.count(7_000_000)

    def with_ids(widgets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for widget in widgets:
            widget = {**copy.deepcopy(widget), "id": next(widget_ids)}
            definition = widget["definition"]
            if isinstance(definition.get("widgets"), list):
                definition["widgets"] = with_ids(definition["widgets"])
            out.append(widget)
        return out

    return {
        "notify_list": None,
        "template_variables": None,
        "tags": [],
        "is_read_only": False,
        **body,
        "widgets": with_ids(body.get("widgets", [])),
        "id": dashboard_id,
        "url": f"/dashboard/{dashboard_id}/workos-overview",
        "author_handle": "sre@example.com",
        "author_name": "SRE",
        "created_at": previous["created_at"] if previous else now,
        "modified_at": now,
        "experience_type": "default",
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")
