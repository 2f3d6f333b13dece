"""``datadog apply``: plan, diff and make Datadog match the asset files.

Apply finds existing objects by name among those marked as ours (logs pipelines, monitors and
Cloud SIEM rules by the tag ``managed-by:workos-forwarder``; dashboards by that marker in their
description, because Datadog only allows ``team:`` tags on dashboards; log-based metrics by their
id), compares only the fields the file sets (the server adds ids, timestamps, defaults), prints a
diff and creates or updates. A second apply finds nothing to change.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import urllib3
from datadog_api_client import ApiClient, Configuration
from datadog_api_client.exceptions import ApiException
from datadog_api_client.model_utils import OpenApiModel, model_to_dict
from datadog_api_client.v1.api.dashboards_api import DashboardsApi
from datadog_api_client.v1.api.logs_pipelines_api import LogsPipelinesApi
from datadog_api_client.v1.api.monitors_api import MonitorsApi
from datadog_api_client.v1.model.dashboard import Dashboard
from datadog_api_client.v1.model.logs_pipeline import LogsPipeline
from datadog_api_client.v1.model.monitor import Monitor
from datadog_api_client.v1.model.monitor_update_request import MonitorUpdateRequest
from datadog_api_client.v2.api.logs_metrics_api import LogsMetricsApi
from datadog_api_client.v2.api.security_monitoring_api import SecurityMonitoringApi
from datadog_api_client.v2.model.logs_metric_create_request import LogsMetricCreateRequest
from datadog_api_client.v2.model.logs_metric_update_request import LogsMetricUpdateRequest
from datadog_api_client.v2.model.security_monitoring_rule_update_payload import (
    SecurityMonitoringRuleUpdatePayload,
)
from datadog_api_client.v2.model.security_monitoring_standard_rule_create_payload import (
    SecurityMonitoringStandardRuleCreatePayload,
)
from datadog_api_client.v2.model.security_monitoring_standard_rule_payload import (
    SecurityMonitoringStandardRulePayload,
)

from forwarder.datadog.assets import MANAGED_TAG, MODELS, Asset, Kind, offline_client
from forwarder.errors import ApplyError
from sinks.datadog import identity_headers


def api_configuration(env: Mapping[str, str]) -> Configuration:
    """Client settings from DD_API_KEY, DD_APP_KEY and DD_SITE; DD_API_URL for tests or proxies."""
    missing = [name for name in ("DD_API_KEY", "DD_APP_KEY") if not env.get(name)]
    if missing:
        raise ApplyError(
            f"{' and '.join(missing)} not set: apply needs an API key and an application key "
            "(Datadog: Organization Settings > API Keys / Application Keys) with monitors, dashboards, "
            "logs-metrics and logs-pipelines write access"
        )
    config = Configuration(enable_retry=True, max_retries=3)
    config.api_key["apiKeyAuth"] = env["DD_API_KEY"]
    config.api_key["appKeyAuth"] = env["DD_APP_KEY"]
    if env.get("DD_SITE"):
        config.server_variables["site"] = env["DD_SITE"]
    if env.get("DD_API_URL"):
        config.host = env["DD_API_URL"].rstrip("/")
    return config


def api_client(env: Mapping[str, str]) -> ApiClient:
    """A Datadog API client that names its sender as every request of the forwarder does
    (``sinks.datadog.identity_headers``, the one place those headers are made)."""
    client = ApiClient(api_configuration(env))
    client.default_headers.update(identity_headers("workos-forwarder-apply"))
    return client


@dataclass
class Change:
    asset: Asset
    action: Literal["create", "update", "unchanged"]
    remote_id: str | None = None
    diff: str = ""


def plan(client: ApiClient, assets: list[Asset]) -> list[Change]:
    """What apply would do for each asset, by comparing it with what Datadog holds."""
    remote_pipelines = _managed_pipelines(client)
    remote_monitors = _managed_monitors(client)
    remote_dashboards = _managed_dashboards(client)
    remote_metrics = _log_metrics(client)
    remote_rules = _managed_security_rules(client) if any(a.kind == "security_rule" for a in assets) else {}
    changes = []
    # Pipelines first: they write the attributes the rest query.
    order = ("pipeline", "log_metric", "monitor", "dashboard", "security_rule")
    for asset in sorted(assets, key=lambda a: order.index(a.kind)):
        if asset.kind == "pipeline":
            changes.append(_compare(asset, remote_pipelines.get(asset.name), asset.document))
        elif asset.kind == "monitor":
            changes.append(_compare(asset, remote_monitors.get(asset.name), asset.document))
        elif asset.kind == "security_rule":
            changes.append(_compare(asset, remote_rules.get(asset.name), asset.document))
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
    pipelines = LogsPipelinesApi(client)
    for change in changes:
        asset = change.asset
        label = f"{asset.kind} {asset.name!r} ({asset.path})"
        if change.action == "unchanged":
            continue
        if asset.kind == "pipeline":
            body = _model(asset.document, LogsPipeline)
            if change.action == "create":
                _call(label, pipelines.create_logs_pipeline, body)
            else:
                # PUT replaces the whole pipeline, processors included: the file is all of it.
                _call(label, pipelines.update_logs_pipeline, change.remote_id, body)
        elif asset.kind == "monitor":
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
        elif asset.kind == "security_rule":
            _execute_security_rule(client, change, label)
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


def _execute_security_rule(client: ApiClient, change: Change, label: str) -> None:
    """Validate with Datadog, then create, or replace queries, cases and options (PUT sends them whole)."""
    api, document = SecurityMonitoringApi(client), change.asset.document
    _call(
        label, api.validate_security_monitoring_rule, _model(document, SecurityMonitoringStandardRulePayload)
    )
    if change.action == "create":
        _call(
            label,
            api.create_security_monitoring_rule,
            _model(document, SecurityMonitoringStandardRuleCreatePayload),
        )
    else:
        update = {key: value for key, value in document.items() if key != "type"}  # type cannot change
        _call(
            label,
            api.update_security_monitoring_rule,
            change.remote_id,
            _model(update, SecurityMonitoringRuleUpdatePayload),
        )


def _managed_security_rules(client: ApiClient) -> dict[str, dict[str, Any]]:
    """Cloud SIEM rules tagged as ours, by name (Datadog's own rules, hundreds of them, are skipped)."""
    api = SecurityMonitoringApi(client)
    found: dict[str, dict[str, Any]] = {}
    page = 0
    while True:
        listed = _to_json(
            _call("security rule list", api.list_security_monitoring_rules, page_size=100, page_number=page)
        )
        batch = listed.get("data") or []
        for remote in batch:
            if MANAGED_TAG in (remote.get("tags") or []):
                _add_unique(found, str(remote.get("name")), remote, "Cloud SIEM rules")
        if len(batch) < 100:
            return found
        page += 1


def _managed_pipelines(client: ApiClient) -> dict[str, dict[str, Any]]:
    """Logs pipelines tagged as ours, by name (the API lists every pipeline in one answer)."""
    found: dict[str, dict[str, Any]] = {}
    listed = _call("logs pipeline list", LogsPipelinesApi(client).list_logs_pipelines)
    for pipeline in listed.value:  # LogsPipelineList wraps the JSON array
        remote = _to_json(pipeline)
        if MANAGED_TAG in (remote.get("tags") or []):
            _add_unique(found, str(remote.get("name")), remote, "logs pipelines")
    return found


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
    read_only = MODELS[kind].read_only_vars
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
    return offline_client().deserialize(json.dumps(document), (model,), True)


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
