"""Dependencies point one way: sinks reach the forwarder only through ``sinks.base``.

``sinks/base.py`` is the whole contract between the core and its sinks. A sink that imports
``forwarder.config`` directly breaks when the core rearranges its modules, and a core module
that imports a sink ties the product to one destination. The rules are read from the source
with ``ast`` (every ``import``, at any depth, ``TYPE_CHECKING`` blocks included), so a lazy
import inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CORE_MAY_IMPORT_FROM_SINKS = {"sinks.base"}
"""The one module of ``sinks`` the core depends on: the protocol, its errors and ``load_sinks``."""

CORE_EXCEPTIONS = {
    # ``doctor`` checks the two built-in destinations with exactly the settings their sinks
    # use, so a value it passes is one the sink accepts: the Datadog intake address and sites
    # (from ``create``) and the OTLP exporter options (``exporter_options``), both public.
    # Nothing in the core imports ``forwarder.doctor`` but the CLI, and no sink imports it.
    "forwarder/doctor/datadog.py": {"sinks.datadog"},
    # Every request to Datadog names its sender with the headers the sink makes
    # (``sinks.datadog.identity_headers``): one place to change them, ``datadog apply`` included.
    "forwarder/datadog/apply.py": {"sinks.datadog"},
    "forwarder/doctor/otlp.py": {"sinks.otlp"},
    "forwarder/doctor/splunk_hec.py": {"sinks.splunk_hec"},
}

SINKS_MAY_IMPORT = {"sinks.base", "sinks.http", "sinks.request_deadline"}
"""A sink uses the contract, the shared HTTP machinery, and a helper module of the built-in
sinks (the OTLP sink's request deadline). Never another sink: each is registered on its own."""


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports from, as absolute dotted names (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # ``from sinks import datadog`` imports the module ``sinks.datadog``, while
            # ``from sinks import load_sinks`` takes a name from the package ``sinks``.
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                names.add(submodule if module_path(submodule) is not None else module)
    return names


def module_path(module: str) -> Path | None:
    """The project file of a dotted module name, or None for a name that is not a module."""
    stem = ROOT.joinpath(*module.split("."))
    for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def project_imports(path: Path, top: str) -> set[str]:
    """The modules of package ``top`` (``sinks``, ``forwarder``) that ``path`` imports."""
    return {name for name in imported_modules(path) if name == top or name.startswith(f"{top}.")}


def forwarder_closure(path: Path) -> set[str]:
    """The ``forwarder`` modules ``path`` loads, directly or through one another."""
    seen: set[str] = set()
    pending = list(project_imports(path, "forwarder"))
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        if (found := module_path(module)) is not None:
            pending.extend(project_imports(found, "forwarder"))
    return seen


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", sources("sinks"), ids=relative)
def test_sinks_reach_the_forwarder_only_through_sinks_base(path: Path) -> None:
    from_forwarder = project_imports(path, "forwarder")
    from_sinks = project_imports(path, "sinks") - {relative(path).removesuffix(".py").replace("/", ".")}
    if relative(path) == "sinks/base.py":
        assert from_sinks == set(), "sinks.base is the contract: it imports no sink"
        return
    assert from_forwarder == set(), f"{relative(path)}: import these through sinks.base instead"
    own_package = ".".join(relative(path).removesuffix(".py").split("/")[:2])  # sinks.<sink>
    if own_package.endswith("__init__"):
        own_package = own_package.removesuffix(".__init__")
    from_other_sinks = {
        name for name in from_sinks if name != own_package and not name.startswith(own_package + ".")
    }
    assert from_other_sinks <= SINKS_MAY_IMPORT, f"{relative(path)} imports another sink"


@pytest.mark.parametrize("path", sources("forwarder"), ids=relative)
def test_the_core_depends_on_sinks_base_only(path: Path) -> None:
    allowed = CORE_MAY_IMPORT_FROM_SINKS | CORE_EXCEPTIONS.get(relative(path), set())
    assert project_imports(path, "sinks") <= allowed, f"{relative(path)}: depend on sinks.base only"


@pytest.mark.parametrize("path", sources("forwarder"), ids=relative)
def test_the_core_takes_no_private_name_from_a_sink(path: Path) -> None:
    """Even an allowed exception goes through a sink's public functions, which say why they
    are public; a private helper may change with the sink."""
    tree = ast.parse(path.read_text(), filename=str(path))
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sinks"
        for alias in node.names
        if alias.name.startswith("_")
    ]
    assert private == [], f"{relative(path)} imports private names"


CONTRACT_LOADS = {
    "forwarder.records": "the record types",
    "forwarder.catalog": "what a record's event type means (the Prometheus sink's labels)",
    "forwarder.errors": "the errors a sink raises, and ConfigError",
    "forwarder.config_values": "the one-variable configuration parsers",
    "forwarder.retry_after": "the one Retry-After parser and its cap",
    "forwarder.isolation": "isolating refused records by halving",
    "forwarder.masking": "URLs without their secrets",
    "forwarder.metrics": "the metrics registry and the per-request sink metrics",
    "forwarder.loop_metrics": "the lock-free metric kinds forwarder.metrics is made of",
}
"""Everything of the forwarder ``import sinks.base`` may load, and why a sink needs it. The
core (normalization, configuration of the core, the journal, engines, delivery) is not here:
the arrow runs from the core to the contract, never back."""


def test_sinks_base_loads_only_what_a_sink_needs_from_the_forwarder() -> None:
    loaded = forwarder_closure(ROOT / "sinks" / "base.py")
    assert loaded <= set(CONTRACT_LOADS), f"sinks.base loads {sorted(loaded - set(CONTRACT_LOADS))}"
    assert {"forwarder.records", "forwarder.config_values", "forwarder.metrics"} <= loaded


def test_importing_sinks_base_loads_no_more_of_the_forwarder_than_that() -> None:
    """The same rule, as the interpreter sees it (a fresh process, nothing imported before)."""
    code = "import sys, sinks.base; print(sorted(m for m in sys.modules if m.startswith('forwarder.')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(ast.literal_eval(done.stdout)) <= set(CONTRACT_LOADS)


def test_what_sinks_base_loads_from_the_forwarder_does_not_import_sinks() -> None:
    """No cycle: what the contract re-exports, and all it loads in turn, never needs a sink."""
    for module in forwarder_closure(ROOT / "sinks" / "base.py"):
        path = module_path(module)
        assert path is not None, f"{module} is not a module of the project"
        assert project_imports(path, "sinks") == set(), f"{module} imports sinks: a cycle"


def test_the_record_types_import_nothing_from_the_project() -> None:
    path = ROOT / "forwarder" / "records.py"
    assert project_imports(path, "forwarder") | project_imports(path, "sinks") == set()


def test_the_exceptions_are_still_needed() -> None:
    """An exception nobody uses any more is a hole in the rule: remove it."""
    for name, modules in CORE_EXCEPTIONS.items():
        assert modules <= project_imports(ROOT / name, "sinks"), f"{name} no longer needs its exception"
