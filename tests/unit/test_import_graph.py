"""What the cold paths load (the import graph, not its time: timings are in
benchmarks/bench_startup.py). ``monbridge --version`` loads no more than the command line;
``import bridge.config`` and ``monbridge validate`` load neither the alert engine, the runtime,
the server nor the OTel SDK's trace, log and metric parts (they are loaded where they run), nor
the code of a built-in plugin whose config model lives apart from it (psutil, the notifiers' HTTP
client and outbox, the Prometheus bridge's scrape loop and remote writer, the OTLP exporter and
receivers); the public modules ``bridge.notifiers`` and ``bridge.helpers`` load each name
with the module defining it, when first used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Loaded where they run (``monbridge run``), never by reading or checking a config.
RUN_TIME_ONLY = (
    "bridge.alerting.engine",
    "bridge.runtime",
    "bridge.server",
    "bridge.supervisor",
    "bridge.pipeline",
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk._logs",
    "opentelemetry.sdk.metrics",
    "aiohttp",
    "grpc",
)

#: The code of plugins whose config models live apart from it, and what only that code uses.
LOADED_ONLY_TO_RUN = (
    "collectors.system",
    "collectors.process",
    "psutil",
    "integrations.webhook",
    "bridge.alerting.httpclient",
    "bridge.alerting.notify",
    "bridge.alerting.tickets",
    "bridge.delivery",
    "bridge.diskqueue",
)

#: The code of the Prometheus and OTLP integrations, whose config models live apart from it
#: (``integrations/prometheus/config.py``, ``integrations/otlp_config.py``), and what it runs on.
INTEGRATIONS_CODE = (
    "integrations.prometheus.plugin",
    "integrations.prometheus.scrape",
    "integrations.prometheus.textparse",
    "integrations.prometheus.remote_write",
    "integrations.prometheus.file_sd",
    "integrations.prometheus.sharding",
    "integrations.otlp",  # the exporter (integrations.otlp_config is another module)
    "integrations.otlp_receive",
    "integrations.otlp_wire",
    "aiohttp",
    "grpc",
    "opentelemetry.sdk",
    "opentelemetry.proto",
)

#: A typical agent's Prometheus and OTLP integrations: scrape configs with relabelling, remote
#: write with an on-disk queue, federation, a Pushgateway, OTLP push with TLS and both receivers.
INTEGRATIONS_CONFIG = """\
plugins:
  - plugin_id: monitoring.integration.prometheus
    config:
      scrape:
        interval: 15
        targets:
          - {job: node, url: "http://127.0.0.1:9100/metrics", labels: {env: prod}}
        file_sd: [TARGETS/*.json]
        metric_relabel_configs:
          - {source_labels: [__name__], regex: "go_(gc|memstats)_.*", action: drop}
          - {source_labels: [instance], regex: "([^:]+):.*", target_label: host, replacement: "$$1"}
          - {regex: "pod_template_hash", action: labeldrop}
      remote_write:
        - url: "http://127.0.0.1:9090/api/v1/write"
          basic_auth: {username: agent, password: secret-pw}
          queue: {path: QUEUE, shards: 2, max_samples_per_send: 1000}
      federate: [{url: "http://127.0.0.1:9090", match: ['{job="node"}']}]
      pushgateway: {url: "http://127.0.0.1:9091", job: agent, match: [up]}
      export_alerts: {url: "http://127.0.0.1:9093"}
  - plugin_id: monitoring.integration.otlp
    config:
      endpoint: "https://collector.example:4317"
      protocol: grpc
      compression: gzip
      headers: {x-api-key: secret-key}
      temporality: delta
      receive:
        grpc: {listen: "127.0.0.1:4317"}
        http: {listen: "127.0.0.1:4318", max_request_bytes: 1048576}
        promote_resource_attributes: [service.version]
"""

CONFIG = """\
plugins:
  - plugin_id: monitoring.metrics.system
  - plugin_id: monitoring.metrics.process
  - plugin_id: monitoring.integration.prometheus
    config:
      scrape: {targets: [{job: node, url: "http://127.0.0.1:9100/metrics"}]}
  - plugin_id: monitoring.integration.otlp
    config: {endpoint: "http://127.0.0.1:4318", protocol: grpc}
  - plugin_id: monitoring.alerts.webhook
    config: {url: "http://127.0.0.1:5001/hook"}
  - plugin_id: monitoring.alerts.rules
    config: {rules: [{name: HighLoad, metric: system.cpu.load_average.1m, op: ">", threshold: 4}]}
  - plugin_id: monitoring.alerts.grouping
alerting: {state_dir: STATE}
"""


def loaded_after(code: str, tmp_path: Path) -> set[str]:
    """The modules in sys.modules after ``code`` ran in a fresh interpreter."""
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def loaded_validating(config: Path, tmp_path: Path) -> set[str]:
    """The modules in sys.modules after ``monbridge validate --config config`` passed."""
    return loaded_after(f"from bridge.cli import main\n"
                        f"try:\n    main(['validate', '--config', {str(config)!r}])\n"
                        f"except SystemExit as e:\n    assert e.code == 0, e.code", tmp_path)


def check_lazy_names(module: Any) -> None:
    """Every name of ``module.__all__`` is listed by dir(); an unknown name is an AttributeError."""
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="NoSuchName"):
        module.NoSuchName  # noqa: B018


def found(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_import_bridge_config_loads_no_run_time_part(tmp_path):
    modules = loaded_after("import bridge.config", tmp_path)
    assert "bridge.config" in modules
    assert found(modules, RUN_TIME_ONLY) == []


def test_version_loads_the_command_line_only(tmp_path):
    modules = loaded_after("from bridge.cli import main\n"
                           "try:\n    main(['--version'])\nexcept SystemExit:\n    pass", tmp_path)
    assert "bridge.cli" in modules
    assert found(modules, ("bridge",)) == ["bridge", "bridge.cli"]
    assert found(modules, ("pydantic", "yaml", "asyncio", "opentelemetry", "bridge.api")) == []


def test_validating_host_metrics_loads_no_event_loop(tmp_path):
    config = tmp_path / "host.yaml"
    config.write_text("plugins:\n  - plugin_id: monitoring.metrics.system\n")
    modules = loaded_validating(config, tmp_path)
    # the collector's config model validated it, without the collector (psutil) ...
    assert "collectors.config" in modules
    assert found(modules, LOADED_ONLY_TO_RUN) == []
    assert found(modules, (*RUN_TIME_ONLY, "asyncio")) == []


def test_validating_a_webhook_loads_no_notifier_code(tmp_path):
    config = tmp_path / "hook.yaml"
    config.write_text("plugins:\n  - plugin_id: monitoring.metrics.system\n"
                      "  - plugin_id: monitoring.alerts.webhook\n    config: {url: 'http://127.0.0.1:5001/hook'}\n")
    modules = loaded_validating(config, tmp_path)
    assert {"integrations.config", "bridge.alerting.notifyconfig"} <= modules
    assert found(modules, (*RUN_TIME_ONLY, *LOADED_ONLY_TO_RUN, "asyncio")) == []


def test_the_public_modules_load_a_name_with_its_module_only(tmp_path):
    modules = loaded_after("from bridge.notifiers import NotifierConfig\nfrom bridge.helpers import peer_excerpt", tmp_path)
    assert found(modules, ("bridge",)) == ["bridge", "bridge.alerting", "bridge.alerting.model",
                                           "bridge.alerting.notifyconfig", "bridge.api", "bridge.helpers",
                                           "bridge.lazy", "bridge.logs", "bridge.notifiers"]
    import bridge.helpers
    import bridge.notifiers

    for module in (bridge.helpers, bridge.notifiers):
        for name in module.__all__:
            assert getattr(module, name) is not None, name
        check_lazy_names(module)
    assert bridge.notifiers.NotifierConfig is bridge.notifiers.Notifier.config_model


def test_validate_loads_no_run_time_part(tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG.replace("STATE", json.dumps(str(tmp_path / "state"))))
    modules = loaded_validating(config, tmp_path)
    # the plugins of the config were loaded (their config models validated it) ...
    assert {"integrations.otlp_config", "integrations.prometheus.config", "bridge.alerting.rules", "collectors.config",
            "integrations.config"} <= modules
    # (the collectors', the webhook's, the Prometheus and the OTLP integrations' models live apart
    # from their code, which is not loaded)
    assert found(modules, ("collectors.system", "collectors.process", "psutil", "integrations.webhook",
                           *INTEGRATIONS_CODE)) == []
    # ... and nothing that only runs
    assert found(modules, RUN_TIME_ONLY) == []


def test_validating_the_prometheus_and_otlp_integrations_loads_none_of_their_code(tmp_path):
    config = tmp_path / "integrations.yaml"
    config.write_text(INTEGRATIONS_CONFIG.replace("TARGETS", str(tmp_path / "targets"))
                      .replace("QUEUE", str(tmp_path / "queue")))
    modules = loaded_validating(config, tmp_path)
    # the config models validated it (relabelling rules with their regular expressions compiled) ...
    assert {"integrations.prometheus.config", "integrations.prometheus.relabel", "integrations.otlp_config"} <= modules
    # ... without the code that scrapes, relabels samples, writes, pushes or receives
    assert found(modules, (*INTEGRATIONS_CODE, *RUN_TIME_ONLY, "bridge.delivery", "bridge.otel", "asyncio")) == []


def test_the_integrations_config_models_check_what_they_checked(tmp_path):
    """Apart from the plugins' code, the models still say what is wrong and where."""
    bad = (INTEGRATIONS_CONFIG.replace("TARGETS", str(tmp_path / "targets")).replace("QUEUE", str(tmp_path / "queue"))
           .replace('regex: "go_(gc|memstats)_.*"', 'regex: "go_(?=x)"')
           .replace("max_request_bytes: 1048576", "max_request_byte: 1048576"))
    config = tmp_path / "bad.yaml"
    config.write_text(bad)
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "validate", "--config", str(config)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "metric_relabel_configs[0].regex" in out.stderr and "not a valid RE2 regular expression" in out.stderr
    assert "receive.http.max_request_byte" in out.stderr and "max_request_bytes" in out.stderr  # did you mean
    assert "secret-pw" not in out.stderr + out.stdout and "secret-key" not in out.stderr + out.stdout


def test_the_plugin_api_names_of_bridge_load_on_first_use(tmp_path):
    modules = loaded_after("import bridge", tmp_path)
    assert found(modules, ("bridge", "pydantic")) == ["bridge"]
    import bridge
    import bridge.api

    for name in bridge.__all__:
        if name != "__version__":
            assert getattr(bridge, name) is getattr(bridge.api, name), name
    check_lazy_names(bridge)
