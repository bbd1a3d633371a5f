"""The layers of monbridge, checked on the source.

Each module of ``bridge`` has one layer; a module imports only modules of its own layer or of
layers below it (and never one of a sibling layer: the server and the alert engine know each
other only through the runtime, which wires the parts together):

    api  ←  pipeline  ←  supervisor  ←  server | alerting  ←  dashboard  ←  runtime  ←  cli

``api`` is the plugin API and what every layer shares (config, registry, logs, tasks).
Plugins (``integrations``, ``collectors``, the example plugin) import from ``bridge`` only the
public modules in ``PUBLIC``.

Every import statement counts: at module level, in a function, under ``if TYPE_CHECKING``; so
does the package ``__init__`` an import runs (``bridge.alerting.settings`` runs
``bridge/alerting/__init__.py``). A new module of ``bridge`` gets its layer in ``LAYERS``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RANK = {"api": 0, "pipeline": 1, "supervisor": 2, "server": 3, "alerting": 3, "dashboard": 3.5, "runtime": 4, "cli": 5}

#: The layer of each module of ``bridge`` (``pkg.*``: every module of ``pkg`` not named itself).
LAYERS = {
    "bridge": "api",
    "bridge.api": "api",
    "bridge.apitypes": "api",  # the plugin API's data types and hooks (bridge.api loads it when first used)
    "bridge.config": "api",
    "bridge.registry": "api",
    "bridge.logs": "api",
    "bridge.tasks": "api",
    "bridge.lifecycle": "api",
    "bridge.httpbody": "api",
    "bridge.helpers": "api",
    "bridge.delivery": "api",
    "bridge.diskqueue": "api",
    "bridge.queued": "api",  # a sink's send queue and its delivery task
    "bridge.selector": "api",  # match[]-style series selectors
    "bridge.lazy": "api",  # names of public modules loaded when first used
    "bridge.listeners": "api",  # TLS and auth of listeners
    "bridge.accumulate": "api",
    "bridge.ledger": "api",  # the loss ledger (monbridge_dropped_total)
    "bridge.package": "api",  # signed plugin packages: manifest, signatures, trust store, install directory
    "bridge.isolation": "api",  # isolation, limits and grants of a plugin (models)  # delta to cumulative (pushed data)
    "bridge.limits": "api",  # a plugin worker's limits enforced from the agent (cgroups, /proc)
    "bridge.sandbox": "api",  # a plugin worker's sandbox (Landlock, seccomp, network namespace)
    "bridge.alerting": "api",  # a namespace: its __init__ imports nothing
    "bridge.alerting.settings": "api",  # the config's ``alerting:`` section
    "bridge.pipeline": "pipeline",
    "bridge.exposition": "pipeline",
    "bridge.otel": "pipeline",
    "bridge.sdk_input": "pipeline",  # the OTel metrics API as a pipeline input
    "bridge.prometheus": "pipeline",
    "bridge.supervisor": "supervisor",
    "bridge.wasmhost": "supervisor",  # the WASM plugin host (wasmtime, loaded when a WASM plugin is built)
    "bridge.wire": "pipeline",  # the agent <-> plugin worker codec
    "bridge.pluginhost": "supervisor",  # where a plugin runs: in process or in a worker process
    "bridge.worker": "supervisor",  # a plugin worker process's main
    "bridge.server": "server",
    "bridge.alerting.*": "alerting",
    "bridge.notifiers": "alerting",
    "bridge.dashboard": "api",  # a namespace: its __init__ imports nothing
    "bridge.dashboard.*": "dashboard",  # history, components and their API, the web UI
    "bridge.runtime": "runtime",
    "bridge.cli": "cli",
    "bridge.plugincli": "cli",  # monbridge plugin keygen|sign|verify|install|list
    "bridge.plugintest": "cli",  # monbridge test: each plugin run once
}

#: What plugins may import from ``bridge``: the plugin API.
PUBLIC = {
    "bridge",  # the plugin API's names and __version__
    "bridge.api",  # the plugin API: types, plugin ABCs, optional hooks
    "bridge.helpers",  # redaction, task and config helpers
    "bridge.notifiers",  # notifier and alert processor bases
    "bridge.otel",  # the pipeline's data as OTel SDK data
    "bridge.prometheus",  # the Prometheus text format and names
    "bridge.delivery",  # backoff, Retry-After, the durable queue
    "bridge.queued",  # a sink's send queue and its delivery task
    "bridge.ledger",  # the loss ledger every drop is counted in
}

PLUGIN_DIRS = ("integrations", "collectors", "tests/e2e/example_plugin")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def bridge_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "bridge").rglob("*.py"))}


def imports(path: Path, known: set[str]) -> Iterator[tuple[int, str]]:
    """(line, module) of every ``bridge`` module an import statement in ``path`` names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # ``from bridge import api`` imports the module bridge.api; ``from bridge import Metric`` bridge.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            if t == "bridge" or t.startswith("bridge."):
                yield node.lineno, t


