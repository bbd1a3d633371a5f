"""The Helm chart, rendered by Helm's own engine: lint, Kubernetes schemas, the monbridge config
it generates, security settings, the values schema, cross-field failures and golden renderings.

Golden files: ``helm/monbridge/examples/<scenario>/``. After a deliberate chart change, regenerate
them with ``UPDATE_GOLDEN=1 .venv/bin/pytest tests/helm`` and review the diff.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.helm.chart import (
    CHART_DIR,
    EXAMPLES_DIR,
    NOTES,
    REPO,
    config_text,
    golden_text,
    manifests,
    monbridge_container,
    only,
    render,
    scenario_values,
    scenarios,
    workload,
)

SCENARIOS = scenarios()
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest that
# kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
# Prometheus Operator custom resources: kubernetes-validate has schemas for built-in kinds only.
# These are checked by hand in test_monitors_scrape_the_http_port instead.
CRD_KINDS = {"ServiceMonitor", "PodMonitor"}
# Schema nodes that accept any keys: Kubernetes objects passed through as they are (Kubernetes
# validates them; test_manifests_match_kubernetes_schemas renders them) and each plugin's own
# config (monbridge validate checks it).
PASSTHROUGH = {
    "/global",
    "/config/plugins/items/config",
    "/extraEnv/items/valueFrom",
    "/extraVolumes/items",
    "/networkPolicy/ingressFrom/items/podSelector",
    "/networkPolicy/ingressFrom/items/namespaceSelector",
    "/networkPolicy/egress/rules/items/to/items/podSelector",
    "/networkPolicy/egress/rules/items/to/items/namespaceSelector",
    "/serviceMonitor/tlsConfig",
    "/podMonitor/tlsConfig",
    "/affinity/nodeAffinity",
    "/affinity/podAffinity",
    "/affinity/podAntiAffinity",
    "/topologySpreadConstraints/items",
}


@pytest.fixture(scope="module", params=SCENARIOS)
def scenario(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(scenario: str) -> dict[str, str]:
    return render(scenario_values(scenario))


@pytest.fixture(scope="module")
def docs(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return manifests(rendered)


def with_values(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with dotted keys set: with_values(v, **{"presets.hostMetrics.enabled": False})."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


# --------------------------------------------------------------------------- scenarios and lint


def test_ci_scenarios_cover_every_mode_and_preset() -> None:
    values = {name: scenario_values(name) for name in SCENARIOS}
    modes = {v.get("mode", "daemonset") for v in values.values()}
    assert modes == {"daemonset", "deployment", "statefulset"}
    for preset in ("hostMetrics", "otlpExport", "prometheusScrape", "alerting"):
        assert any(render_enabled_preset(v, preset) for v in values.values()), f"no ci scenario enables presets.{preset}"
    sharding = [v.get("presets", {}).get("prometheusScrape", {}).get("sharding", {}) for v in values.values()]
    assert any(s.get("enabled") for s in sharding), "no ci scenario enables presets.prometheusScrape.sharding"


def render_enabled_preset(values: dict[str, Any], preset: str) -> bool:
    with helm.Chart.load(CHART_DIR) as chart:
        merged = chart.merge_values(values)
    return bool(merged["presets"][preset]["enabled"])


@pytest.mark.parametrize("name", ["(defaults)", *SCENARIOS])
def test_lint_has_no_errors_or_warnings(name: str) -> None:
    values = {} if name == "(defaults)" else scenario_values(name)
    report = helm.lint(CHART_DIR, values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], json.dumps(report, indent=2)


# --------------------------------------------------------------------------- Kubernetes schemas


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_match_kubernetes_schemas(docs: list[dict[str, Any]], kube_version: str) -> None:
    assert docs, "nothing rendered"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name} is invalid for Kubernetes {kube_version}: {'.'.join(map(str, e.path))}: {e.message}")


def test_monitors_scrape_the_http_port(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            continue
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        endpoints = doc["spec"]["endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints"]
        assert [(e["port"], e["path"]) for e in endpoints] == [("http", "/metrics")]
        assert doc["spec"]["selector"]["matchLabels"] == workload(docs)["spec"]["selector"]["matchLabels"]
        if doc["kind"] == "ServiceMonitor":
            services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service" and _selects(doc["spec"]["selector"], d)]
            assert len(services) == 1, f"the ServiceMonitor selects {services}: each pod would be scraped once per Service"


def _selects(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    """Whether a Kubernetes LabelSelector (matchLabels, matchExpressions) selects ``obj``."""
    labels = obj["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        ok = {"In": present and value in e.get("values", []), "NotIn": not present or value not in e.get("values", []),
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


# --------------------------------------------------------------------------- the monbridge config

_FILE_REF = re.compile(r"\$\{file:(/[^}]+)\}")


def _pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes would set it, Secrets replaced by stand-ins."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = {"metadata.name": "monbridge-0", "metadata.namespace": "monitoring",
                                "spec.nodeName": "node-1"}[source["fieldRef"]["fieldPath"]]
        elif var["name"].endswith(("ENDPOINT", "_URL")):
            env[var["name"]] = "http://backend.example:4318"  # the value the Secret would hold
        else:
            env[var["name"]] = "stand-in-secret-value"
    return env


def test_rendered_config_passes_monbridge_validate(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """`monbridge validate` accepts the ConfigMap's config in the pod's environment (and only that:
    every ${VAR} must be set by the pod spec, every ${file:...} must lie in a mounted volume)."""
    container = monbridge_container(docs)
    text = config_text(docs)
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container["volumeMounts"]]
    for path in _FILE_REF.findall(text):
        assert any(path.startswith(m) for m in mounts), f"${{file:{path}}} is not inside a volume mount {mounts}"
        stand_in = tmp_path / "mounts" / path.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("stand-in-secret-value\n")
    text = _FILE_REF.sub(lambda m: "${file:" + str(tmp_path / "mounts" / m.group(1).lstrip("/")) + "}", text)
    config = tmp_path / "config.yaml"
    config.write_text(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **_pod_env(container)}
    result = subprocess.run([sys.executable, "-m", "bridge.cli", "validate", "--config", str(config)],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, f"monbridge validate failed:\n{result.stdout}{result.stderr}\n--- config:\n{text}"


def test_config_listens_on_the_probed_port(docs: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(config_text(docs))
    port = monbridge_container(docs)["ports"][0]["containerPort"]
    assert config["server"]["listen"].rsplit(":", 1)[1] == str(port)


def test_no_secret_values_in_the_config() -> None:
    docs = manifests(render(scenario_values("otlp-export")))
    text = config_text(docs)
    config = yaml.safe_load(text)
    otlp = next(p for p in config["plugins"] if p["plugin_id"] == "monitoring.integration.otlp")
    assert otlp["config"]["endpoint"] == "${MONBRIDGE_OTLP_ENDPOINT}"
    assert otlp["config"]["headers"] == {"authorization": "${MONBRIDGE_OTLP_HEADER_AUTHORIZATION}",
                                         "x-scope-orgid": "${MONBRIDGE_OTLP_HEADER_X_SCOPE_ORGID}"}
    env = {e["name"]: e.get("valueFrom") for e in monbridge_container(docs)["env"]}
    assert env["MONBRIDGE_OTLP_HEADER_AUTHORIZATION"] == {"secretKeyRef": {"name": "otlp-backend", "key": "authorization"}}
    assert env["MONBRIDGE_OTLP_ENDPOINT"] == {"secretKeyRef": {"name": "otlp-backend", "key": "endpoint"}}


def test_config_merges_over_presets_by_plugin_id() -> None:
    values = {
        "presets": {"otlpExport": {"enabled": True, "endpoint": "http://collector:4318"}},
        "config": {
            "pipeline": {"cardinality_limit": 500},
            "plugins": [
                # false overrides the preset's true (a plain Sprig merge would keep true)
                {"plugin_id": "monitoring.metrics.system", "enabled": False},
                {"plugin_id": "monitoring.integration.otlp", "config": {"interval": 5, "headers": {"x-a": "${A}"}}},
                {"plugin_id": "monitoring.metrics.process", "config": {"match": [{"name": "nginx"}]}},
            ],
        },
    }
    config = yaml.safe_load(config_text(manifests(render(values))))
    plugins = {p["plugin_id"]: p for p in config["plugins"]}
    assert list(plugins) == ["monitoring.metrics.system", "monitoring.integration.otlp", "monitoring.metrics.process"]
    assert plugins["monitoring.metrics.system"]["enabled"] is False
    assert plugins["monitoring.metrics.system"]["config"]["procfs_path"] == "/host/proc"
    assert plugins["monitoring.integration.otlp"]["config"] == {
        "endpoint": "http://collector:4318", "protocol": "http/protobuf", "compression": "gzip",
        "interval": 5, "headers": {"x-a": "${A}"},
    }
    assert config["pipeline"] == {"cardinality_limit": 500}
    assert config["server"]["listen"] == "0.0.0.0:9464"


# --------------------------------------------------------------------------- pod security and probes


def test_pod_is_non_root_read_only_and_probed(docs: list[dict[str, Any]]) -> None:
    pod = workload(docs)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    c = monbridge_container(docs)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in sc and "add" not in sc["capabilities"]
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["livenessProbe"]["httpGet"]["port"] == c["readinessProbe"]["httpGet"]["port"] == c["ports"][0]["name"]
    assert c["args"][:3] == ["run", "--config", "/etc/monbridge/config.yaml"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/monbridge"].get("readOnly") is True
    host_paths = {v["name"] for v in pod["volumes"] if "hostPath" in v}
    for m in c["volumeMounts"]:
        if m["name"] in host_paths:
            assert m.get("readOnly") is True, f"hostPath volume {m['name']} is mounted writable"


def test_defaults_are_a_host_metrics_daemonset_without_resources() -> None:
    docs = manifests(render())
    assert workload(docs)["kind"] == "DaemonSet"
    c = monbridge_container(docs)
    assert "resources" not in c
    with helm.Chart.load(CHART_DIR) as chart:
        assert c["image"] == f"ghcr.io/monbridge/monbridge:{chart.metadata['appVersion']}"
    assert {"name": "PROCFS_PATH", "value": "/host/proc"} in c["env"]
    assert {"name": "MONBRIDGE_ROOTFS", "value": "/host/root"} in c["env"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mounts["/host/proc"]]["hostPath"]["path"] == "/proc"
    assert volumes[mounts["/host/sys"]]["hostPath"]["path"] == "/sys"
    assert volumes[mounts["/host/root"]]["hostPath"] == {"path": "/", "type": "Directory"}
    root_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/host/root")
    # the node's mounts, including ones made after the pod started; never writable
    assert root_mount["mountPropagation"] == "HostToContainer"
    assert root_mount["readOnly"] is True
    config = yaml.safe_load(config_text(docs))
    assert [p["plugin_id"] for p in config["plugins"]] == ["monitoring.metrics.system"]
    assert config["plugins"][0]["config"]["procfs_path"] == "/host/proc"
    assert config["plugins"][0]["config"]["rootfs_path"] == "/host/root"
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "DaemonSet", "Service", "ServiceAccount"]  # no RBAC: nothing needs it


def test_chart_app_version_is_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with helm.Chart.load(CHART_DIR) as chart:
        assert chart.metadata["appVersion"] == project["version"]


def test_tls_switches_probes_and_monitors_to_https() -> None:
    values = {
        "config": {"server": {"tls": {"cert_file": "/etc/monbridge-tls/tls.crt", "key_file": "/etc/monbridge-tls/tls.key"}}},
        "podMonitor": {"enabled": True, "tlsConfig": {"insecureSkipVerify": True}},
    }
    docs = manifests(render(values))
    c = monbridge_container(docs)
    assert c["livenessProbe"]["httpGet"]["scheme"] == c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    endpoint = only(docs, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}


# --------------------------------------------------------------------------- checksum


def _checksum(values: dict[str, Any]) -> str:
    return workload(manifests(render(values)))["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_checksum_annotation_rolls_pods_on_config_changes_only() -> None:
    base = _checksum({})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert _checksum({"config": {"pipeline": {"cardinality_limit": 123}}}) != base
    assert _checksum({"presets": {"hostMetrics": {"collectionInterval": 30}}}) != base
    assert _checksum({"podLabels": {"team": "sre"}}) == base


# --------------------------------------------------------------------------- values schema


def test_values_schema_is_strict_and_documented() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_nodes = set()

    def walk(node: dict[str, Any], where: str) -> None:
        # Every field and every object has a description; array items that are plain strings need none.
        if not where.endswith("/items") or node.get("type") == "object":
            assert node.get("description"), f"{where or '/'}: no description"
        if node.get("type") == "object" or "properties" in node:
            ap = node.get("additionalProperties")
            assert ap is not None, f"{where}: additionalProperties is not set"
            if ap is True:
                open_nodes.add(where)
            elif isinstance(ap, dict) and "properties" in ap:
                walk(ap, where + "/*")
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{where}/{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], where + "/items")

    walk(schema, "")
    assert open_nodes == PASSTHROUGH


def test_values_yaml_documents_every_top_level_key() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mode": "sidecar"}, "at '/mode': value must be one of 'daemonset', 'deployment', 'statefulset'"),
        ({"replica": 3}, "additional properties 'replica' not allowed"),
        ({"presets": {"hostMetrics": {"enabled": "yes"}}}, "at '/presets/hostMetrics/enabled': got string, want boolean"),
        ({"presets": {"prometheusScrape": {"enabled": True, "target": []}}},
         "at '/presets/prometheusScrape': additional properties 'target' not allowed"),
        ({"presets": {"prometheusScrape": {"targets": [{"url": "http://a:9100/metrics"}]}}},
         "at '/presets/prometheusScrape/targets/0': missing property 'job'"),
        ({"presets": {"prometheusScrape": {"targets": [{"job": "node", "url": "10.0.0.1:9100"}]}}},
         "at '/presets/prometheusScrape/targets/0/url'"),
        ({"presets": {"prometheusScrape": {"targets": [{"job": "n", "url": "http://a:1/m", "labels": {"__x": "1"}}]}}},
         "invalid propertyName '__x'"),
        ({"presets": {"prometheusScrape": {"interval": 0}}}, "at '/presets/prometheusScrape/interval'"),
        ({"presets": {"prometheusScrape": {"sharding": {"enabled": True, "count": 3}}}},
         "at '/presets/prometheusScrape/sharding': additional properties 'count' not allowed"),
        ({"presets": {"prometheusScrape": {"remoteWrite": {"password": "s3cr3t"}}}},
         "at '/presets/prometheusScrape/remoteWrite': additional properties 'password' not allowed"),
        ({"presets": {"prometheusScrape": {"remoteWrite": {"queue": {"maxBytes": 1000}}}}},
         "at '/presets/prometheusScrape/remoteWrite/queue/maxBytes'"),
        ({"presets": {"prometheusScrape": {"remoteWrite": {"queue": {"persistence": {"size": "lots"}}}}}},
         "at '/presets/prometheusScrape/remoteWrite/queue/persistence/size'"),
        ({"port": 70000}, "at '/port'"),
        ({"config": {"plugins": [{"plugin_id": "system"}]}}, "at '/config/plugins/0/plugin_id'"),
        ({"config": {"plugins": [{"enabled": True}]}}, "at '/config/plugins/0': missing property 'plugin_id'"),
        ({"config": {"server": {"listen": "9464"}}}, "at '/config/server/listen'"),
        ({"config": {"serve": {}}}, "at '/config': additional properties 'serve' not allowed"),
        ({"presets": {"otlpExport": {"protocol": "http"}}}, "at '/presets/otlpExport/protocol'"),
        ({"serviceMonitor": {"interval": "30"}}, "at '/serviceMonitor/interval'"),
        ({"presets": {"alerting": {"email": {"password": "s3cr3t"}}}},
         "at '/presets/alerting/email': additional properties 'password' not allowed"),
        ({"presets": {"alerting": {"rules": [{"name": "A", "metric": "m"}]}}},
         "at '/presets/alerting/rules/0': missing property 'threshold'"),
        ({"presets": {"alerting": {"rules": [{"name": "A", "metric": "m", "threshold": 1, "aggregate": "p99"}]}}},
         "at '/presets/alerting/rules/0/aggregate'"),
        ({"presets": {"alerting": {"webhook": {"url": "receiver:5001"}}}}, "at '/presets/alerting/webhook/url'"),
        ({"presets": {"alerting": {"email": {"smtp": "smtp.example.org"}}}}, "at '/presets/alerting/email/smtp'"),
    ],
)
def test_values_that_break_the_schema_fail_rendering(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as e:
        render(values)
    assert "values don't meet the specifications of the schema" in str(e.value)
    assert message in str(e.value)


# --------------------------------------------------------------------------- contradictions

NO_HOST = {"presets": {"hostMetrics": {"enabled": False}},
           "config": {"plugins": [{"plugin_id": "monitoring.metrics.process"}]}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"autoscaling": {"enabled": True}}, "autoscaling.enabled=true needs mode: deployment (mode is daemonset)"),
        ({**NO_HOST, "mode": "statefulset", "autoscaling": {"enabled": True}},
         "autoscaling.enabled=true needs mode: deployment (mode is statefulset)"),
        ({**NO_HOST, "mode": "deployment", "autoscaling": {"enabled": True}},
         "autoscaling.targetCPUUtilizationPercentage is a percentage of the CPU request, but resources.requests.cpu is not set"),
        ({**NO_HOST, "mode": "deployment", "resources": {"requests": {"cpu": "100m"}},
          "autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
         "autoscaling.minReplicas (5) is greater than autoscaling.maxReplicas (2)"),
        ({"mode": "deployment"}, "presets.hostMetrics needs mode: daemonset (mode is deployment)"),
        ({"presets": {"hostMetrics": {"enabled": False}}}, "no monbridge plugin is enabled"),
        ({"config": {"plugins": [{"plugin_id": "monitoring.metrics.system", "enabled": False}]}},
         "no monbridge plugin is enabled"),
        ({"presets": {"otlpExport": {"enabled": True}}}, "presets.otlpExport.enabled=true needs a destination"),
        ({"presets": {"otlpExport": {"enabled": True, "endpoint": "http://a:4318", "secretName": "s", "endpointKey": "e"}}},
         "set either endpoint (a plain URL) or endpointKey"),
        ({"presets": {"otlpExport": {"enabled": True, "endpoint": "http://a:4318", "headers": {"authorization": "auth"}}}},
         "set presets.otlpExport.secretName"),
        ({"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
         "serviceMonitor.enabled and podMonitor.enabled are both true"),
        ({"serviceMonitor": {"enabled": True}, "service": {"enabled": False}},
         "serviceMonitor.enabled=true needs service.enabled=true"),
        ({"podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
         "podDisruptionBudget: set minAvailable or maxUnavailable, not both"),
        ({"networkPolicy": {"enabled": True}, "hostNetwork": True},
         "networkPolicy.enabled=true has no effect with hostNetwork=true"),
        ({"config": {"server": {"listen": "0.0.0.0:8080"}}},
         "config.server.listen (0.0.0.0:8080) uses a port other than port (9464)"),
        ({"config": {"server": {"auth": {"bearer_token": "s3cr3t"}}}},
         "config.server.auth.bearer_token must be a reference, not the token itself"),
        ({"config": {"server": {"auth": {"basic": {"username": "u", "password": "pw"}}}}},
         "config.server.auth.basic.password must be a reference"),
        ({"config": {"server": {"auth": {"bearer_token": "${TOKEN}"}}}, "podMonitor": {"enabled": True}},
         "so the podMonitor needs the token: set podMonitor.bearerTokenSecret.name and .key"),
        ({"serviceMonitor": {"enabled": True, "bearerTokenSecret": {"name": "t", "key": "k"}}},
         "serviceMonitor.bearerTokenSecret is set but config.server.auth.bearer_token is not"),
    ],
)
def test_contradictory_values_fail_with_an_actionable_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)


SCRAPE = {"enabled": True, "targets": [{"job": "node", "url": "http://10.0.0.1:9100/metrics"}]}
SCRAPE_ONLY = {"hostMetrics": {"enabled": False}, "prometheusScrape": SCRAPE}
SHARDED = {"mode": "statefulset", "replicas": 3,
           "presets": {**SCRAPE_ONLY, "prometheusScrape": {**SCRAPE, "sharding": {"enabled": True}}}}


def _scrape(**changes: Any) -> dict[str, Any]:
    """Values with only presets.prometheusScrape (in mode deployment), its fields changed."""
    return {"mode": "deployment", "presets": {**SCRAPE_ONLY, "prometheusScrape": {**SCRAPE, **changes}}}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (_scrape(targets=[]), "presets.prometheusScrape.enabled=true has nothing to scrape"),
        (_scrape(timeout=20), "presets.prometheusScrape.timeout (20 s) is greater than presets.prometheusScrape.interval (15 s)"),
        (_scrape(remoteWrite={"url": "http://p:9090/api/v1/write", "secretName": "rw", "urlKey": "url"}),
         "presets.prometheusScrape.remoteWrite: set either url (a plain URL) or urlKey"),
        (_scrape(remoteWrite={"url": "http://p:9090/api/v1/write", "headers": {"x-scope-orgid": "tenant"},
                              "bearerTokenKey": "token"}),
         "presets.prometheusScrape.remoteWrite.headers, bearerTokenKey name keys of a Secret: set "
         "presets.prometheusScrape.remoteWrite.secretName"),
        (_scrape(remoteWrite={"secretName": "rw", "bearerTokenKey": "token"}),
         "presets.prometheusScrape.remoteWrite has credentials but no destination"),
        (_scrape(remoteWrite={"url": "http://p:9090/api/v1/write", "secretName": "rw", "bearerTokenKey": "token",
                              "headers": {"Authorization": "auth"}}),
         "presets.prometheusScrape.remoteWrite: set only one of bearerTokenKey and an authorization header"),
        (_scrape(remoteWrite={"url": "http://p:9090/api/v1/write", "basicAuth": {"username": "u"}}),
         "presets.prometheusScrape.remoteWrite.basicAuth.username needs basicAuth.passwordKey"),
        (_scrape(remoteWrite={"url": "http://p:9090/api/v1/write", "queue": {"persistence": {"enabled": True}}}),
         "presets.prometheusScrape.remoteWrite.queue.persistence needs mode: statefulset (mode is deployment)"),
        (with_values(SHARDED, **{"presets.prometheusScrape.remoteWrite": {"queue": {"persistence": {"enabled": True}}}}),
         "presets.prometheusScrape.remoteWrite.queue.persistence.enabled=true, but there is no remote write to queue"),
        (_scrape(sharding={"enabled": True}),
         "presets.prometheusScrape.sharding needs mode: statefulset (mode is deployment): each pod takes its shard from its "
         "StatefulSet ordinal"),
        ({**_scrape(sharding={"enabled": True}), "mode": "daemonset"},
         "presets.prometheusScrape.sharding needs mode: statefulset (mode is daemonset)"),
        (with_values(SHARDED, **{"autoscaling.enabled": True}),
         "presets.prometheusScrape.sharding with autoscaling.enabled=true: the shard count is fixed to replicas"),
        (with_values(SHARDED, replicas=0), "presets.prometheusScrape.sharding needs replicas >= 1 (replicas is 0)"),
        (with_values(SHARDED, hostNetwork=True),
         "presets.prometheusScrape.sharding with hostNetwork=true: on the node's network a pod's HOSTNAME is the node's name"),
        (with_values(SHARDED, extraEnv=[{"name": "MONBRIDGE_SHARD_INDEX", "value": "0"}]),
         "extraEnv sets MONBRIDGE_SHARD_INDEX, but presets.prometheusScrape.sharding sets the shard itself"),
        (with_values(SHARDED, **{"presets.prometheusScrape.enabled": False},
                     config={"plugins": [{"plugin_id": "monitoring.metrics.process"}]}),
         "presets.prometheusScrape.sharding.enabled=true, but no enabled monitoring.integration.prometheus plugin scrapes"),
        (with_values(SHARDED, config={"plugins": [{"plugin_id": "monitoring.integration.prometheus",
                                                   "config": {"scrape": {"shard": {"index": 0, "count": 3}}}}]}),
         "config.plugins sets scrape.shard of monitoring.integration.prometheus"),
    ],
)
def test_scrape_and_sharding_contradictions_fail_with_an_actionable_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)


# --------------------------------------------------------------------------- prometheusScrape and sharding


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_sharded_statefulset_sets_the_shard_count_to_replicas() -> None:
    for replicas in (1, 2, 5):
        docs = manifests(render(with_values(SHARDED, replicas=replicas)))
        sts = only(docs, "StatefulSet")
        assert sts["spec"]["replicas"] == replicas
        env = _env(monbridge_container(docs))
        assert env["MONBRIDGE_SHARD_COUNT"] == str(replicas)
        assert "MONBRIDGE_SHARD_INDEX" not in env and "HOSTNAME" not in env  # the ordinal comes from the pod's HOSTNAME
        assert "shard" not in yaml.safe_load(config_text(docs))["plugins"][0]["config"]["scrape"]


def test_sharded_pods_each_take_their_ordinal_as_shard() -> None:
    """The pod environment the chart renders, with the HOSTNAME Kubernetes gives each StatefulSet pod,
    yields shards 0 .. replicas-1: what the plugin reads when it starts."""
    from integrations.prometheus.sharding import shard_from_env

    docs = manifests(render(scenario_values("sharding")))
    sts = only(docs, "StatefulSet")
    replicas = sts["spec"]["replicas"]
    env = _pod_env(monbridge_container(docs))
    shards = [shard_from_env({**env, "HOSTNAME": f"{sts['metadata']['name']}-{i}"}) for i in range(replicas)]
    assert shards == [(i, replicas) for i in range(replicas)]


def test_without_sharding_no_shard_is_set() -> None:
    for values in (with_values(SHARDED, **{"presets.prometheusScrape.sharding.enabled": False}), _scrape(),
                   scenario_values("statefulset")):
        env = _env(monbridge_container(manifests(render(values))))
        assert not {"MONBRIDGE_SHARD_COUNT", "MONBRIDGE_SHARD_INDEX"} & set(env)


def test_prometheus_scrape_preset_config_and_secrets() -> None:
    docs = manifests(render(scenario_values("prometheus-scrape")))
    config = yaml.safe_load(config_text(docs))
    prom = next(p for p in config["plugins"] if p["plugin_id"] == "monitoring.integration.prometheus")
    scrape = prom["config"]["scrape"]
    assert scrape["interval"] == 30 and scrape["timeout"] == 10 and scrape["sample_limit"] == 50000
    assert scrape["targets"][0] == {"job": "node", "url": "http://10.0.0.1:9100/metrics", "labels": {"team": "infra"}}
    assert scrape["targets"][2] == {"job": "kube-state-metrics", "url": "http://kube-state-metrics.kube-system.svc:8080/metrics"}
    assert scrape["file_sd"] == ["/etc/monbridge-targets/*.json", "/etc/monbridge-targets/*.yaml", "/etc/monbridge-targets/*.yml"]
    assert scrape["file_sd_job"] == "discovered"
    [rw] = prom["config"]["remote_write"]
    assert rw == {"url": "${env:MONBRIDGE_RW_URL}",
                  "headers": {"authorization": "${env:MONBRIDGE_RW_HEADER_AUTHORIZATION}",
                              "x-scope-orgid": "${env:MONBRIDGE_RW_HEADER_X_SCOPE_ORGID}"},
                  "queue": {"path": "/var/lib/monbridge/remote-write", "max_bytes": 536870912}}
    c = monbridge_container(docs)
    env = _env(c)
    assert env["MONBRIDGE_RW_URL"] == {"secretKeyRef": {"name": "remote-write", "key": "url"}}
    assert env["MONBRIDGE_RW_HEADER_AUTHORIZATION"] == {"secretKeyRef": {"name": "remote-write", "key": "authorization"}}
    assert env["MONBRIDGE_RW_HEADER_X_SCOPE_ORGID"] == {"secretKeyRef": {"name": "remote-write", "key": "tenant"}}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in workload(docs)["spec"]["template"]["spec"]["volumes"]}
    assert mounts["/etc/monbridge-targets"]["readOnly"] is True
    assert volumes[mounts["/etc/monbridge-targets"]["name"]]["configMap"] == {"name": "scrape-targets"}
    # the queue (512 MiB) fits its emptyDir: maxBytes plus a quarter and 16Mi
    assert volumes[mounts["/var/lib/monbridge"]["name"]]["emptyDir"] == {"sizeLimit": "656Mi"}


def test_sharding_scenario_keeps_each_pods_queue_on_its_own_claim() -> None:
    docs = manifests(render(scenario_values("sharding")))
    sts = only(docs, "StatefulSet")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "queue"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    pod = sts["spec"]["template"]["spec"]
    assert "queue" not in {v["name"] for v in pod["volumes"]}  # the claim, not an emptyDir
    assert pod["securityContext"]["fsGroup"] == 10001  # the non-root user can write the claim
    assert {"name": "queue", "mountPath": "/var/lib/monbridge"} in monbridge_container(docs)["volumeMounts"]
    [rw] = yaml.safe_load(config_text(docs))["plugins"][0]["config"]["remote_write"]
    assert rw["basic_auth"] == {"username": "monbridge", "password": "${env:MONBRIDGE_RW_PASSWORD}"}
    password = _env(monbridge_container(docs))["MONBRIDGE_RW_PASSWORD"]
    assert password == {"secretKeyRef": {"name": "remote-write", "key": "password"}}
    # without a size, the claim is sized like the emptyDir would be
    no_size = {"presets.prometheusScrape.remoteWrite.queue.persistence.size": ""}
    values = with_values(scenario_values("sharding"), **no_size)
    claim = only(manifests(render(values)), "StatefulSet")["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1296Mi"


def test_notes_say_how_targets_are_split() -> None:
    sharded = render(scenario_values("sharding"))[NOTES]
    assert "pod monbridge-<i> scrapes shard i" in sharded
    assert "about 1/3 of the targets each; together the 3 pods scrape every target exactly once" in sharded
    assert "every replica scrapes every target" not in sharded and "no sharding yet" not in sharded
    unsharded = render(with_values(SHARDED, **{"presets.prometheusScrape.sharding.enabled": False}))[NOTES]
    assert "every replica scrapes every target. Set presets.prometheusScrape.sharding.enabled=true" in unsharded
    assert "scrapes shard" not in unsharded
    deployment = render({**_scrape(), "replicas": 2})[NOTES]
    assert "every replica scrapes every target. To split the targets across replicas, use mode statefulset" in deployment
    daemonset = render({"presets": {"prometheusScrape": SCRAPE}})[NOTES]
    assert "Every node's pod scrapes every target" in daemonset
    single = render(with_values(SHARDED, replicas=1))[NOTES]
    assert "which with 1 replica is every target" in single


def test_default_release_takes_state_changing_requests_only_with_credentials_or_from_the_pod() -> None:
    """The chart listens on all interfaces (Prometheus and the probes reach the pod's IP), so
    /-/reload and the alert write API must not be open: without config.server.auth monbridge takes
    them from loopback clients only (kubectl port-forward and exec), and its Service's names pass
    the Host check for clients that have the credentials."""
    from bridge.config import parse_config
    from bridge.registry import PluginRegistry

    text = config_text(manifests(render({})))
    server = parse_config(text, "config.yaml", PluginRegistry().discover(), env={}).model.server
    assert server.listen == "0.0.0.0:9464" and server.auth is None
    assert server.unauthenticated_writes_from, "the default must name the loopback networks"
    assert all(net.is_loopback for net in server.unauthenticated_writes_from)
    assert server.allowed_origins == []
    assert server.allowed_hosts == ["monbridge", "monbridge.monitoring", "monbridge.monitoring.svc",
                                    "monbridge.monitoring.svc.cluster.local"]
    assert "allowed_hosts" not in yaml.safe_load(config_text(manifests(render({"service": {"enabled": False}}))))["server"]


def test_listen_host_may_change_when_the_port_agrees() -> None:
    config = yaml.safe_load(config_text(manifests(render({"config": {"server": {"listen": "[::]:9464"}}}))))
    assert config["server"]["listen"] == "[::]:9464"


# --------------------------------------------------------------------------- NOTES and goldens


def test_notes_name_the_enabled_plugins(rendered: dict[str, str], docs: list[dict[str, Any]]) -> None:
    notes = rendered[NOTES]
    config = yaml.safe_load(config_text(docs))
    for p in config["plugins"]:
        assert (f"  - {p['plugin_id']}\n" in notes) == p.get("enabled", True), p["plugin_id"]
    assert f"port-forward {workload(docs)['kind'].lower()}/monbridge 9464" in notes


def test_golden_rendering(scenario: str, rendered: dict[str, str]) -> None:
    """The rendering equals helm/monbridge/examples/<scenario>/; UPDATE_GOLDEN=1 rewrites them."""
    expected = {"rendered.yaml": golden_text(rendered), "NOTES.txt": rendered[NOTES].strip("\n") + "\n"}
    folder = EXAMPLES_DIR / scenario
    if os.environ.get("UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in expected.items():
            (folder / name).write_text(text)
    for name, text in expected.items():
        path = folder / name
        current = path.read_text() if path.exists() else ""
        if current != text:
            diff = "".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                f"{path.relative_to(REPO)} (checked in)", "rendered now"))
            pytest.fail(f"{path.relative_to(REPO)} is out of date. If the change is intended, regenerate the golden "
                        f"files with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/helm` and review them.\n{diff}", pytrace=False)


def test_no_golden_folder_without_a_scenario() -> None:
    folders = sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_dir())
    assert folders == SCENARIOS, "every examples/<scenario>/ needs ci/<scenario>-values.yaml and the reverse; " \
                                 "delete stale folders, then run UPDATE_GOLDEN=1 .venv/bin/pytest tests/helm"


# --------------------------------------------------------------------------- alerting

RULE = {"name": "NodeDown", "metric": "up", "match": {"job": "node"}, "aggregate": "min", "op": "<", "threshold": 1,
        "for": 60, "severity": "critical"}
ALERTING = {"mode": "statefulset", "presets": {**SCRAPE_ONLY, "alerting": {"enabled": True, "rules": [RULE]}}}


def _alerting(**changes: Any) -> dict[str, Any]:
    """ALERTING (one statefulset replica scraping and alerting) with dotted keys under presets.alerting changed."""
    return with_values(ALERTING, **{f"presets.alerting.{k}": v for k, v in changes.items()})


def _plugins(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["plugin_id"]: p for p in yaml.safe_load(config_text(docs))["plugins"]}


def test_alerting_preset_config_notifiers_and_secrets_by_reference() -> None:
    docs = manifests(render(scenario_values("alerting")))
    text = config_text(docs)
    config = yaml.safe_load(text)
    assert config["alerting"] == {"state_dir": "/var/lib/monbridge-alerting", "outbox_dir": "/var/lib/monbridge-alerting/outbox",
                                  "external_url": "https://monbridge.example.org"}
    plugins = _plugins(docs)
    assert [p for p in plugins if p.startswith("monitoring.alerts.")] == [
        "monitoring.alerts.rules", "monitoring.alerts.dedup", "monitoring.alerts.grouping", "monitoring.alerts.webhook",
        "monitoring.alerts.alertmanager", "monitoring.alerts.email"]  # processor-chain order
    rules = plugins["monitoring.alerts.rules"]["config"]
    assert rules["evaluation_interval"] == 15
    assert rules["rules"][0] == {"name": "NodeLoadHigh", "metric": "node_load1", "match": {"job": "node"}, "aggregate": "max",
                                 "op": ">", "threshold": 8, "for": 120, "severity": "warning", "labels": {"team": "infra"},
                                 "annotations": {"summary": "load {{ value }} on a node"}}
    assert plugins["monitoring.alerts.grouping"]["config"] == {"group_by": ["alertname", "team"], "group_wait": 30,
                                                               "group_interval": 300, "repeat_interval": 3600}
    assert plugins["monitoring.alerts.webhook"]["config"] == {
        "url": "http://alert-receiver.monitoring.svc:5001/hook", "send_resolved": True,
        "headers": {"authorization": "${env:MONBRIDGE_WEBHOOK_HEADER_AUTHORIZATION}"}}
    assert plugins["monitoring.alerts.alertmanager"]["config"] == {"url": "http://alertmanager.monitoring.svc:9093",
                                                                   "match": {"severity": "critical"}}
    assert plugins["monitoring.alerts.email"]["config"] == {
        "smtp": "smtp.example.org:587", "from": "monbridge@example.org", "to": ["oncall@example.org"], "starttls": True,
        "tls": False, "send_resolved": True, "username": "monbridge", "password": "${env:MONBRIDGE_SMTP_PASSWORD}"}
    env = _env(monbridge_container(docs))
    assert env["MONBRIDGE_SMTP_PASSWORD"] == {"secretKeyRef": {"name": "alert-notifiers", "key": "smtp-password"}}
    assert env["MONBRIDGE_WEBHOOK_HEADER_AUTHORIZATION"] == {"secretKeyRef": {"name": "alert-notifiers",
                                                                              "key": "webhook-authorization"}}
    # Only references: no Secret value or Secret object is rendered.
    assert not [d for d in docs if d["kind"] == "Secret"]
    assert "smtp-password" not in text and "webhook-authorization" not in text


def test_alerting_state_is_on_a_claim_with_persistence() -> None:
    docs = manifests(render(scenario_values("alerting")))
    sts = only(docs, "StatefulSet")
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "alert-state"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    pod = sts["spec"]["template"]["spec"]
    assert "alert-state" not in {v["name"] for v in pod["volumes"]}
    assert pod["securityContext"]["fsGroup"] == 10001  # the non-root user can write the claim
    assert {"name": "alert-state", "mountPath": "/var/lib/monbridge-alerting"} in monbridge_container(docs)["volumeMounts"]
    # Both claims, when the remote-write queue is persistent too; the size defaults to sizeLimit.
    values = with_values(scenario_values("sharding"), replicas=1, **{"presets.alerting": {
        "enabled": True, "rules": [RULE], "state": {"sizeLimit": "128Mi", "persistence": {"enabled": True}}}})
    claims = only(manifests(render(values)), "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert [(c["metadata"]["name"], c["spec"]["resources"]["requests"]["storage"]) for c in claims] == [
        ("queue", "2Gi"), ("alert-state", "128Mi")]


def test_alerting_state_is_on_an_emptydir_by_default() -> None:
    for values in (ALERTING, with_values(ALERTING, mode="deployment")):
        docs = manifests(render(values))
        pod = workload(docs)["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["alert-state"]["emptyDir"] == {"sizeLimit": "256Mi"}
        assert "fsGroup" not in pod["securityContext"]
        assert "volumeClaimTemplates" not in workload(docs)["spec"]
        mounts = {m["mountPath"]: m["name"] for m in monbridge_container(docs)["volumeMounts"]}
        assert mounts["/var/lib/monbridge-alerting"] == "alert-state"
        assert yaml.safe_load(config_text(docs))["alerting"]["state_dir"] == "/var/lib/monbridge-alerting"
    # A Deployment replaces its pod without overlap: never two alert engines at once.
    deployment = only(manifests(render(with_values(ALERTING, mode="deployment"))), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "strategy" not in only(manifests(render(_scrape())), "Deployment")["spec"]


def test_alerting_without_notifiers_has_rules_and_processors_only() -> None:
    docs = manifests(render(ALERTING))
    plugins = _plugins(docs)
    assert [p for p in plugins if p.startswith("monitoring.alerts.")] == [
        "monitoring.alerts.rules", "monitoring.alerts.dedup", "monitoring.alerts.grouping"]
    assert plugins["monitoring.alerts.grouping"]["config"] == {"group_by": ["alertname"], "group_wait": 30,
                                                               "group_interval": 300, "repeat_interval": 14400}
    assert "alerting" in yaml.safe_load(config_text(docs)) and "external_url" not in yaml.safe_load(config_text(docs))["alerting"]
    assert "No notifier is set" in render(ALERTING)[NOTES]
    assert "monitoring.alerts.dedup" not in _plugins(manifests(render(_alerting(dedup=False))))
    # the user's config.plugins merge into the preset's entries by plugin_id
    values = with_values(ALERTING, config={"plugins": [
        {"plugin_id": "monitoring.alerts.grouping", "config": {"group_wait": 5}},
        {"plugin_id": "monitoring.alerts.inhibit", "config": {"rules": [{"source_match": {"severity": "critical"},
                                                                          "target_match": {"severity": "warning"}}]}}]})
    plugins = _plugins(manifests(render(values)))
    assert plugins["monitoring.alerts.grouping"]["config"]["group_wait"] == 5
    assert plugins["monitoring.alerts.grouping"]["config"]["repeat_interval"] == 14400
    assert list(plugins)[-1] == "monitoring.alerts.inhibit"


def test_multiple_engines_label_their_alerts(tmp_path: Path) -> None:
    daemonset = with_values(ALERTING, mode="daemonset", **{"presets.alerting.multipleEngines": True})
    rules = _plugins(manifests(render(daemonset)))["monitoring.alerts.rules"]["config"]["rules"]
    assert rules[0]["labels"] == {"node": "${env:NODE_NAME}"}
    values = with_values(ALERTING, replicas=2, **{"presets.alerting.multipleEngines": True,
                                                  "presets.alerting.rules": [{**RULE, "labels": {"team": "infra", "pod": "x"}}]})
    docs = manifests(render(values))
    rules = _plugins(docs)["monitoring.alerts.rules"]["config"]["rules"]
    assert rules[0]["labels"] == {"team": "infra", "pod": "x"}  # the user's label wins
    notes = render(values)[NOTES]
    assert "Each pod runs its own alert engine (multipleEngines)" in notes
    test_rendered_config_passes_monbridge_validate(manifests(render(daemonset)), tmp_path)


def test_notes_say_how_to_reach_the_alerts() -> None:
    notes = render(scenario_values("alerting"))[NOTES]
    assert "- url: http://monbridge.monitoring.svc:9464/api/v1/alerts/alertmanager" in notes
    assert "kubectl -n monitoring port-forward statefulset/monbridge 9464" in notes
    assert "monbridge alerts --url http://127.0.0.1:9464 list" in notes
    assert "monbridge alerts --url http://127.0.0.1:9464 ack ALERT_ID" in notes
    assert "The pods start only once Secret alert-notifiers exists with key(s): webhook-authorization smtp-password." in notes
    assert "PersistentVolumeClaim alert-state-monbridge-<i>" in notes
    emptydir = render(ALERTING)[NOTES]
    assert "an emptyDir: they survive container restarts, not the pod's deletion" in emptydir
    secured = render(with_values(ALERTING, config={"server": {"auth": {"bearer_token": "${TOKEN}"}}}))[NOTES]
    assert 'monbridge alerts --url http://127.0.0.1:9464 --bearer-token "$TOKEN" list' in secured
    assert "credentials_file" in secured
    assert "/api/v1/alerts/alertmanager" not in render({})[NOTES]


def test_no_later_release_text_remains() -> None:
    for path in [*CHART_DIR.rglob("*.tpl"), *CHART_DIR.rglob("*.txt"), *CHART_DIR.glob("*.yaml"), *CHART_DIR.glob("*.json"),
                 CHART_DIR / "README.md"]:
        text = path.read_text()
        assert "later release" not in text and "not available yet" not in text, path


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (with_values(ALERTING, mode="daemonset"),
         "presets.alerting in mode daemonset would run one alert engine per node"),
        (with_values(ALERTING, replicas=3),
         "presets.alerting with replicas=3 would run 3 alert engines on the same metrics: every alert would be notified 3 times"),
        (with_values(ALERTING, mode="deployment", replicas=2), "presets.alerting with replicas=2"),
        (with_values(ALERTING, mode="deployment", resources={"requests": {"cpu": "100m"}}, **{"autoscaling.enabled": True}),
         "presets.alerting with autoscaling.enabled=true"),
        (with_values(ALERTING, mode="deployment", **{"presets.alerting.state.persistence.enabled": True}),
         "presets.alerting.state.persistence needs mode: statefulset (mode is deployment)"),
        (_alerting(rules=[RULE, RULE]), "presets.alerting.rules: the rule name NodeDown is used twice"),
        (_alerting(webhook={"url": "http://r:5001/hook", "headers": {"authorization": "auth"}}),
         "presets.alerting.webhook.headers name keys of a Secret: set presets.alerting.webhook.secretName"),
        (_alerting(alertmanager={"match": {"severity": "critical"}}),
         "presets.alerting.alertmanager has settings but no url"),
        (_alerting(email={"smtp": "smtp.example.org:587"}),
         "the email notifier needs a sender and recipients: set presets.alerting.email.from and presets.alerting.email.to"),
        (_alerting(email={"smtp": "smtp.example.org:465", "from": "a@example.org", "to": ["b@example.org"], "tls": True}),
         "presets.alerting.email: tls (implicit TLS, port 465) and starttls exclude each other"),
        (_alerting(email={"smtp": "smtp.example.org:587", "from": "a@example.org", "to": ["b@example.org"], "username": "u"}),
         "presets.alerting.email.username needs presets.alerting.email.passwordKey"),
        (_alerting(email={"smtp": "smtp.example.org:587", "from": "a@example.org", "to": ["b@example.org"], "passwordKey": "p"}),
         "presets.alerting.email.passwordKey needs presets.alerting.email.username"),
        (_alerting(email={"smtp": "smtp.example.org:587", "from": "a@example.org", "to": ["b@example.org"], "username": "u",
                          "passwordKey": "p"}),
         "presets.alerting.email.passwordKey names a key of a Secret: set presets.alerting.email.secretName"),
        (_alerting(email={"to": ["b@example.org"]}), "presets.alerting.email has settings but no SMTP server"),
        (with_values(ALERTING, config={"alerting": {"state_dir": "/data"}}),
         "config.alerting.state_dir is set, but presets.alerting keeps the alert state on its volume at "
         "/var/lib/monbridge-alerting"),
        (with_values(ALERTING, **{"presets.alerting.externalURL": "https://a.example"},
                     config={"alerting": {"external_url": "https://b.example"}}),
         "presets.alerting.externalURL and config.alerting.external_url are both set"),
        (with_values(ALERTING, **{"presets.alerting.enabled": False}, config={"plugins": [
            {"plugin_id": "monitoring.alerts.webhook", "config": {"url": "http://r:5001/hook"}}]}),
         "config.plugins enables monitoring.alerts.webhook, but presets.alerting is off"),
        (with_values(ALERTING, **{"presets.alerting.enabled": False, "presets.alerting.state.persistence.enabled": True}),
         "presets.alerting.state.persistence.enabled=true, but presets.alerting is off"),
    ],
)
def test_alerting_contradictions_fail_with_an_actionable_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError) as e:
        render(values)
    assert message in str(e.value)
