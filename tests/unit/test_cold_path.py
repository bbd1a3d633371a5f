"""What ``monbridge validate`` leaves out, beyond the import graph of ``test_import_graph.py``
(no timing here: benchmarks/bench_startup.py times it). pydantic's plugin loader is not imported
(it imports ``importlib.metadata``, and with it email, zipfile, csv and socket, only to look for
plugins the command disables); nor the plugin API's data types and hooks (``bridge.apitypes``,
loaded by ``bridge.api`` when one is first used); no heavy optional library is; and the config models a typical
agent's config is validated with give an empty list as a value, not as ``default_factory=list``,
whose signature pydantic reads for each such field, with ``tokenize``, when it builds the model."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]


def _bench_startup() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_startup", ROOT / "benchmarks" / "bench_startup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The typical agent's config benchmarks/bench_startup.py times (host metrics, a Prometheus scrape
#: target with relabelling, remote write, OTLP push and receivers, a webhook notifier).
AGENT: str = _bench_startup().AGENT_CONFIG

#: Packages the command never needs: the plugin API's data types, pydantic's plugin loader and
#: what it imports, and the heavy libraries of the plugins' code and of the runtime.
NOT_LOADED = ("bridge.apitypes", "pydantic.plugin._loader", "importlib.metadata", "email", "zipfile", "csv", "socket",
              "asyncio", "opentelemetry", "aiohttp", "grpc", "google.protobuf", "wasmtime", "cryptography", "psutil")


def modules_after_validate(tmp_path: Path, config: str, env_extra: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(config)
    probe = ("import json, sys\nfrom bridge.cli import main\n"
             f"try:\n    main(['validate', '--config', {str(path)!r}])\n"
             "except SystemExit as e:\n    assert e.code == 0, e.code\n"
             "print(json.dumps(sorted(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout.splitlines()[-1]))


def found(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_validating_an_agent_config_loads_no_plugin_loader_nor_heavy_library(tmp_path):
    modules = modules_after_validate(tmp_path, AGENT)
    assert {"integrations.prometheus.config", "integrations.otlp_config", "collectors.config"} <= set(modules)
    assert found(modules, NOT_LOADED) == []


def test_validating_host_metrics_loads_not_even_logging(tmp_path):
    # the embedded default's plugin: the registry loads logging only when it has something to log
    modules = modules_after_validate(tmp_path, "plugins:\n  - plugin_id: monitoring.metrics.system\n")
    assert "collectors.config" in modules
    assert found(modules, (*NOT_LOADED, "logging")) == []


def test_with_pydantic_plugins_named_by_the_user_the_loader_is_the_real_one(tmp_path):
    # PYDANTIC_DISABLE_PLUGINS set by the user: pydantic looks for the plugins not named, as always
    modules = modules_after_validate(tmp_path, AGENT, {"PYDANTIC_DISABLE_PLUGINS": "logfire"})
    assert {"pydantic.plugin._loader", "importlib.metadata"} <= set(modules)


def models_of(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every model its fields hold (in unions, lists, mappings, ...)."""
    seen: set[type[BaseModel]] = set()

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp not in seen:
                seen.add(tp)
                for f in tp.model_fields.values():
                    walk(f.annotation)
            return
        if typing.get_origin(tp) is not None or isinstance(tp, types.UnionType):
            for arg in typing.get_args(tp):
                walk(arg)

    walk(model)
    return seen


def test_the_agents_config_models_give_empty_lists_as_values():
    from bridge.config import MonbridgeConfig
    from bridge.registry import PluginRegistry

    registry = PluginRegistry().discover()
    roots = [MonbridgeConfig] + [registry.entry(pid).config_model() for pid in (
        "monitoring.metrics.system", "monitoring.metrics.process", "monitoring.integration.prometheus",
        "monitoring.integration.otlp", "monitoring.alerts.webhook")]
    models = set().union(*map(models_of, roots))
    assert len(models) > 20
    # a class's signature is read from its text signature (``list``: "(iterable=(), /)") by tokenize
    builtin_factories = sorted(f"{m.__module__}.{m.__qualname__}.{name}" for m in models
                               for name, f in m.model_fields.items()
                               if isinstance(f.default_factory, type) and f.default_factory.__module__ == "builtins"
                               and getattr(f.default_factory, "__text_signature__", None))
    assert builtin_factories == []


def test_the_plugin_apis_data_types_load_on_first_use(tmp_path):
    probe = ("import sys\nimport bridge.api\nbefore = 'bridge.apitypes' in sys.modules\n"
             "from bridge.api import Metric\nprint(before, 'bridge.apitypes' in sys.modules, Metric.__module__)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["False", "True", "bridge.apitypes"]

    import bridge
    import bridge.api
    import bridge.apitypes

    lazy = [name for name in bridge.api.__all__ if hasattr(bridge.apitypes, name)]
    assert {"Metric", "ExportResult", "Alert", "MetricBatch", "PluginMetadata", "export_failure"} <= set(lazy)
    assert set(bridge.api.__all__) <= set(dir(bridge.api))
    for name in lazy:
        assert getattr(bridge.api, name) is getattr(bridge.apitypes, name), name
    assert bridge.Metric is bridge.apitypes.Metric
    with pytest.raises(AttributeError, match="NoSuchName"):
        bridge.api.NoSuchName  # noqa: B018
