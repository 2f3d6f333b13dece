"""Datadog pipeline, monitors, dashboards and log-based metrics: valid, querying what we emit,
applied idempotently.

The shipped JSON files are checked with the same code as ``workos-forwarder datadog
validate``; every facet they use is looked up in records produced by the real normalizer
from a sample of every category, as the shipped logs pipeline enriches them (the attributes
Datadog documents for its GeoIP and user-agent parsers, where the record has their source);
``apply`` runs through the real datadog-api-client against a Datadog API double on loopback.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

import sinks.prometheus  # noqa: F401  (registers workos_events_total on the shared registry)
from forwarder import catalog
from forwarder.datadog.assets import MANAGED_TAG, Asset, load_assets
from forwarder.datadog.cli import datadog
from forwarder.datadog.pipelines import processors, written_attributes
from forwarder.datadog.queries import (
    OUR_LOGS,
    dashboard_log_searches,
    parse_monitor_query,
    referenced_facets,
    referenced_metrics,
    referenced_tag_keys,
    security_rule_queries,
    selects_our_logs,
)
from forwarder.datadog.validate import validate
from forwarder.metrics import REGISTRY
from forwarder.normalize import NormalizeOptions, normalize
from tests.conftest import apply
from tests.doubles.datadog_api import DatadogApi
from tests.samples import CONNECTION_ID, DIRECTORY_ID, ORG_ID, SAMPLES, make_event

ROOT = Path(__file__).resolve().parent.parent
ASSETS, LOAD_PROBLEMS = load_assets(ROOT)
AGENT_CONFIG = ROOT / "monitors" / "datadog" / "agent" / "openmetrics.yaml"

# The catalog has these types but tests/samples.py has no sample: shapes from the WorkOS docs
# (the connection and directory objects), so their group-by facets can be checked too.
EXTRA_EVENTS = [
    make_event(
        "connection.deleted",
        data={
            "object": "connection",
            "id": CONNECTION_ID,
            "organization_id": ORG_ID,
            "state": "inactive",
            "name": "Okta SAML",
            "connection_type": "OktaSAML",
            "domains": [],
            "created_at": "2026-11-01T10:00:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
    ),
    # feature_flags.* (SDK 10.8): the namespaced successor of flag.*, the same flag object.
    make_event("feature_flags.flag.created", data=copy.deepcopy(SAMPLES["flag_created"]["data"])),
    make_event(
        "dsync.deleted",
        data={
            "object": "directory",
            "id": DIRECTORY_ID,
            "organization_id": ORG_ID,
            "state": "deleting",
            "type": "okta scim v2.0",
            "name": "Okta",
            "domain": "example.com",
            "created_at": "2026-11-01T10:00:00.000Z",
            "updated_at": "2026-11-26T23:31:00.000Z",
        },
    ),
]


def firing(rule: str, severity: str, group: dict[str, str], *, late: bool) -> dict[str, Any]:
    """A detection firing record in the shape forwarder/detections/firing.py writes
    (docs/detections.md): what the "Detection fired" monitor selects."""
    return {
        "ddsource": "workos",
        "service": "workos-events",
        "ddtags": (
            "source:workos,env:production,event:forwarder.detection,category:security,"
            f"forwarder:workos-forwarder,detection:{rule},severity:{severity}"
        ),
        "status": "error" if severity in ("high", "critical") else "warning",
        "date": "2026-11-26T23:41:00.000Z",
        "message": f"{rule}: fired",
        "evt": {"name": "forwarder.detection", "category": "security", "outcome": "detected"},
        "detection": {
            "rule": rule,
            "title": rule,
            "severity": severity,
            "group": group,
            "count": 12,
            "window": {"start": "2026-11-26T23:31:00.000Z", "end": "2026-11-26T23:41:00.000Z"},
            "event_ids": ["event_01HWZBQ8NJ5J7Y2D3XKTA9C6RE"],
            "attack": ["T1110.003"],
            "late": late,
        },
        "workos": {
            "id": "detection_0123456789abcdef0123456789abcdef",
            "event": "forwarder.detection",
            "created_at": "2026-11-26T23:41:00.000Z",
            "delivery": "detection",
        },
    }


FIRINGS = [
    firing("workos_password_spraying", "high", {"network.client.ip": "203.0.113.7"}, late=False),
    firing("workos_brute_force_then_success", "critical", {"usr.email": "ada@example.com"}, late=True),
]


def records() -> list[dict[str, Any]]:
    events = [*SAMPLES.values(), *EXTRA_EVENTS]
    return [normalize(event, NormalizeOptions()) for event in events] + copy.deepcopy(FIRINGS)


RECORDS = records()
(PIPELINE,) = [asset for asset in ASSETS if asset.kind == "pipeline"]


def value_at(record: dict[str, Any], path: str) -> Any:
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def enriched(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` after the shipped pipeline: each GeoIP or user-agent parser whose source the
    record has writes what Datadog documents under its target; other records pass unchanged."""
    result = copy.deepcopy(record)
    for _, processor in processors(PIPELINE.document):
        if processor["type"] not in ("geo-ip-parser", "user-agent-parser"):
            continue
        if not any(value_at(record, source) is not None for source in processor["sources"]):
            continue
        for path in written_attributes({"processors": [processor]}):
            *parents, leaf = path.split(".")
            target = result
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = f"({processor['type']})"
    return result


