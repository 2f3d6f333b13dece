"""The ``workos-forwarder datadog`` command group: ``validate`` offline, ``apply`` against Datadog."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from forwarder.datadog.assets import Problem

_ROOT_OPTION = click.option(
    "--root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory holding monitors/ and dashboards/ [default: the current one, else the checkout].",
)
_RULES_OPTION = click.option(
    "--rules",
    envvar="FORWARDER_DETECTION_RULES",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Your own Sigma rules, as the service reads them (a rule named like a shipped one replaces it) "
    "[default: FORWARDER_DETECTION_RULES].",
)


@click.group(name="datadog")
def datadog() -> None:
    """Datadog logs pipelines, monitors, dashboards, log-based metrics and Cloud SIEM rules kept as code."""


@datadog.command(name="validate")
@_ROOT_OPTION
@_RULES_OPTION
def validate_command(root: Path | None, rules: Path | None) -> None:
    """Check every Datadog JSON file offline; exit 1 naming the file and field of each problem."""
    # Imported here: datadog-api-client takes ~0.3 s to import, which every other command would pay.
    from forwarder.datadog.assets import default_root
    from forwarder.datadog.validate import validate

    assets, problems = validate(root or default_root(), rules)
    _report(problems)
    click.echo(f"{len(assets)} Datadog assets checked: all valid.")


@datadog.command(name="generate")
@_ROOT_OPTION
@_RULES_OPTION
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if a generated file is out of date.")
def generate_command(root: Path | None, rules: Path | None, check: bool) -> None:
    """Write the log monitors and Cloud SIEM rules generated from the Sigma rules in monitors/sigma/.

    Log monitors go to monitors/datadog/detection-<rule>.json, Cloud SIEM rules to
    monitors/datadog/security_rules/<rule>.json; a file no rule generates any more is deleted.
    """
    from forwarder.datadog.assets import default_root
    from forwarder.datadog.detections import out_of_date, write
    from forwarder.datadog.sigma import SigmaLoadError

    base = root or default_root()
    try:
        changed = [path for path, _ in out_of_date(base, rules)] if check else write(base, rules)
    except SigmaLoadError as exc:
        click.echo(f"workos-forwarder datadog generate: {exc}", err=True)
        sys.exit(1)
    for path in changed:
        click.echo(f"{'out of date' if check else 'written'}: {path}")
    if check and changed:
        click.echo(
            f"{len(changed)} generated file(s) out of date: run `workos-forwarder datadog generate`.",
            err=True,
        )
        sys.exit(1)
    click.echo(f"Generated Datadog detections: {len(changed)} file(s) {'to change' if check else 'changed'}.")


@datadog.command(name="apply")
@_ROOT_OPTION
@_RULES_OPTION
@click.option("--dry-run", is_flag=True, help="Print what would change and change nothing.")
def apply_command(root: Path | None, rules: Path | None, dry_run: bool) -> None:
    """Create or update the logs pipelines, monitors, dashboards, log-based metrics and Cloud SIEM rules.

    Uses DD_API_KEY, DD_APP_KEY and DD_SITE (DD_API_URL overrides the API address). Objects
    are matched by name among those marked managed-by:workos-forwarder; a second apply
    changes nothing.
    """
    from forwarder.datadog.apply import ApplyError, api_client, execute, plan
    from forwarder.datadog.assets import default_root
    from forwarder.datadog.validate import validate

    assets, problems = validate(root or default_root(), rules)
    _report(problems)
    try:
        with api_client(os.environ) as client:
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
