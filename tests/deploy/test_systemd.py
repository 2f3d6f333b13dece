"""deploy/systemd: the unit passes `systemd-analyze verify`, is hardened, leaves time to drain,
and its ExecStartPre check really rejects a bad configuration."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from forwarder.config import duration
from tests.deploy.podman import ROOT

SYSTEMD = ROOT / "deploy" / "systemd"
UNIT = SYSTEMD / "workos-forwarder.service"
INSTALLED = "/opt/workos-forwarder/bin/workos-forwarder"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian's systemd package; .ci/run installs it)"
        if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(f"SKIPPING SYSTEMD UNIT TESTS: {reason}")
    return path


def _unit_here(tmp_path: Path) -> Path:
    """The unit with its commands pointing at this machine's workos-forwarder.

    verify checks that every Exec command exists; here the package is installed in the test
    environment, not in /opt/workos-forwarder as the unit expects on a server.
    """
    here = shutil.which("workos-forwarder") or f"{sys.prefix}/bin/workos-forwarder"
    assert Path(here).exists(), "workos-forwarder is not installed (pip install -e .)"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, here))
    return copy


def _settings() -> dict[str, str]:
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, value)
    return settings


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = subprocess.run(
        [_tool("systemd-analyze"), "verify", str(_unit_here(tmp_path))], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    settings = _settings()
    assert settings["User"] == "workos-forwarder" and settings["StateDirectory"] == "workos-forwarder"
    assert settings["ProtectSystem"] == "strict" and settings["NoNewPrivileges"] == "yes"
    assert settings["EnvironmentFile"] == "/etc/workos-forwarder/env"
    assert settings["ExecStartPre"] == f"{INSTALLED} serve --check-config"
    assert settings["Restart"] == "on-failure"
    # systemd's own score: 0 (locked down) to 10 (exposed); "OK" is below 5.
    done = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=true", str(_unit_here(tmp_path))],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert score, done.stdout[-2000:] + done.stderr
    assert float(score.group(1)) <= 2.0, done.stdout


def _example_env() -> dict[str, str]:
    """deploy/systemd/workos-forwarder.env as systemd reads it (KEY=VALUE lines)."""
    lines = (SYSTEMD / "workos-forwarder.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_timeout_stop_covers_the_drain_with_the_example_settings() -> None:
    env = _example_env()
    drain_s = duration(env, "FORWARDER_DRAIN_DELAY", "0s")
    drain_s += 2 * duration(env, "FORWARDER_SHUTDOWN_TIMEOUT", "10s")
    assert duration(_settings(), "TimeoutStopSec", "90s") > drain_s


def test_the_exec_start_pre_check_passes_a_good_file_and_stops_a_bad_one(tmp_path: Path) -> None:
    env_file = _example_env()
    base = {"PATH": os.environ["PATH"], "FORWARDER_DATA_DIR": str(tmp_path)}
    check = [sys.executable, "-m", "forwarder.cli", "serve", "--check-config"]

    good = subprocess.run(check, env={**base, **env_file}, capture_output=True, text=True, timeout=60)
    assert good.returncode == 0 and "configuration OK" in good.stdout, good.stderr

    bad = {**base, **env_file, "FORWARDER_PORT": "eighty"}
    refused = subprocess.run(check, env=bad, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "FORWARDER_PORT" in refused.stderr and "whole number" in refused.stderr


def test_sysusers_creates_the_dedicated_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [_tool("systemd-sysusers"), f"--root={tmp_path}", str(SYSTEMD / "workos-forwarder.sysusers.conf")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (entry,) = [line for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line]
    name, _, uid, _, _, home, shell = entry.split(":")
    assert (name, home, shell) == ("workos-forwarder", "/var/lib/workos-forwarder", "/usr/sbin/nologin")
    assert 0 < int(uid) < 1000  # a system user
