"""docs/writing-a-sink.md works as written: its code blocks build a plugin that loads and delivers.

Every code block of the page that starts with ``# file: <path>`` is written to that path; the
package's entry point is installed from its own ``pyproject.toml`` (a ``.dist-info`` on
``PYTHONPATH``, which is what ``pip install`` leaves behind); then the page's own test runs,
``serve --check-config`` names the sink, and the real service delivers webhooks through it to
the page's own double.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from tests.samples import make_event
from tests.service import SECRET, Service, wait_for

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "writing-a-sink.md"
_BLOCK = re.compile(r"^```[a-z]*\n# file: (?P<path>\S+)\n(?P<body>.*?)^```", re.S | re.M)


def build_example(into: Path) -> Path:
    """Write the page's files under ``into``; install the entry point; the package's folder."""
    blocks = {match["path"]: match["body"] for match in _BLOCK.finditer(PAGE.read_text())}
    assert {"acme-sink/pyproject.toml", "acme-sink/acme_sink.py", "acme-sink/test_acme_sink.py"} <= set(
        blocks
    )
    for path, body in blocks.items():
        (into / path).parent.mkdir(parents=True, exist_ok=True)
        (into / path).write_text(body)
    package = into / "acme-sink"
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    info = package / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
            for group, points in groups.items()
        )
    )
    return package


def with_package(package: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")]))}


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_pages_own_test_passes_against_its_double(tmp_path: Path) -> None:
    package = build_example(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "test_acme_sink.py")],
        cwd=package,
        env={**os.environ, **with_package(package)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_the_plugin_loads_and_delivers_through_the_service(
    tmp_path: Path, start_service: Callable[..., Service]
) -> None:
    package = build_example(tmp_path)
    sys.path.insert(0, str(package))
    try:
        double = load_module(package / "test_acme_sink.py").AcmeDouble()
    finally:
        sys.path.remove(str(package))
        sys.modules.pop("acme_sink", None)
    env = {**with_package(package), "ACME_URL": double.url, "ACME_TOKEN": "acme-test-token"}

    check = subprocess.run(
        [sys.executable, "-m", "forwarder.cli", "serve", "--check-config"],
        env={**os.environ, "WORKOS_WEBHOOK_SECRET": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert "acme" in check.stdout  # "how to confirm it loaded"

    service = start_service(**env)
    events = [make_event("user.created") for _ in range(5)]
    assert [service.post(event).status_code for event in events] == [200] * 5
    wanted = {event["id"] for event in events}
    wait_for(
        lambda: wanted <= {record["workos"]["id"] for record in double.received},
        what="every event at the page's double",
    )
    assert service.status()["sinks"]["acme"]["healthy"] is True
    double.server.shutdown()
