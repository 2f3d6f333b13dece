"""Podman on this machine for the container tests: can it run, the base image, the image.

Podman runs here as ``podman --runtime runc`` with small ulimits and the host network (crun
and the default ulimits fail in this sandbox). Without podman, runc or root the tests skip
with a loud reason, and fail instead under ``FORWARDER_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODMAN = ("podman", "--runtime", "runc")
SANDBOX_FLAGS = ("--network", "host", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
BASE_IMAGE = "localhost/workos-forwarder-base:bookworm"
IMAGE = "localhost/workos-forwarder:pytest"
UID = 10001
DATA_DIR = "/var/lib/workos-forwarder"


def skip_or_fail(reason: str) -> NoReturn:
    if os.environ.get("FORWARDER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"FORWARDER_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(f"SKIPPING CONTAINER TESTS: {reason}")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done


def require_podman() -> None:
    """Skip (or fail in CI) unless podman and runc are installed and we are root."""
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"{' and '.join(missing)} not installed (apt-get install podman runc; .ci/run does)")
    if os.geteuid() != 0:
        skip_or_fail("the container tests run rootful podman and so need root")
    info = podman("info", check=False, timeout=60)
    if info.returncode != 0:
        skip_or_fail(f"`podman --runtime runc info` fails here: {info.stderr.strip()[-500:]}")


def ensure_base_image() -> None:
    """The Debian bookworm base, made once with debootstrap and then kept in podman's store."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        skip_or_fail(
            "debootstrap is not installed and the base image is missing (apt-get install debootstrap)"
        )
    script = ROOT / "deploy" / "container" / "debian-base.sh"
    done = subprocess.run(["bash", str(script), BASE_IMAGE], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} failed: {done.stderr[-3000:]}"


def _pip_build_args() -> list[str]:
    """This machine's pip index and CA bundle (environment or pip config), for pip in the build."""
    settings = {key: value for key, value in os.environ.items() if key in ("PIP_INDEX_URL", "PIP_CERT")}
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    for key, value in re.findall(r"^[\w.]+\.(index-url|cert)='(.*)'$", listed, re.M):
        settings.setdefault(f"PIP_{key.replace('-', '_').upper()}", value)
    args = []
    for key, value in settings.items():
        if key == "PIP_CERT" and not Path(value).is_relative_to("/etc/ssl/certs"):
            continue  # only /etc/ssl/certs is mounted into the build
        args += ["--build-arg", f"{key}={value}"]
    return args


def build_image() -> float:
    """Build the repository's Dockerfile on the Debian base; return the seconds it took."""
    started = time.monotonic()
    podman(
        "build",
        *SANDBOX_FLAGS,
        "--volume",
        "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        *_pip_build_args(),
        "--tag",
        IMAGE,
        str(ROOT),
        timeout=900,
    )
    # Each build with changed sources leaves the previous build stage and image dangling
    # (hundreds of MB a run): drop those of this image, and only those.
    podman("image", "prune", "--force", "--filter", "label=org.opencontainers.image.title=workos-forwarder")
    return time.monotonic() - started


@dataclass
class Container:
    """One detached ``podman run`` of the image, on the host network."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return podman("logs", self.name).stdout

    def stderr(self) -> str:
        return podman("logs", self.name).stderr

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def stop(self, grace_s: int) -> float:
        """``podman stop`` with ``grace_s`` before SIGKILL; return the seconds it took."""
        started = time.monotonic()
        podman("stop", "--time", str(grace_s), self.name, timeout=grace_s + 30)
        return time.monotonic() - started

    def exit_code(self) -> int:
        return int(self.inspect("{{.State.ExitCode}}"))
