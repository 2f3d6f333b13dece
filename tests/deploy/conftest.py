"""Fixtures for the container tests: the image built once per session, containers, volumes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.deploy.podman import (
    DATA_DIR,
    IMAGE,
    SANDBOX_FLAGS,
    Container,
    build_image,
    ensure_base_image,
    podman,
    require_podman,
)
from tests.service import SECRET, free_port


@pytest.fixture(scope="session")
def image() -> str:
    """The Dockerfile built on the Debian base (the slow part: about 40 s, less when cached)."""
    require_podman()
    ensure_base_image()
    seconds = build_image()
    print(f"\nimage {IMAGE} built in {seconds:.0f} s")
    return IMAGE


@pytest.fixture
def volume() -> Iterator[str]:
    """A named volume for the journal, removed at the end."""
    name = f"workos-forwarder-test-{uuid.uuid4().hex[:10]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture
def run_container(image: str) -> Iterator[Callable[..., Container]]:
    """Start the image read-only with a journal volume; every container is removed at the end."""
    started: list[Container] = []

    def run(volume: str, **env: str) -> Container:
        container = Container(name=f"workos-forwarder-test-{uuid.uuid4().hex[:10]}", port=free_port())
        settings = {
            "WORKOS_WEBHOOK_SECRET": SECRET,
            "FORWARDER_PORT": str(container.port),
            "FORWARDER_ADMIN_PORT": str(free_port()),  # host network: the image's 8081 may be taken
            **env,
        }
        podman(
            "run",
            "--detach",
            "--name",
            container.name,
            "--read-only",
            "--read-only-tmpfs=false",  # as in Kubernetes: no writable /tmp or /run either
            *SANDBOX_FLAGS,
            "--volume",
            f"{volume}:{DATA_DIR}",
            *(arg for key, value in settings.items() for arg in ("--env", f"{key}={value}")),
            image,
        )
        started.append(container)
        return container

    yield run
    for container in started:
        podman("rm", "--force", "--time", "0", container.name, check=False)
