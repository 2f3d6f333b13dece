"""The ``doctor`` click command: options, output format and exit status."""

from __future__ import annotations

import asyncio
import sys

import click

from forwarder.doctor.report import exit_status, render_json, render_text, scrubbed
from forwarder.doctor.runner import environment, run_checks, secret_values


def _public_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise click.BadParameter(
            "must be the http(s) URL WorkOS calls, e.g. https://hooks.example.com/webhooks/workos"
        )
    return value


@click.command()
@click.option(
    "--url",
    default=None,
    callback=_public_url,
    help="The public webhook URL WorkOS calls: one signed test event (type forwarder.doctor, "
    "never stored) goes through it.",
)
@click.option("--send-test-log", is_flag=True, help="Send one log tagged doctor:true to Datadog.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of {check, status, detail, fix}.")
def doctor(url: str | None, send_test_log: bool, as_json: bool) -> None:
    """Check the set-up end to end; one line per check: PASS, WARN, FAIL or SKIP, with the fix.

    Reads the same environment and FORWARDER_CONFIG as serve. Exit status: 0 when no check
    failed, 1 when one did, 2 for usage errors.
    """
    env, config_problem = environment()
    results = asyncio.run(
        run_checks(env, url=url, send_test_log=send_test_log, config_problem=config_problem)
    )
    results = scrubbed(results, secret_values(env))
    click.echo(render_json(results) if as_json else render_text(results))
    sys.exit(exit_status(results))
