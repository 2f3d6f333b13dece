"""Datadog log monitors and Cloud SIEM rules generated from the Sigma rules, validated, applied.

The thresholds, windows and groups of the generated files are checked against the Sigma YAML
read directly (not through the generator), so a generator bug cannot agree with itself. Apply
runs through the real datadog-api-client against the Datadog API double on loopback.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from sigma.collection import SigmaCollection

from forwarder.datadog.assets import MANAGED_TAG, load_assets
from forwarder.datadog.cli import datadog
from forwarder.datadog.detections import generate, render
from forwarder.datadog.queries import parse_monitor_query
from forwarder.datadog.sigma import DatadogLogSearch, SigmaLoadError, load_rules, log_search
from forwarder.datadog.validate import validate
from tests.conftest import apply
from tests.doubles.datadog_api import DatadogApi

ROOT = Path(__file__).resolve().parent.parent
SIGMA = ROOT / "monitors" / "sigma"
RULES_DIR = ROOT / "monitors" / "datadog" / "security_rules"
SEVERITIES = {
    "informational": "info",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}
CORRELATIONS = {
    path.stem: document
    for path in sorted(SIGMA.glob("*.yml"))
    if "correlation" in (document := yaml.safe_load(path.read_text()))
}
BASE = {
    path.stem: document
    for path in sorted(SIGMA.glob("*.yml"))
    if "detection" in (document := yaml.safe_load(path.read_text()))
}


def monitor_file(rule: str) -> Path:
    return ROOT / "monitors" / "datadog" / f"detection-{rule}.json"


def rule_file(rule: str) -> dict[str, Any]:
    return json.loads((RULES_DIR / f"{rule}.json").read_text())


def evt_names(rule: str) -> set[str]:
    """The event types a base rule selects, from its YAML."""
    selection = BASE[rule]["detection"]["selection"]
    names = selection.get("evt.name", [])
    return set(names if isinstance(names, list) else [names])


# --- In step with the Sigma files ------------------------------------------------------------


def test_the_generated_files_are_what_the_sigma_rules_give() -> None:
    result = CliRunner().invoke(datadog, ["generate", "--check", "--root", str(ROOT)])
    assert result.exit_code == 0, result.output
    for relative, document in generate(ROOT).items():
        assert (ROOT / relative).read_text() == render(document)


def test_the_issue_s_rules_all_have_a_cloud_siem_rule_and_the_countable_ones_a_log_monitor() -> None:
    assert set(CORRELATIONS) == {
        "workos_brute_force",
        "workos_brute_force_then_success",
        "workos_password_spraying",
        "workos_credential_stuffing",
        "workos_mfa_guessing",
    }
    built_in = {"workos_impossible_travel", "workos_new_country"}
    assert {path.stem for path in RULES_DIR.glob("*.json")} == set(CORRELATIONS) | built_in
    with_monitor = {
        path.stem.removeprefix("detection-") for path in monitor_file("x").parent.glob("detection-*")
    }
    assert with_monitor == set(CORRELATIONS) - {"workos_brute_force_then_success"}


@pytest.mark.parametrize("rule", sorted(set(CORRELATIONS) - {"workos_brute_force_then_success"}))
def test_each_log_monitor_counts_what_its_sigma_rule_counts(rule: str) -> None:
    sigma = CORRELATIONS[rule]["correlation"]
    monitor = json.loads(monitor_file(rule).read_text())
    parsed, problems = parse_monitor_query(monitor["type"], monitor["query"])
    assert parsed is not None and not problems
    condition = sigma["condition"]
    assert (parsed.comparator, parsed.threshold) == (">=", condition["gte"])
    assert monitor["options"]["thresholds"]["critical"] == condition["gte"]
    assert f'.last("{sigma["timespan"]}")' in monitor["query"]
    assert parsed.group_by == [f"@{field}" for field in sigma.get("group-by", [])]
    if sigma["type"] == "value_count":
        assert f'.rollup("cardinality", "@{condition["field"]}")' in monitor["query"]
    else:
        assert '.rollup("count")' in monitor["query"]
    selected = set(re.findall(r"@evt\.name:([\w.]+)", parsed.search or ""))
    assert selected == set().union(*(evt_names(base) for base in sigma["rules"]))
    assert parsed.search is not None and parsed.search.startswith("service:workos-events ")
    level = CORRELATIONS[rule]["level"]
    assert f"severity:{level}" in monitor["tags"] and f"detection:{rule}" in monitor["tags"]
    assert CORRELATIONS[rule]["triage"].split()[0] in monitor["message"]


def test_spraying_is_the_cardinality_of_accounts_by_address_over_ten_minutes() -> None:
    monitor = json.loads(monitor_file("workos_password_spraying").read_text())
    assert monitor["query"] == (
        'logs("service:workos-events @evt.name:authentication.password_failed").index("*")'
        '.rollup("cardinality", "@usr.email").by("@network.client.ip").last("10m") >= 5'
    )


def test_credential_stuffing_s_monitor_says_it_is_broader_and_its_siem_rule_requires_all_three() -> None:
    monitor = json.loads(monitor_file("workos_credential_stuffing").read_text())
    assert "**Broader than the rule**" in monitor["message"]
    assert "at least 25 events" in monitor["message"]
    assert "at least 5 distinct network.client.ip" in monitor["message"]
    rule = rule_file("workos_credential_stuffing")
    queries = {query["name"]: query for query in rule["queries"]}
    assert (queries["a"]["aggregation"], queries["a"]["distinctFields"]) == ("cardinality", ["@usr.email"])
    assert (queries["b"]["aggregation"], queries["b"]["distinctFields"]) == ("count", [])
    assert (queries["c"]["aggregation"], queries["c"]["distinctFields"]) == (
        "cardinality",
        ["@network.client.ip"],
    )
    assert rule["cases"][0]["condition"] == "a >= 15 && b >= 25 && c >= 5"
    assert rule["options"]["evaluationWindow"] == 900


@pytest.mark.parametrize("rule", sorted(CORRELATIONS))
def test_each_cloud_siem_rule_has_its_sigma_rule_s_window_severity_groups_and_triage(rule: str) -> None:
    sigma = CORRELATIONS[rule]
    document = rule_file(rule)
    seconds = {"m": 60, "h": 3600}
    timespan = sigma["correlation"]["timespan"]
    assert document["options"]["evaluationWindow"] == int(timespan[:-1]) * seconds[timespan[-1]]
    assert document["options"]["detectionMethod"] == "threshold"
    assert document["cases"][0]["status"] == SEVERITIES[sigma["level"]]
    for query in document["queries"]:
        assert query["groupByFields"] == [f"@{field}" for field in sigma["correlation"].get("group-by", [])]
    assert " ".join(sigma["triage"].split()) in document["message"]
    for false_positive in sigma["falsepositives"]:
        assert " ".join(false_positive.split())[:40] in " ".join(document["message"].split())
    assert MANAGED_TAG in document["tags"]


def test_brute_force_then_success_needs_the_failures_and_then_a_success_of_the_same_account() -> None:
    document = rule_file("workos_brute_force_then_success")
    failures, success = document["queries"]
    assert evt_names("workos_failed_password_sign_in") | evt_names("workos_failed_mfa_sign_in") == set(
        re.findall(r"@evt\.name:([\w.]+)", failures["query"])
    )
    assert "@evt.outcome:success" in success["query"] and "@evt.category:authentication" in success["query"]
    brute_force = CORRELATIONS["workos_brute_force"]["correlation"]["condition"]["gte"]
    assert document["cases"][0]["condition"] == f"a >= {brute_force} && b > 0"
    assert document["cases"][0]["status"] == "critical"


def test_impossible_travel_and_new_country_use_datadog_s_methods_on_the_geoip_attributes() -> None:
    travel = rule_file("workos_impossible_travel")
    assert travel["options"]["detectionMethod"] == "impossible_travel"
    assert travel["queries"][0]["aggregation"] == "geo_data"
    assert travel["queries"][0]["metric"] == "@network.client.geoip"
    assert travel["cases"][0]["status"] == "high"
    country = rule_file("workos_new_country")
    assert country["options"]["detectionMethod"] == "new_value"
    assert country["queries"][0]["metrics"] == ["@network.client.geoip.country.iso_code"]
    assert country["options"]["newValueOptions"]["forgetAfter"] == 7
    assert country["cases"][0]["status"] == "low"
    for document in (travel, country):
        assert document["queries"][0]["groupByFields"] == ["@usr.email"]
        assert "@evt.outcome:success" in document["queries"][0]["query"]


# --- Base rules as Datadog log searches (the pySigma text backend) ------------------------------


def test_the_base_rules_become_the_searches_their_yaml_describes() -> None:
    rules = load_rules(ROOT).base_rules
    assert log_search(rules["workos_failed_password_sign_in"]) == "@evt.name:authentication.password_failed"
    assert (
        log_search(rules["workos_successful_sign_in"])
        == "@evt.category:authentication AND @evt.outcome:success"
    )


def _convert(detection: str) -> list[str]:
    rule = f"title: t\nlogsource:\n  product: workos\ndetection:\n{detection}"
    return list(DatadogLogSearch().convert(SigmaCollection.from_yaml(rule)))


def test_lists_negation_wildcards_and_quoting_follow_datadog_s_search_syntax() -> None:
    (query,) = _convert(
        "  sel:\n    evt.name: [authentication.password_failed, 'a b']\n    error.kind|startswith: inv\n"
        "  own:\n    usr.email: '*@example.com'\n  condition: sel and not own\n"
    )
    assert query == (
        '(@evt.name:authentication.password_failed OR @evt.name:"a b") AND @error.kind:inv* '
        "AND -@usr.email:*@example.com"
    )


def test_a_single_character_wildcard_has_no_datadog_form() -> None:
    with pytest.raises(Exception, match="single-character wildcard"):
        _convert("  sel:\n    usr.email: 'a?b'\n  condition: sel\n")


# --- validate and generate on a copy of the checkout -------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for directory in ("monitors", "dashboards"):
        shutil.copytree(ROOT / directory, tmp_path / directory)
    return tmp_path


def _edit_sigma(root: Path, rule: str, old: str, new: str) -> None:
    path = root / "monitors" / "sigma" / f"{rule}.yml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_changed_sigma_threshold_fails_validate_until_generate_is_run(root: Path) -> None:
    _edit_sigma(root, "workos_password_spraying", "gte: 5", "gte: 8")
    checked = CliRunner().invoke(datadog, ["validate", "--root", str(root)])
    assert checked.exit_code == 1
    assert "detection-workos_password_spraying.json: <document>: differs from what the Sigma rules give" in (
        checked.output
    )
    assert "run `workos-forwarder datadog generate`" in checked.output
    assert CliRunner().invoke(datadog, ["generate", "--check", "--root", str(root)]).exit_code == 1

    written = CliRunner().invoke(datadog, ["generate", "--root", str(root)])
    assert written.exit_code == 0, written.output
    assert sorted(
        line.split("/")[-1] for line in written.output.splitlines() if line.startswith("written")
    ) == [
        "detection-workos_password_spraying.json",
        "workos_password_spraying.json",
    ]
    monitor = json.loads((root / "monitors/datadog/detection-workos_password_spraying.json").read_text())
    assert monitor["query"].endswith(">= 8") and monitor["options"]["thresholds"]["critical"] == 8
    assert validate(root)[1] == []


def test_a_generated_file_whose_rule_was_removed_is_reported_and_deleted(root: Path) -> None:
    (root / "monitors/sigma/workos_mfa_guessing.yml").unlink()
    problems = [str(problem) for problem in validate(root)[1]]
    assert any("workos_mfa_guessing.json: <document>: no longer generated by any rule" in p for p in problems)
    assert CliRunner().invoke(datadog, ["generate", "--root", str(root)]).exit_code == 0
    assert not (root / "monitors/datadog/detection-workos_mfa_guessing.json").exists()
    assert not (root / "monitors/datadog/security_rules/workos_mfa_guessing.json").exists()


@pytest.mark.parametrize(
    ("rule", "old", "new", "message"),
    [
        ("workos_mfa_guessing", "gte: 5", "lt: 5", "condition lt cannot alert in Datadog"),
        ("workos_brute_force", "  timespan: 10m", "  timespan: ten minutes", "workos_brute_force"),
        ("workos_failed_mfa_sign_in", "evt.name: authentication.mfa_failed", "evt.name: 'a?b'", "wildcard"),
    ],
)
def test_a_sigma_rule_without_a_datadog_form_stops_generate_naming_the_file(
    root: Path, rule: str, old: str, new: str, message: str
) -> None:
    _edit_sigma(root, rule, old, new)
    result = CliRunner().invoke(datadog, ["generate", "--root", str(root)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert any(message in str(problem) for problem in validate(root)[1])


def test_load_rules_names_the_directory_when_there_is_no_rule(tmp_path: Path) -> None:
    (tmp_path / "monitors" / "sigma").mkdir(parents=True)
    with pytest.raises(SigmaLoadError, match="no Sigma rule"):
        load_rules(tmp_path)


SECURITY_MISTAKES = [
    ("severity", ("cases", 0, "status"), "informational", "cases[0].status", "is not one of"),
    (
        "unknown query",
        ("cases", 0, "condition"),
        "a >= 5 && z > 0",
        "cases[0].condition",
        "'z' names no query",
    ),
    ("ratio", ("cases", 0, "condition"), "a / 2 >= 5", "cases[0].condition", "only query names"),
    ("window", ("options", "evaluationWindow"), 700, "options.evaluationWindow", "is not one of"),
    ("keep alive", ("options", "keepAlive"), 300, "options.keepAlive", "must be at least evaluationWindow"),
    ("not ours", ("queries", 0, "query"), "source:workos @evt.name:x", "queries[0].query", "this forwarder"),
    ("typo", ("queries", 0, "groupBy"), ["@usr.email"], "queries[0].groupBy", "unknown key"),
    ("no distinct", ("queries", 0, "distinctFields"), [], "queries[0].distinctFields", "cardinality counts"),
    ("disabled", ("isEnabled",), False, "isEnabled", "never fires"),
    ("unmanaged", ("tags",), ["source:workos"], "tags", MANAGED_TAG),
]


@pytest.mark.parametrize(
    ("what", "where", "value", "field", "message"), SECURITY_MISTAKES, ids=[m[0] for m in SECURITY_MISTAKES]
)
def test_validate_names_the_field_of_each_mistake_in_a_security_rule(
    tmp_path: Path, what: str, where: tuple[Any, ...], value: Any, field: str, message: str
) -> None:
    shutil.copytree(ROOT / "monitors" / "datadog", tmp_path / "monitors" / "datadog")
    path = tmp_path / "monitors/datadog/security_rules/workos_password_spraying.json"
    document = json.loads(path.read_text())
    target: Any = document
    for part in where[:-1]:
        target = target[part]
    target[where[-1]] = value
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(datadog, ["validate", "--root", str(tmp_path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert any(f": {field}: " in line and message in line for line in lines), result.output


# --- apply, against the API double --------------------------------------------------------------


RULE_ASSETS = [asset for asset in load_assets(ROOT)[0] if asset.kind == "security_rule"]


def test_apply_creates_the_security_rules_validated_and_a_second_apply_writes_nothing(
    api: DatadogApi,
) -> None:
    first = apply()
    assert first.exit_code == 0, first.output
    assert {rule["name"] for rule in api.security_rules.values()} == {asset.name for asset in RULE_ASSETS}
    validated = [r for r in api.requests if r.path == "/api/v2/security_monitoring/rules/validation"]
    assert len(validated) == len(RULE_ASSETS)
    spraying = api.security_rule_named("[WorkOS] Password spraying from one address")
    assert spraying["cases"][0]["condition"] == "a >= 5" and MANAGED_TAG in spraying["tags"]
    writes = len(api.writes)
    second = apply()
    assert second.exit_code == 0, second.output
    assert "0 created, 0 updated" in second.output
    assert len(api.writes) == writes


def test_a_rule_edited_in_the_ui_is_restored_with_one_put(api: DatadogApi) -> None:
    assert apply().exit_code == 0
    rule = api.security_rule_named("[WorkOS] MFA code guessing")
    rule["cases"][0]["condition"] = "a >= 50"
    rule["options"]["evaluationWindow"] = 1800
    writes = len(api.writes)
    result = apply()
    assert result.exit_code == 0, result.output
    assert f"security_rule '[WorkOS] MFA code guessing': update (id {rule['id']})" in result.output
    assert '-      "condition": "a >= 50"' in result.output
    assert [(r.method, r.path) for r in api.writes[writes:]] == [
        ("PUT", f"/api/v2/security_monitoring/rules/{rule['id']}")
    ]
    restored = api.security_rules[rule["id"]]
    assert restored["cases"][0]["condition"] == "a >= 5" and restored["options"]["evaluationWindow"] == 600
    assert restored["version"] == 2 and "type" not in api.writes[-1].body


def test_rules_not_marked_as_ours_are_never_touched_even_with_the_same_name(api: DatadogApi) -> None:
    theirs = json.loads((RULES_DIR / "workos_mfa_guessing.json").read_text())
    theirs["tags"] = ["source:workos"]
    theirs["cases"][0]["condition"] = "a >= 99"
    their_id = api.add_security_rule(theirs)
    assert apply().exit_code == 0
    assert api.security_rules[their_id]["cases"][0]["condition"] == "a >= 99"
    ours = [r for r in api.security_rules.values() if r["name"] == theirs["name"] and r["id"] != their_id]
    assert len(ours) == 1 and MANAGED_TAG in ours[0]["tags"]


def test_managed_rules_beyond_the_first_page_are_found(api: DatadogApi) -> None:
    for index in range(150):  # Datadog's own rules come first, hundreds of them
        api.add_security_rule(
            {**rule_file("workos_mfa_guessing"), "name": f"Datadog rule {index}", "tags": []}
        )
    assert apply().exit_code == 0
    writes = len(api.writes)
    assert apply().exit_code == 0
    assert len(api.writes) == writes
    pages = {
        r.query.get("page[number]") for r in api.requests if r.path == "/api/v2/security_monitoring/rules"
    }
    assert {"0", "1"} <= pages


def test_two_managed_rules_with_one_name_stop_apply(api: DatadogApi) -> None:
    document = rule_file("workos_mfa_guessing")
    api.add_security_rule(document)
    api.add_security_rule(document)
    result = apply()
    assert result.exit_code == 1
    assert "two managed Cloud SIEM rules are named '[WorkOS] MFA code guessing'" in result.output


def test_your_own_rules_replace_shipped_ones_of_the_same_name_and_add_new_ones(
    root: Path, tmp_path: Path
) -> None:
    """FORWARDER_DETECTION_RULES, as the service reads it: a threshold changed there reaches Datadog."""
    mine = tmp_path / "my-rules"
    mine.mkdir()
    spraying = (SIGMA / "workos_password_spraying.yml").read_text().replace("gte: 5", "gte: 3")
    (mine / "spraying.yml").write_text(spraying)
    mfa_slow = (SIGMA / "workos_mfa_guessing.yml").read_text()
    mfa_slow = mfa_slow.replace("name: workos_mfa_guessing", "name: acme_slow_mfa_guessing")
    mfa_slow = mfa_slow.replace("timespan: 10m", "timespan: 1h").replace("2b0db0f0", "2b0db0f1")
    mfa_slow = mfa_slow.replace("title: WorkOS MFA code guessing", "title: Acme slow MFA code guessing")
    (mine / "slow.yml").write_text(mfa_slow)

    written = CliRunner().invoke(
        datadog, ["generate", "--root", str(root)], env={"FORWARDER_DETECTION_RULES": str(mine)}
    )
    assert written.exit_code == 0, written.output
    monitor = json.loads((root / "monitors/datadog/detection-workos_password_spraying.json").read_text())
    assert monitor["query"].endswith(">= 3")
    assert f"Generated from {mine / 'spraying.yml'}" in monitor["message"]
    slow = json.loads((root / "monitors/datadog/security_rules/acme_slow_mfa_guessing.json").read_text())
    assert slow["options"]["evaluationWindow"] == 3600
    assert validate(root, mine)[1] == []
    # Without the variable the files no longer match the shipped rules, and validate says so.
    assert any("differs" in str(problem) for problem in validate(root)[1])