def with_packages(module: str) -> list[str]:
    """``module`` and the packages importing it runs first (``a.b.c``: ``a``, ``a.b``, ``a.b.c``)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def layer_of(module: str) -> str | None:
    if module in LAYERS:
        return LAYERS[module]
    package = module.rpartition(".")[0]
    while package:
        if f"{package}.*" in LAYERS:
            return LAYERS[f"{package}.*"]
        package = package.rpartition(".")[0]
    return None


def may_import(importer: str, imported: str) -> bool:
    a, b = layer_of(importer), layer_of(imported)
    assert a is not None and b is not None
    return a == b or RANK[b] < RANK[a]


def test_every_bridge_module_has_a_layer():
    undeclared = sorted(m for m in bridge_modules() if layer_of(m) is None)
    assert undeclared == [], f"declare the layer of {undeclared} in LAYERS ({__file__})"


def test_no_layer_imports_a_layer_above_it_or_beside_it():
    modules = bridge_modules()
    known = set(modules)
    wrong = []
    for name, path in modules.items():
        for line, target in ((line, t) for line, m in imports(path, known) for t in with_packages(m)):
            if target in known and target != name and not may_import(name, target):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} ({layer_of(name)}) imports "
                             f"{target} ({layer_of(target)})")
    assert wrong == [], "layer violations:\n" + "\n".join(sorted(set(wrong)))


def test_plugins_import_public_modules_only():
    known = set(bridge_modules()) | PUBLIC
    wrong = []
    for d in PLUGIN_DIRS:
        for path in sorted((ROOT / d).rglob("*.py")):
            for line, target in imports(path, known):
                if target not in PUBLIC:
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}, not a public module")
    assert wrong == [], ("plugins import the plugin API from public modules only "
                         f"({', '.join(sorted(PUBLIC))}):\n" + "\n".join(sorted(set(wrong))))


def test_the_public_modules_are_documented_and_say_what_they_offer():
    for name in sorted(PUBLIC & set(bridge_modules())):
        path = bridge_modules()[name]
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or ""
        assert doc, f"{name} has no docstring"
        if name not in ("bridge", "bridge.api"):
            assert "Public plugin API" in doc, f"{name}'s docstring does not say it is public plugin API"
            exported = next((n for n in tree.body if isinstance(n, ast.Assign)
                             and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)), None)
            assert exported is not None, f"{name} has no __all__"


def test_the_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    # The analysis itself: function-level, TYPE_CHECKING, relative and from-package imports, and
    # the packages an import runs.
    pkg = tmp_path / "bridge" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "bridge" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    src = pkg / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from bridge.runtime import Runtime\n"
                   "def f():\n    import bridge.server\n"
                   "from . import other\n"
                   "from bridge import api, Metric\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = {t for _, t in imports(src, {"bridge.api", "bridge.sub.other"})}
    assert found == {"bridge", "bridge.runtime", "bridge.server", "bridge.sub.other", "bridge.api"}
    assert with_packages("bridge.alerting.settings") == ["bridge", "bridge.alerting", "bridge.alerting.settings"]
    assert not may_import("bridge.server", "bridge.alerting.engine")
    assert not may_import("bridge.alerting.engine", "bridge.runtime")
    assert may_import("bridge.runtime", "bridge.server") and may_import("bridge.supervisor", "bridge.pipeline")
