"""The chart's Grafana dashboards: ConfigMaps for Grafana's dashboard sidecar, off by default,
holding exactly what ``monbridge grafana dashboards`` generates now (rendered with Helm's own
engine, checked against Kubernetes' schemas)."""

from __future__ import annotations

import json

import helm_python as helm
import kubernetes_validate
import pytest

from integrations.grafana.catalog import FAMILIES
from integrations.grafana.dashboards import build
from tests.helm.chart import NAMESPACE, manifests, render

SIDECAR_LABEL = ("grafana_dashboard", "1")


def _dashboard_maps(values):
    return [d for d in manifests(render(values)) if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]


def test_no_dashboards_by_default():
    assert _dashboard_maps({}) == []


def test_one_configmap_per_family_labelled_for_the_sidecar_with_the_current_dashboards():
    maps = _dashboard_maps({"grafanaDashboards": {"enabled": True}})
    assert sorted(m["metadata"]["name"] for m in maps) == sorted(f"monbridge-dashboard-{f.key}" for f in FAMILIES)
    for m, family in zip(sorted(maps, key=lambda m: m["metadata"]["name"]), sorted(FAMILIES, key=lambda f: f.key),
                         strict=True):
        assert m["metadata"]["labels"][SIDECAR_LABEL[0]] == SIDECAR_LABEL[1]
        assert m["metadata"]["namespace"] == NAMESPACE
        (name, text), = m["data"].items()
        assert name == f"monbridge-{family.key}.json"
        # The chart's copy is the generator's output: regenerate with
        # `monbridge grafana dashboards --out helm/monbridge/dashboards` when this fails.
        assert json.loads(text) == build(family), f"helm/monbridge/dashboards/{name} is stale"
        kubernetes_validate.validate(m, kubernetes_validate.utils.latest_version(), strict=True)


def test_the_values_schema_lists_every_family():
    from tests.helm.chart import CHART_DIR

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    families = schema["properties"]["grafanaDashboards"]["properties"]["families"]["items"]["enum"]
    assert families == [f.key for f in FAMILIES]


def test_families_namespace_labels_and_annotations_are_values():
    maps = _dashboard_maps({"grafanaDashboards": {
        "enabled": True, "families": ["host", "grafana"], "namespace": "grafana",
        "labels": {"grafana_dashboard": "yes", "team": "ops"}, "annotations": {"grafana_folder": "monbridge"}}})
    assert sorted(m["metadata"]["name"] for m in maps) == ["monbridge-dashboard-grafana", "monbridge-dashboard-host"]
    for m in maps:
        assert m["metadata"]["namespace"] == "grafana"
        assert m["metadata"]["labels"]["grafana_dashboard"] == "yes" and m["metadata"]["labels"]["team"] == "ops"
        assert m["metadata"]["annotations"] == {"grafana_folder": "monbridge"}


@pytest.mark.parametrize(("values", "message"), [
    ({"families": ["hosts"]}, "at '/grafanaDashboards/families/0'"),
    ({"enabled": "yes"}, "at '/grafanaDashboards/enabled': got string, want boolean"),
    ({"label": {}}, "additional properties 'label' not allowed"),
    ({"namespace": "Not_A_Name"}, "at '/grafanaDashboards/namespace'"),
])
def test_bad_values_fail_rendering(values, message):
    with pytest.raises(helm.HelmValuesError) as e:
        render({"grafanaDashboards": values})
    assert message in str(e.value)
