"""Relabeling and hashmod sharding checked against the real Prometheus.

Prometheus runs a static config whose targets go through ``relabel_configs`` covering every
action, hashmod with several moduli, and the Go-regex and ``Regexp.Expand`` cases where Python's
``re`` would differ. ``/api/v1/targets`` gives, for each target, the labels Prometheus discovered
and the labels it produced (or that it dropped the target); ``Relabeler`` applied to the
discovered labels must produce exactly the same, and ``shard_of`` must agree with the hashmod
labels.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from integrations.prometheus.relabel import RelabelConfig, Relabeler
from integrations.prometheus.sharding import shard_of

pytestmark = pytest.mark.integration

# Addresses on the loopback network, on ports nothing listens on: the scrapes fail at once.
TARGETS = [f"127.0.0.{i}:{port}" for i, port in [(1, 1), (2, 9), (3, 7), (4, 11), (5, 13), (6, 17), (7, 19), (8, 23),
                                                  (9, 29), (10, 31), (11, 37), (12, 41)]]
GROUP_LABELS = {
    "weird": "a{,3}",  # Go: a{,3} is literal text, not a repetition
    "arabic": "\u0663",  # ARABIC-INDIC DIGIT THREE: Go's \d is ASCII only
    "trail": "abc\n",  # Go's $ is the end of the text, not before a final newline
    "mixed": "MiXeD-Case",
    "tags": "path:/secret,job:some-job,label:foo=bar",
}

RULES: list[dict[str, Any]] = [
    {"source_labels": ["__address__"], "action": "hashmod", "modulus": 2, "target_label": "shard2"},
    {"source_labels": ["__address__"], "action": "hashmod", "modulus": 3, "target_label": "shard3"},
    {"source_labels": ["__address__"], "action": "hashmod", "modulus": 1000, "target_label": "h1000"},
    {"source_labels": ["__address__"], "regex": r"([^:]+):(\d+)", "target_label": "p_$2", "replacement": "$1"},
    {"source_labels": ["__address__"], "regex": r"(?P<1x>[^:]+):.*", "target_label": "named_1x", "replacement": "$1x"},
    {"source_labels": ["__address__"], "regex": r"([^:]+):.*", "target_label": "braced", "replacement": "${1}x"},
    {"source_labels": ["__address__"], "regex": r"([^:]+):.*", "target_label": "unknown_group", "replacement": "$1x-$9-end"},
    {"source_labels": ["__address__"], "regex": r"(.*)", "target_label": "dollars", "replacement": "$$1 costs $ {1}"},
    {"source_labels": ["__address__"], "regex": r"(?P<host>[^:]+):(?P<port>\d+)", "target_label": "swapped",
     "replacement": "${port}@$host"},
    {"source_labels": ["weird"], "regex": "a{,3}", "target_label": "brace_literal", "replacement": "yes"},
    {"source_labels": ["arabic"], "regex": r"\d", "target_label": "ascii_digit", "replacement": "yes"},
    {"source_labels": ["arabic"], "regex": r"\pN", "target_label": "unicode_number", "replacement": "yes"},
    {"source_labels": ["trail"], "regex": "abc", "target_label": "end_of_text", "replacement": "yes"},
    {"source_labels": ["trail"], "regex": "(?s)abc.", "target_label": "dot_nl", "replacement": "yes"},
    {"source_labels": ["mixed"], "regex": "(?i)mixed-(CASE)", "target_label": "fold", "replacement": "$1"},
    {"source_labels": ["mixed"], "action": "lowercase", "target_label": "lower"},
    {"source_labels": ["mixed"], "action": "UPPERCASE", "target_label": "upper"},
    {"source_labels": ["tags"], "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*", "target_label": "${1}", "replacement": "${2}"},
    {"source_labels": ["mixed", "weird"], "separator": "|", "regex": r"(\w+)-.*\|(.*)", "target_label": "joined",
     "replacement": "$1/$2"},
    {"regex": "(sha)rd(.)", "action": "labelmap", "replacement": "copy_${1}_$2"},
    {"regex": "h(1000)", "action": "labelmap", "replacement": "mod_$1"},
    {"regex": "trail|arabic", "action": "labeldrop"},
    {"source_labels": ["shard2"], "action": "dropequal", "target_label": "shard3"},
    {"source_labels": ["__address__"], "regex": r"127\.0\.0\.(1|2|3|4|5|6|7|8|9|10|11)?:.*", "action": "keep"},
    {"source_labels": ["h1000"], "regex": "[0-4].*", "action": "drop"},
    {"regex": "__.*|job|copy_.*|mod_.*|p_.*|named_1x|braced|unknown_group|dollars|swapped|brace_literal|ascii_digit"
              "|unicode_number|end_of_text|dot_nl|fold|lower|upper|foo|joined", "action": "labelkeep"},
]


def _targets(prometheus, expected: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = prometheus.get("/api/v1/targets?state=any")
        assert status == 200, body
        data = json.loads(body)["data"]
        if len(data["activeTargets"]) + len(data["droppedTargets"]) >= expected or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_relabeling_and_hashmod_match_prometheus(prometheus_server):
    config = {
        "global": {"scrape_interval": "1h", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "relabel",
            "static_configs": [{"targets": TARGETS, "labels": GROUP_LABELS}],
            "relabel_configs": RULES,
        }],
    }
    prometheus = prometheus_server(config=config)
    data = _targets(prometheus, len(TARGETS))
    active, dropped = data["activeTargets"], data["droppedTargets"]
    assert len(active) + len(dropped) == len(TARGETS), data
    # The rules drop some targets and keep others, so both paths are compared.
    assert active and dropped

    # The labels a static target has before relabeling. (Prometheus 2.42 relabels them in place, so
    # its discoveredLabels can show labels the rules added; they are not used as the input here.)
    def discovered(address: str) -> dict[str, str]:
        return {"__address__": address, "__metrics_path__": "/metrics", "__scheme__": "http", "__scrape_interval__": "1h",
                "__scrape_timeout__": "1s", "job": "relabel", **GROUP_LABELS}

    relabeler = Relabeler([RelabelConfig.model_validate(rule) for rule in RULES])
    kept = {t["labels"]["instance"]: t["labels"] for t in active}
    for address in TARGETS:
        ours = relabeler.apply(discovered(address))
        if address not in kept:
            assert ours is None, f"Prometheus dropped {address}, Relabeler kept it"
            continue
        assert ours is not None, f"Prometheus kept {address}, Relabeler dropped it"
        public = {k: v for k, v in ours.items() if not k.startswith("__")}
        public.setdefault("instance", ours["__address__"])  # Prometheus adds instance after relabeling
        assert public == kept[address], address
    for address, labels in kept.items():
        assert (labels["copy_sha_2"], labels["copy_sha_3"], labels["mod_1000"]) == (
            str(shard_of(address, 2)), str(shard_of(address, 3)), str(shard_of(address, 1000)))
        assert "shard2" not in labels and "mixed" not in labels  # labelkeep removed them
    # Cases where Go differs from Python's re, as Prometheus decided them.
    sample = active[0]["labels"]
    assert sample["brace_literal"] == "yes" and sample["unicode_number"] == "yes" and sample["dot_nl"] == "yes"
    assert "ascii_digit" not in sample and "end_of_text" not in sample
    assert sample["dollars"] == "$1 costs $ {1}" and sample["foo"] == "bar" and sample["upper"] == "MIXED-CASE"


def test_hashmod_shards_match_prometheus(prometheus_server):
    """``shard_of`` against Prometheus' hashmod of ``__address__`` for many addresses and moduli."""
    addresses = [f"127.0.{i // 200}.{i % 200 + 1}:{9000 + i}" for i in range(60)] + ["localhost:9090", "[::1]:9100"]
    moduli = [1, 2, 3, 5, 7, 10, 16, 1000, 2**32 + 15, 2**64 - 1]
    config = {
        "global": {"scrape_interval": "1h", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "shards",
            "static_configs": [{"targets": addresses}],
            "relabel_configs": [
                {"source_labels": ["__address__"], "action": "hashmod", "modulus": m, "target_label": f"m{i}"}
                for i, m in enumerate(moduli)
            ],
        }],
    }
    prometheus = prometheus_server(config=config)
    data = _targets(prometheus, len(addresses))
    assert not data["droppedTargets"]
    found = {t["labels"]["instance"]: t["labels"] for t in data["activeTargets"]}
    assert sorted(found) == sorted(addresses)
    for address, labels in found.items():
        for i, m in enumerate(moduli):
            assert labels[f"m{i}"] == str(shard_of(address, m)), (address, m)
        assert shard_of(f"http://{address}/metrics", 7) == int(labels["m4"])
