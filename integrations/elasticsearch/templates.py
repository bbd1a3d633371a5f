"""The component and index templates the export installs at start (when ``templates.install``).

* ``monbridge-metrics@mappings`` (component): ``@timestamp``, ``data_stream.*``, the
  ``_metric_names_hash`` dimension, the dimensions of the mapping mode (``ecs``: every ECS field an
  attribute can be written to, with its ECS type, and ``labels.*`` as keywords; ``otel``:
  ``attributes.*`` and ``resource.attributes.*`` as keywords), the ECS metric fields with their
  ECS types (``ecs``), and the dynamic templates the bulk requests name: ``counter_double``
  and ``gauge_double`` (``double`` with ``time_series_metric`` counter/gauge) and ``histogram``;
* ``monbridge-metrics@settings`` (component): ``index.mode: time_series`` and its routing path;
* ``monbridge-metrics-<dataset>`` (index template, priority 200: above Elasticsearch's own
  ``metrics`` template, 100) for ``metrics-<dataset>-*``, one per dataset the config names;
* ``monbridge-alerts`` (index template) for ``logs-monbridge.alerts-*`` and ``monbridge-logs``
  for ``logs-monbridge.log-*`` (monbridge's own logs, with ``logs: true``): the ECS fields of an alert event and of a
  log document, with their ECS types.

A template that exists is kept (it may be a user's own) unless ``templates.overwrite``.
"""

from __future__ import annotations

import logging
from typing import Any

from integrations.elasticsearch.config import ElasticsearchConfig
from integrations.elasticsearch.ecs import ATTRIBUTES, METRICS, TYPES

__all__ = ["ALERTS_TEMPLATE", "LOGS_TEMPLATE", "component_templates", "index_templates", "install"]

log = logging.getLogger("monbridge.elasticsearch.export")

ALERTS_TEMPLATE = "monbridge-alerts"
LOGS_TEMPLATE = "monbridge-logs"
_PRIORITY = 200
_DIMENSION = {"type": "keyword", "time_series_dimension": True}


def _leaf(typ: str) -> dict[str, Any]:
    if typ == "scaled_float":
        return {"type": "scaled_float", "scaling_factor": 1000}
    if typ == "constant_keyword":
        return {"type": "constant_keyword"}
    return {"type": typ}


def _nest(flat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Dotted field names as nested ``properties``."""
    props: dict[str, Any] = {}
    for name, mapping in sorted(flat.items()):
        parts = name.split(".")
        cur = props
        for p in parts[:-1]:
            cur = cur.setdefault(p, {"properties": {}})["properties"]
        cur[parts[-1]] = mapping
    return props


def _metric_dynamic_templates() -> list[dict[str, Any]]:
    return [
        {"counter_double": {"mapping": {"type": "double", "time_series_metric": "counter"}}},
        {"gauge_double": {"mapping": {"type": "double", "time_series_metric": "gauge"}}},
        {"histogram": {"mapping": {"type": "histogram"}}},
    ]


def component_templates(cfg: ElasticsearchConfig) -> dict[str, dict[str, Any]]:
    flat: dict[str, dict[str, Any]] = {
        "@timestamp": {"type": "date"},
        "data_stream.type": {"type": "constant_keyword"},
        "data_stream.dataset": {"type": "constant_keyword"},
        "data_stream.namespace": {"type": "constant_keyword"},
        "_metric_names_hash": dict(_DIMENSION),
    }
    dynamic = _metric_dynamic_templates()
    routing = ["_metric_names_hash"]
    if cfg.mapping == "ecs":
        for field, typ in ATTRIBUTES.values():
            flat[field] = {"type": typ, "time_series_dimension": True}
            if typ == "keyword":
                routing.append(field)
        for field, typ in METRICS.values():
            flat[field] = {**_leaf(typ), "time_series_metric": "gauge"}
        dynamic.insert(0, {"labels": {"path_match": "labels.*", "mapping": dict(_DIMENSION)}})
        routing.append("labels.*")
    else:
        dynamic.insert(0, {"resource_attributes": {"path_match": "resource.attributes.*", "mapping": dict(_DIMENSION)}})
        dynamic.insert(0, {"attributes": {"path_match": "attributes.*", "mapping": dict(_DIMENSION)}})
        routing += ["attributes.*", "resource.attributes.*"]
    return {
        "monbridge-metrics@mappings": {"template": {"mappings": {"properties": _nest(flat),
                                                                 "dynamic_templates": dynamic}},
                                       "_meta": {"managed_by": "monbridge", "mapping": cfg.mapping}},
        "monbridge-metrics@settings": {"template": {"settings": {"index.mode": "time_series",
                                                                 "index.routing_path": routing}},
                                       "_meta": {"managed_by": "monbridge"}},
    }


def alert_mappings() -> dict[str, Any]:
    flat = {f: _leaf(t) for f, t in TYPES.items() if t != "object"}
    return {"properties": _nest(flat),
            "dynamic_templates": [{"labels": {"path_match": "labels.*", "mapping": {"type": "keyword"}}}]}


def index_templates(cfg: ElasticsearchConfig) -> dict[str, dict[str, Any]]:
    datasets = sorted({cfg.dataset, *(r.dataset for r in cfg.datasets)})
    out: dict[str, dict[str, Any]] = {}
    for ds in datasets:
        out[f"monbridge-metrics-{ds}"] = {
            "index_patterns": [f"metrics-{ds}-*"], "data_stream": {}, "priority": _PRIORITY,
            "composed_of": ["monbridge-metrics@mappings", "monbridge-metrics@settings"],
            "_meta": {"managed_by": "monbridge"}}
    out[ALERTS_TEMPLATE] = {"index_patterns": ["logs-monbridge.alerts-*"], "data_stream": {},
                            "priority": _PRIORITY, "template": {"mappings": alert_mappings()},
                            "_meta": {"managed_by": "monbridge"}}
    if cfg.logs:
        out[LOGS_TEMPLATE] = {"index_patterns": ["logs-monbridge.log-*"], "data_stream": {},
                              "priority": _PRIORITY, "template": {"mappings": alert_mappings()},
                              "_meta": {"managed_by": "monbridge"}}
    return out


async def install(cfg: ElasticsearchConfig, client: Any) -> list[str]:
    """Put the templates that are missing (all with ``templates.overwrite``); the names put."""
    put: list[str] = []
    overwrite = cfg.templates.overwrite
    for name, body in component_templates(cfg).items():
        if overwrite or not (await client.cluster.exists_component_template(name=name)):
            await client.cluster.put_component_template(name=name, **body)
            put.append(name)
    for name, body in index_templates(cfg).items():
        if overwrite or not (await client.indices.exists_index_template(name=name)):
            await client.indices.put_index_template(name=name, **body)
            put.append(name)
    log.info("elasticsearch export: templates installed: %s", ", ".join(put) or "none (all present)")
    return put
