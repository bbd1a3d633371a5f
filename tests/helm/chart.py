"""Rendering the monbridge Helm chart with Helm's own engine (helm-python-sdk), for the tests.

Scenarios are the chart's ``ci/<scenario>-values.yaml`` files; each renders with release name
``monbridge`` in namespace ``monitoring``. Their golden renderings live in
``helm/monbridge/examples/<scenario>/`` (``rendered.yaml`` and ``NOTES.txt``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "helm" / "monbridge"
CI_DIR = CHART_DIR / "ci"
EXAMPLES_DIR = CHART_DIR / "examples"
RELEASE = "monbridge"
NAMESPACE = "monitoring"
NOTES = "monbridge/templates/NOTES.txt"
WORKLOAD_KINDS = ("DaemonSet", "Deployment", "StatefulSet")


def scenarios() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


def scenario_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text()) or {}


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as ``helm template`` renders them."""
    with helm.Chart.load(CHART_DIR) as chart:
        return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a rendering, in template-path order."""
    out = []
    for path in sorted(rendered):
        if path == NOTES:
            continue
        out.extend(doc for doc in yaml.safe_load_all(rendered[path]) if doc)
    return out


def golden_text(rendered: dict[str, str]) -> str:
    """The manifests as ``helm template`` prints them: a ``# Source:`` line before each file."""
    parts = []
    for path in sorted(rendered):
        text = rendered[path].strip("\n")
        if path == NOTES or not text.strip():
            continue
        parts.append(f"---\n# Source: {path}\n{text}\n")
    return "".join(parts)


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in WORKLOAD_KINDS]
    assert len(found) == 1, f"expected one DaemonSet/Deployment/StatefulSet, found {[d['kind'] for d in found]}"
    return found[0]


def monbridge_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = workload(docs)["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "monbridge")


def config_text(docs: list[dict[str, Any]]) -> str:
    return only(docs, "ConfigMap")["data"]["config.yaml"]
