"""``workos-forwarder``: serve, sign test events, and inspect or replay dead letters."""

from __future__ import annotations

import asyncio
import datetime as dt
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from forwarder.backfill import backfill
from forwarder.config import ConfigError, Settings, load_environment
from forwarder.datadog.cli import datadog
from forwarder.doctor.command import doctor

F = TypeVar("F", bound=Callable[..., Any])


def exits_on_config_error(command: F) -> F:
    """Turn a ConfigError into one clear line on stderr and exit status 2."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"workos-forwarder: configuration error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="workos-forwarder")
def main() -> None:
    """Verify WorkOS webhooks, journal them durably and forward them to Datadog, OTLP,
    Prometheus and JSON lines. Configured by environment variables (see docs/configuration.md)."""


@main.command()
@click.option(
    "--check-config",
    is_flag=True,
    help="Only parse the settings and build the sinks, print OK and exit (2 on an error).",
)
@exits_on_config_error
def serve(check_config: bool) -> None:
    """Run the sidecar: webhook endpoint, delivery loops, /metrics, /healthz, /readyz, /status."""
    from forwarder import logs
    from forwarder.server import serve as run

    env = load_environment()
    settings = Settings.from_env(env)
    if check_config:
        # For systemd's ExecStartPre and CI: the same checks `serve` makes before it binds,
        # short of opening the journal, so a bad variable is caught before a restart loop.
        from forwarder.detections.settings import detection_settings
        from sinks.base import load_sinks

        sinks = load_sinks(env)
        detections = detection_settings(env)

        async def close_all() -> None:
            for sink in sinks:
                await sink.close()

        asyncio.run(close_all())
        names = ", ".join(sink.name for sink in sinks) or "none"
        rules = len(detections.rules.correlations) if detections is not None else "off"
        click.echo(f"workos-forwarder: configuration OK (sinks: {names}; detection rules: {rules})")
        return
    logs.configure(settings.log_level)
    run(settings, env)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--secret", envvar="WORKOS_WEBHOOK_SECRET", help="Signing secret [env: WORKOS_WEBHOOK_SECRET, first one]."
)
@click.option(
    "--url", default=None, help="Webhook URL for the curl line [default: from FORWARDER_HOST/PORT/PATH]."
)
@exits_on_config_error
def sign(file: Path, secret: str | None, url: str | None) -> None:
    """Print a WorkOS-Signature header for FILE (a JSON event) and a ready curl line."""
    from forwarder.signature import sign as make_signature

    if not secret:
        raise ConfigError("WORKOS_WEBHOOK_SECRET", "not set; pass --secret or export the endpoint secret")
    if url is None:
        settings = Settings.from_env(load_environment(), require_secret=False)
        url = f"http://{settings.host}:{settings.port}{settings.webhook_path}"
    header = make_signature(file.read_bytes(), secret.split(",")[0].strip())
    click.echo(f"WorkOS-Signature: {header}")
    click.echo(
        f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json'"
        f" -H {shlex.quote('WorkOS-Signature: ' + header)} --data-binary @{shlex.quote(str(file))}"
    )


@main.group()
def dlq() -> None:
    """Dead letters: records a sink could not deliver."""


def _journal() -> Any:
    from forwarder.service import open_journal

    return open_journal(Settings.from_env(load_environment(), require_secret=False))


@dlq.command("list")
@click.option("--sink", default=None, help="Only this sink's dead letters.")
@click.option("--limit", default=100, show_default=True, help="At most this many rows.")
@exits_on_config_error
def dlq_list(sink: str | None, limit: int) -> None:
    """List dead letters: sink, event id and type, attempts, last failure and reason."""
    journal = _journal()
    letters = journal.dead_letters(sink=sink, limit=limit)
    asyncio.run(journal.close())
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(
        f"{'SINK':<12} {'EVENT ID':<34} {'TYPE':<40} {'TRIES':>5} {'STATE':<7} {'FAILED AT':<20} REASON"
    )
    for letter in letters:
        failed_at = dt.datetime.fromtimestamp(letter.failed_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{letter.sink:<12} {letter.event_id:<34} {letter.event_type:<40} {letter.attempts:>5}"
            f" {letter.state:<7} {failed_at:<20} {letter.reason}"
        )


@dlq.command("replay")
@click.option("--sink", default=None, help="Only this sink's dead letters.")
@click.option("--event-id", default=None, help="Only this event.")
@exits_on_config_error
def dlq_replay(sink: str | None, event_id: str | None) -> None:
    """Mark dead letters for replay; the running service re-sends them within a second or two."""
    journal = _journal()

    async def replay() -> int:
        try:
            return await journal.request_replay(sink=sink, event_id=event_id)
        finally:
            await journal.close()

    count = asyncio.run(replay())
    click.echo(f"{count} dead letter(s) marked for replay; `workos-forwarder serve` re-sends them")


main.add_command(backfill)
main.add_command(datadog)
main.add_command(doctor)

if __name__ == "__main__":
    main()