ENRICHED = [enriched(record) for record in RECORDS]


def records_for(asset: Asset) -> list[dict[str, Any]]:
    """What the asset sees: the pipeline reads records as sent, everything else reads them enriched."""
    return RECORDS if asset.kind == "pipeline" else ENRICHED


def assets_of(kind: str) -> list[Asset]:
    return [asset for asset in ASSETS if asset.kind == kind]


def ids(assets: list[Asset]) -> list[str]:
    return [asset.path.name for asset in assets]


# --- The shipped files ------------------------------------------------------------------------


def test_every_shipped_asset_passes_validate() -> None:
    assert not LOAD_PROBLEMS
    _, problems = validate(ROOT)
    assert [str(p) for p in problems] == []
    kinds = {asset.kind for asset in ASSETS}
    assert kinds == {"pipeline", "monitor", "dashboard", "log_metric", "security_rule"}


def test_validate_command_reports_success() -> None:
    result = CliRunner().invoke(datadog, ["validate", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert f"{len(ASSETS)} Datadog assets checked: all valid." in result.output


def test_the_issue_s_monitors_are_all_there() -> None:
    queries = {asset.name: asset.document["query"] for asset in assets_of("monitor")}
    expectations = {
        "authentication failure spike, by failure type": lambda q: (
            "@evt.outcome:failure" in q and '.by("@evt.name")' in q
        ),
        "anomaly on authentication failures via the log metric": lambda q: (
            "anomalies(" in q and "workos.authentication.failures" in q
        ),
        "SSO connection deactivated or deleted": lambda q: (
            "connection.deactivated" in q and "connection.deleted" in q
        ),
        "directory sync deleted": lambda q: "dsync.deleted" in q,
        "Radar and denied actions": lambda q: (
            "authentication.radar_risk_detected" in q and "action.authentication.denied" in q
        ),
        "domain verification failures": lambda q: "organization_domain.verification_failed" in q,
        "no records for hours": lambda q: q.endswith("< 1") and 'last("6h")' in q,
        "dead letters growing": lambda q: "dead_lettered" in q,
        "authentication failures spike for one organization": lambda q: (
            "@evt.category:authentication @evt.outcome:failure" in q and '.by("@workos.organization_id")' in q
        ),
    }
    for what, matches in expectations.items():
        assert any(matches(query) for query in queries.values()), what


@pytest.mark.parametrize("asset", assets_of("monitor"), ids=ids(assets_of("monitor")))
def test_monitor_has_a_useful_message_tags_and_priority(asset: Asset) -> None:
    monitor = asset.document
    assert MANAGED_TAG in monitor["tags"] and "service:workos-events" in monitor["tags"]
    assert monitor["priority"] in (1, 2, 3, 4, 5)
    assert "**What happened**" in monitor["message"] and "**First checks**" in monitor["message"]
    parsed, problems = parse_monitor_query(monitor["type"], monitor["query"])
    assert parsed is not None and not problems
    assert monitor["options"]["thresholds"]["critical"] == parsed.threshold


def test_every_log_query_selects_this_forwarder_s_logs_not_workos_s_own_stream() -> None:
    searches = []
    for asset in ASSETS:
        if asset.kind == "monitor":
            parsed, _ = parse_monitor_query(asset.document["type"], asset.document["query"])
            if parsed is not None and parsed.search is not None:
                searches.append(parsed.search)
        elif asset.kind == "dashboard":
            searches.extend(search for _, search in dashboard_log_searches(asset.document))
        elif asset.kind == "pipeline":
            searches.append(asset.document["filter"]["query"])
        elif asset.kind == "security_rule":
            searches.extend(query["query"] for query in security_rule_queries(asset.document))
        else:
            searches.append(asset.document["data"]["attributes"]["filter"]["query"])
    assert len(searches) > 20
    for search in searches:
        assert selects_our_logs(search), search
    # what the selectors name is what the normalizer stamps on every record (default FORWARDER_SERVICE)
    service, tag = OUR_LOGS
    assert all(f"service:{r['service']}" == service and tag in r["ddtags"].split(",") for r in RECORDS)
    assert not selects_our_logs("source:workos @evt.outcome:failure")
    assert not selects_our_logs("-service:workos-events source:workos")
    assert not selects_our_logs("service:workos-events-staging")
    assert selects_our_logs("source:workos (forwarder:workos-forwarder OR x)")


# --- Facets: every one used exists in what the normalizer emits -------------------------------


def test_the_facet_extraction_finds_the_facets_the_assets_are_built_on() -> None:
    used = set().union(*(referenced_facets(asset) for asset in ASSETS))
    assert used >= {"evt.name", "evt.outcome", "workos.category", "error.kind", "workos.organization_id"}
    assert used >= {"network.client.ip", "usr.email", "workos.actor"}  # named in messages and columns


def test_samples_cover_every_category_the_assets_query() -> None:
    sampled = {record["workos"]["category"] for record in RECORDS if "category" in record["workos"]}
    assert sampled >= set(catalog.category(t) for t in catalog.KNOWN_EVENT_TYPES) - {"dsync.token"}
    queried = {value for _, facet, value in facet_values() if facet == "workos.category"}
    assert queried and queried <= sampled


@pytest.mark.parametrize("asset", ASSETS, ids=ids(ASSETS))
def test_every_facet_used_exists_in_a_normalized_record(asset: Asset) -> None:
    """Dashboards and monitors: in a record as the pipeline leaves it; the pipeline: as sent."""
    facets = referenced_facets(asset)
    seen = records_for(asset)
    missing = sorted(f for f in facets if not any(value_at(r, f) is not None for r in seen))
    assert missing == [], f"{asset.path.name} uses facets no normalized (and enriched) record has"


def test_the_pipeline_enriches_sign_ins_as_native_identity_integrations_do() -> None:
    parsers = {processor["type"]: processor for _, processor in processors(PIPELINE.document)}
    assert parsers["geo-ip-parser"]["sources"] == ["network.client.ip"]
    assert parsers["geo-ip-parser"]["target"] == "network.client.geoip"
    assert parsers["user-agent-parser"]["sources"] == ["http.useragent"]
    assert parsers["user-agent-parser"]["target"] == "http.useragent_details"
    failure = next(r for r in ENRICHED if r["evt"]["name"] == "authentication.password_failed")
    assert failure["evt"]["category"] == "authentication"
    assert value_at(failure, "network.client.geoip.country.iso_code") is not None
    assert value_at(failure, "http.useragent_details.browser.family") is not None


def test_the_new_widgets_use_only_attributes_the_pipeline_or_normalizer_produce() -> None:
    (dashboard,) = assets_of("dashboard")
    (group,) = [
        widget["definition"]
        for widget in dashboard.document["widgets"]
        if widget["definition"].get("title", "").startswith("Where sign-ins come from")
    ]
    kinds = [widget["definition"]["type"] for widget in group["widgets"]]
    assert kinds == ["geomap", "toplist", "change"]
    used = referenced_facets(Asset("dashboard", dashboard.path, group))
    from_pipeline = {f for f in used if f.startswith(("network.client.geoip.", "http.useragent_details."))}
    assert from_pipeline, "the widgets no longer use the enriched attributes"
    assert from_pipeline <= written_attributes(PIPELINE.document)
    # only the pipeline writes them: without it, these widgets would be empty
    assert not any(value_at(r, f) is not None for r in RECORDS for f in from_pipeline)
    for facet in used:
        assert any(value_at(r, facet) is not None for r in ENRICHED), facet


@pytest.mark.parametrize("asset", ASSETS, ids=ids(ASSETS))
def test_every_tag_and_reserved_attribute_used_exists_in_a_normalized_record(asset: Asset) -> None:
    for key in referenced_tag_keys(asset):
        if key == "service":
            assert all("service" in r for r in RECORDS)
        elif key == "source":
            assert all(r["ddsource"] == "workos" for r in RECORDS)
        elif key == "status":
            assert all("status" in r for r in RECORDS)
        else:
            assert all(f",{key}:" in f",{r['ddtags']}" for r in RECORDS), key


def facet_values() -> Iterator[tuple[str, str, str]]:
    """(file, facet, value) for every ``@facet:value`` term, values of ``@facet:(a OR b)`` included."""
    term = re.compile(r'@([\w.-]+):(\((?:[^()"]|"[^"]*")*\)|"[^"]*"|[^\s()]+)')
    for asset in ASSETS:
        if asset.kind == "monitor":
            parsed, _ = parse_monitor_query(asset.document["type"], asset.document["query"])
            searches = [parsed.search] if parsed is not None and parsed.search else []
        elif asset.kind == "dashboard":
            searches = [search for _, search in dashboard_log_searches(asset.document)]
        elif asset.kind == "pipeline":
            searches = [asset.document["filter"]["query"]]
        elif asset.kind == "security_rule":
            searches = [query["query"] for query in security_rule_queries(asset.document)]
        else:
            searches = [asset.document["data"]["attributes"]["filter"]["query"]]
        for search in searches:
            for facet, raw in term.findall(search):
                for value in re.split(r"\s+(?:OR|AND)\s+", raw.strip("()")):
                    yield asset.path.name, facet, value.strip().strip('"')


@pytest.mark.parametrize(("name", "facet", "value"), sorted(set(facet_values())))
def test_every_facet_value_queried_is_one_the_normalizer_emits(name: str, facet: str, value: str) -> None:
    found = [value_at(r, facet) for r in RECORDS if value_at(r, facet) is not None]
    emitted = {json.dumps(value) if isinstance(value, bool) else str(value) for value in found}
    if facet == "evt.name":
        emitted |= catalog.KNOWN_EVENT_TYPES
    assert fnmatch.filter(emitted, value), f"{name}: no record has @{facet}:{value}"


@pytest.mark.parametrize("asset", assets_of("monitor"), ids=ids(assets_of("monitor")))
def test_a_monitor_s_groups_exist_on_the_events_it_selects(asset: Asset) -> None:
    """Grouping by a facet the selected events lack would put every alert in one N/A group."""
    parsed, _ = parse_monitor_query(asset.document["type"], asset.document["query"])
    assert parsed is not None
    if parsed.search is None:
        return
    names = {
        value for file, facet, value in facet_values() if file == asset.path.name and facet == "evt.name"
    }
    selected = [r for r in RECORDS if any(fnmatch.fnmatch(r["evt"]["name"], name) for name in names)]
    if not names:
        return
    assert selected, f"no sample for {names}"
    for facet in (group[1:] for group in parsed.group_by if group.startswith("@")):
        assert all(value_at(r, facet) is not None for r in selected), (
            facet,
            [r["evt"]["name"] for r in selected],
        )


# --- Metrics: log-based metrics are kept as code, Agent metrics come from our registry ----------


def agent_mapping() -> tuple[str, dict[str, str]]:
    config = yaml.safe_load(AGENT_CONFIG.read_text())
    (instance,) = config["instances"]
    mapping: dict[str, str] = {}
    for entry in instance["metrics"]:
        mapping.update(entry)
    return instance["namespace"], mapping


def registry_families() -> dict[str, str]:
    """Family name (as the Agent matches it: no ``_total``) -> Prometheus type."""
    return {family.name: family.type for family in REGISTRY.collect()}


def test_agent_config_maps_metrics_the_forwarder_really_exposes() -> None:
    _, mapping = agent_mapping()
    families = registry_families()
    assert set(mapping) <= set(families), set(mapping) - set(families)


def test_every_metric_a_monitor_or_dashboard_queries_is_defined() -> None:
    namespace, mapping = agent_mapping()
    families = registry_families()
    suffixes = {"counter": [".count"], "gauge": [""], "histogram": [".count", ".sum", ".bucket"]}
    agent_metrics = {
        f"{namespace}.{new}{suffix}" for raw, new in mapping.items() for suffix in suffixes[families[raw]]
    }
    log_metrics = {asset.name for asset in assets_of("log_metric")}
    used = set().union(*(referenced_metrics(asset) for asset in ASSETS))
    assert used, "no metric found: the extraction broke"
    assert used <= agent_metrics | log_metrics, used - agent_metrics - log_metrics
    assert log_metrics <= used, "a log-based metric nothing uses"


# --- validate: every kind of mistake is reported with its file and field ----------------------


def with_asset(tmp_path: Path, relative: str, change: Callable[[dict[str, Any]], None]) -> Path:
    for directory in ("monitors", "dashboards"):
        shutil.copytree(ROOT / directory, tmp_path / directory)
    target = tmp_path / relative
    document = json.loads(target.read_text())
    change(document)
    target.write_text(json.dumps(document, indent=2))
    return tmp_path


SPIKE = "monitors/datadog/authentication-failure-spike.json"
OVERVIEW = "dashboards/datadog/workos-overview.json"
METRIC = "monitors/datadog/log_metrics/workos.authentication.failures.json"
PIPELINE_FILE = "monitors/datadog/pipelines/workos-forwarder.json"
GEOMAP = "widgets.1.definition.widgets.0.definition"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = re.findall(r"[^.\[\]]+", path)
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(last) if last.isdigit() else last] = value

    return change


def _replace_query(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document["query"] = document["query"].replace(old, new)

    return change


FIRST_CHART = "widgets.0.definition.widgets.0.definition"
MISTAKES = [
    (
        "unknown key",
        SPIKE,
        _set("options.renotify", 30),
        "options.renotify",
        "unknown key for MonitorOptions",
    ),
    ("bad enum", SPIKE, _set("type", "log-alert"), "type", "'log-alert' is not one of"),
    ("wrong type", SPIKE, _set("priority", "high"), "priority", "Invalid type"),
    (
        "threshold differs",
        SPIKE,
        _set("options.thresholds.critical", 40),
        "options.thresholds.critical",
        "differs",
    ),
    (
        "warning above critical",
        SPIKE,
        _set("options.thresholds.warning", 80),
        "options.thresholds.warning",
        "below",
    ),
    (
        "lower-case or",
        SPIKE,
        _replace_query("@evt.outcome:failure", "@evt.outcome:failure or x"),
        "query",
        "upper case",
    ),
    ("unbalanced", SPIKE, _replace_query('logs("service', 'logs("(service'), "query", "never closed"),
    ("no window", SPIKE, _replace_query('.last("5m")', ""), "query", ".last() is missing"),
    (
        "not ours",
        SPIKE,
        _replace_query("service:workos-events ", ""),
        "query",
        "select this forwarder's logs",
    ),
    ("unmanaged", SPIKE, _set("tags", ["service:workos-events"]), "tags", MANAGED_TAG),
    ("no service tag", SPIKE, _set("tags", [MANAGED_TAG]), "tags", "service: tag"),
    ("server field", SPIKE, _set("id", 123), "id", "set by Datadog"),
    ("bad group var", SPIKE, _set("message", "{{[@usr.id].name}} failed"), "message", "names no group"),
    (
        "widget enum",
        OVERVIEW,
        _set(f"{FIRST_CHART}.requests.0.display_type", "linez"),
        f"{FIRST_CHART.replace('.0.', '[0].')}.requests[0].display_type",
        "'linez' is not one of",
    ),
    (
        "widget key",
        OVERVIEW,
        _set(f"{FIRST_CHART}.titel", "x"),
        "titel",
        "unknown key for TimeseriesWidgetDefinition",
    ),
    ("widget type", OVERVIEW, _set(f"{FIRST_CHART}.type", "timeseriez"), "definition", "type 'timeseriez'"),
    (
        "query enum",
        OVERVIEW,
        _set(f"{FIRST_CHART}.requests.0.queries.0.compute.aggregation", "total"),
        "compute.aggregation",
        "'total' is not one of",
    ),
    (
        "dashboard search",
        OVERVIEW,
        _set(f"{FIRST_CHART}.requests.0.queries.0.search.query", "@evt.name:(a OR"),
        "search.query",
        "never closed",
    ),
    ("dashboard marker", OVERVIEW, _set("description", "mine"), "description", MANAGED_TAG),
    ("metric id", METRIC, _set("data.id", "workos.other"), "data.id", "file name"),
    ("pipeline off", PIPELINE_FILE, _set("is_enabled", False), "is_enabled", "pipeline disabled otherwise"),
    (
        "processor off",
        PIPELINE_FILE,
        _set("processors.2.is_enabled", False),
        "processors[2].is_enabled",
        "disabled otherwise",
    ),
    (
        "processor type",
        PIPELINE_FILE,
        _set("processors.2.type", "geoip-parser"),
        "processors[2]",
        "'geoip-parser' is not one of",
    ),
    (
        "processor key",
        PIPELINE_FILE,
        _set("processors.3.encoded", False),
        "processors[3].encoded",
        "unknown key for LogsUserAgentParser",
    ),
    (
        "pipeline not ours",
        PIPELINE_FILE,
        _set("filter.query", "source:workos"),
        "filter.query",
        "select this forwarder's logs",
    ),
    ("pipeline unmanaged", PIPELINE_FILE, _set("tags", ["source:workos"]), "tags", MANAGED_TAG),
    ("pipeline server field", PIPELINE_FILE, _set("is_read_only", False), "is_read_only", "set by Datadog"),
    (
        "parser output typo",
        OVERVIEW,
        _set(f"{GEOMAP}.requests.0.queries.0.group_by.0.facet", "@network.client.geoip.country.iso"),
        "@network.client.geoip.country.iso",
        "geo-ip-parser writes no such attribute",
    ),
    (
        "metric enum",
        METRIC,
        _set("data.attributes.compute.aggregation_type", "sum"),
        "aggregation_type",
        "is not one of",
    ),
]


@pytest.mark.parametrize(
    ("what", "relative", "change", "field", "message"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_validate_names_the_file_and_field_of_each_mistake(
    tmp_path: Path,
    what: str,
    relative: str,
    change: Callable[[dict[str, Any]], None],
    field: str,
    message: str,
) -> None:
    root = with_asset(tmp_path, relative, change)
    result = CliRunner().invoke(datadog, ["validate", "--root", str(root)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(root / relative))]
    assert any(field in line and message in line for line in lines), result.output


def test_validate_reports_invalid_json_with_its_position(tmp_path: Path) -> None:
    root = with_asset(tmp_path, SPIKE, lambda document: None)
    (root / SPIKE).write_text('{"name": "x",\n  "type": }')
    result = CliRunner().invoke(datadog, ["validate", "--root", str(root)])
    assert result.exit_code == 1
    assert f"{root / SPIKE}: <document>: invalid JSON at line 2" in result.output


# --- apply, through the real datadog-api-client, against the API double ----------------------


def test_first_apply_creates_everything_and_the_second_changes_nothing(api: DatadogApi) -> None:
    first = apply()
    assert first.exit_code == 0, first.output
    assert f"Applied: {len(ASSETS)} created, 0 updated, 0 unchanged." in first.output
    assert len(api.monitors) == len(assets_of("monitor"))
    assert len(api.dashboards) == len(assets_of("dashboard"))
    assert set(api.log_metrics) == {asset.name for asset in assets_of("log_metric")}
    # the pipeline comes first, and the log metric exists before the monitor that alerts on it
    paths = [r.path for r in api.writes]
    assert paths[0] == "/api/v1/logs/config/pipelines"
    assert paths.index("/api/v2/logs/config/metrics") < paths.index("/api/v1/monitor")
    (pipeline,) = api.pipelines.values()
    assert pipeline["is_enabled"] and all(p["is_enabled"] for p in pipeline["processors"])
    assert pipeline["filter"]["query"] == PIPELINE.document["filter"]["query"]
    spike = api.monitor_named("[WorkOS] Authentication failure spike")
    assert spike["query"] == json.loads((ROOT / SPIKE).read_text())["query"]
    assert MANAGED_TAG in spike["tags"]

    writes = len(api.writes)
    second = apply()
    assert second.exit_code == 0, second.output
    assert f"Applied: 0 created, 0 updated, {len(ASSETS)} unchanged." in second.output
    assert len(api.writes) == writes


def diff_lines(output: str) -> list[tuple[str, str]]:
    """Changed lines of the unified diffs in ``output``: (sign, text stripped of indentation and comma)."""
    return [
        (line[0], line[1:].strip().rstrip(","))
        for line in output.splitlines()
        if line[:1] in "+-" and not line.startswith(("---", "+++"))
    ]


_SPIKE_QUERY = json.dumps(json.loads((ROOT / SPIKE).read_text())["query"])
QUERY_50 = f'"query": {_SPIKE_QUERY}'
QUERY_80 = QUERY_50.replace("> 50", "> 80")


def test_a_changed_threshold_is_shown_as_a_diff_and_updates_only_that_monitor(
    api: DatadogApi, tmp_path: Path
) -> None:
    assert apply().exit_code == 0
    spike_id = api.monitor_named("[WorkOS] Authentication failure spike")["id"]

    def raise_threshold(document: dict[str, Any]) -> None:
        document["query"] = document["query"].replace("> 50", "> 80")
        document["options"]["thresholds"]["critical"] = 80

    root = with_asset(tmp_path, SPIKE, raise_threshold)
    writes = len(api.writes)

    dry = apply(root, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"monitor '[WorkOS] Authentication failure spike': update (id {spike_id})" in dry.output
    assert diff_lines(dry.output) == [
        ("-", '"critical": 50'),
        ("+", '"critical": 80'),
        ("-", QUERY_50),
        ("+", QUERY_80),
    ]
    assert "Dry run: 0 to create, 1 to update" in dry.output
    assert len(api.writes) == writes

    real = apply(root)
    assert real.exit_code == 0, real.output
    assert "Applied: 0 created, 1 updated" in real.output
    assert [(r.method, r.path) for r in api.writes[writes:]] == [("PUT", f"/api/v1/monitor/{spike_id}")]
    assert api.monitors[spike_id]["options"]["thresholds"]["critical"] == 80
    assert apply(root).output.count(": unchanged") == len(ASSETS)


def test_a_dashboard_edited_in_the_ui_is_restored(api: DatadogApi) -> None:
    assert apply().exit_code == 0
    (dashboard,) = api.dashboards.values()
    dashboard["widgets"][0]["definition"]["title"] = "Renamed by hand"
    result = apply()
    assert result.exit_code == 0, result.output
    assert f"dashboard 'WorkOS overview': update (id {dashboard['id']})" in result.output
    assert diff_lines(result.output) == [
        ("-", '"title": "Renamed by hand"'),
        ("+", '"title": "Authentication"'),
    ]
    assert api.dashboards[dashboard["id"]]["widgets"][0]["definition"]["title"] == "Authentication"


def test_a_pipeline_edited_in_the_ui_is_replaced_by_the_file(api: DatadogApi) -> None:
    assert apply().exit_code == 0
    (pipeline,) = api.pipelines.values()
    pipeline["processors"][2]["is_enabled"] = False  # someone switched GeoIP off
    writes = len(api.writes)
    result = apply()
    assert result.exit_code == 0, result.output
    assert f"pipeline {PIPELINE.name!r}: update (id {pipeline['id']})" in result.output
    assert diff_lines(result.output) == [("-", '"is_enabled": false'), ("+", '"is_enabled": true')]
    assert [(r.method, r.path) for r in api.writes[writes:]] == [
        ("PUT", f"/api/v1/logs/config/pipelines/{pipeline['id']}")
    ]
    assert all(p["is_enabled"] for p in api.pipelines[pipeline["id"]]["processors"])
    assert apply().output.count(": unchanged") == len(ASSETS)


def test_pipelines_not_marked_as_ours_are_never_touched(api: DatadogApi) -> None:
    integration = api.add_pipeline({**PIPELINE.document, "tags": []}, read_only=True)
    by_hand = api.add_pipeline({**PIPELINE.document, "tags": ["team:security"], "is_enabled": False})
    before = copy.deepcopy(api.pipelines)
    result = apply()
    assert result.exit_code == 0, result.output
    assert api.pipelines[integration] == before[integration]
    assert api.pipelines[by_hand] == before[by_hand]
    ours = [p for p in api.pipelines.values() if MANAGED_TAG in p["tags"]]
    assert len(ours) == 1 and ours[0]["is_enabled"]


def test_monitors_without_the_managed_tag_are_never_touched(api: DatadogApi) -> None:
    spike = json.loads((ROOT / SPIKE).read_text())
    theirs = api.add_monitor({**spike, "tags": ["team:security"], "message": "hand-made"})
    result = apply()
    assert result.exit_code == 0, result.output
    assert api.monitors[theirs]["message"] == "hand-made"
    assert len([m for m in api.monitors.values() if m["name"] == spike["name"]]) == 2


def test_a_log_metric_whose_compute_changed_stops_apply_with_the_fix(api: DatadogApi, tmp_path: Path) -> None:
    assert apply().exit_code == 0
    root = with_asset(
        tmp_path,
        METRIC,
        _set("data.attributes.compute", {"aggregation_type": "distribution", "path": "@evt.name"}),
    )
    result = apply(root)
    assert result.exit_code == 1
    assert "workos.authentication.failures" in result.output and "delete the metric" in result.output


def test_a_changed_log_metric_filter_is_patched(api: DatadogApi, tmp_path: Path) -> None:
    assert apply().exit_code == 0
    query = "service:workos-events @workos.category:authentication @evt.outcome:(failure OR started)"
    root = with_asset(tmp_path, METRIC, _set("data.attributes.filter.query", query))
    result = apply(root)
    assert result.exit_code == 0, result.output
    assert api.writes[-1].method == "PATCH"
    assert api.log_metrics["workos.authentication.failures"]["attributes"]["filter"]["query"] == query


def test_apply_refuses_invalid_files_before_calling_datadog(api: DatadogApi, tmp_path: Path) -> None:
    root = with_asset(tmp_path, SPIKE, _set("options.thresholds.critical", 40))
    result = apply(root)
    assert result.exit_code == 1
    assert "options.thresholds.critical" in result.output
    assert api.requests == []


def test_apply_without_keys_says_which_are_missing(api: DatadogApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DD_APP_KEY")
    result = apply()
    assert result.exit_code == 1
    assert "DD_APP_KEY not set" in result.output
    assert api.requests == []


def test_a_rejected_key_is_reported_with_datadog_s_answer(
    api: DatadogApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DD_API_KEY", "revoked")
    result = apply()
    assert result.exit_code == 1
    assert "Datadog answered 403" in result.output and "Forbidden" in result.output
    assert api.writes == []


def test_duplicate_managed_monitors_stop_apply(api: DatadogApi) -> None:
    spike = json.loads((ROOT / SPIKE).read_text())
    api.add_monitor(copy.deepcopy(spike))
    api.add_monitor(copy.deepcopy(spike))
    result = apply()
    assert result.exit_code == 1
    assert "two managed monitors are named '[WorkOS] Authentication failure spike'" in result.output
