"""Shared fixtures: a factory of real service processes on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from forwarder.datadog.cli import datadog
from tests.doubles.datadog_api import API_KEY, APP_KEY, DatadogApi
from tests.service import Service, kill_quietly

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start the real ``workos-forwarder serve``; every one started is killed at the end."""
    started: list[Service] = []

    def start(*, name: str = "svc", wait: bool = True, **env: str) -> Service:
        service = Service(data_dir=tmp_path / name, env=dict(env))
        started.append(service)
        return service.start(wait=wait)

    yield start
    for service in started:
        kill_quietly(service)


def with_flaky_sink(tmp_path: Path, mode: str = "ok") -> dict[str, str]:
    """Environment that loads the test plugin sink from tests/plugins, controlled by a file."""
    control = tmp_path / "flaky.control"
    control.write_text(mode)
    python_path = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
    return {
        "PYTHONPATH": python_path,
        "FLAKY_SINK_CONTROL": str(control),
        "FLAKY_SINK_OUT": str(tmp_path / "flaky.out"),
    }


REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatadogApi]:
    """The Datadog API double, with the variables `datadog apply` reads pointing at it."""
    with DatadogApi() as server:
        monkeypatch.setenv("DD_API_KEY", API_KEY)
        monkeypatch.setenv("DD_APP_KEY", APP_KEY)
        monkeypatch.setenv("DD_API_URL", server.base_url)
        monkeypatch.delenv("DD_SITE", raising=False)
        yield server


def apply(root: Path = REPO, *args: str) -> Result:
    """`workos-forwarder datadog apply --root root` in process."""
    return CliRunner().invoke(datadog, ["apply", "--root", str(root), *args])
