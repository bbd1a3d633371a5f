"""Fuzzing the config loader: whatever bytes a config file holds, ``parse_config`` returns a
validated config or raises ``ConfigError``, in bounded time and memory.

Seeds: the embedded default config, the configs the Helm chart renders for its CI scenarios
(``helm/monbridge/examples/*/rendered.yaml``), the README's examples and ``corpus/config/``.
"""

from __future__ import annotations

import contextlib
import gc
import re
from pathlib import Path

import pytest
import yaml

from bridge.config import ConfigError, parse_config
from bridge.registry import PluginRegistry
from tests.fuzz.harness import CORPUS, run_fuzz, seeds

REPO = Path(__file__).resolve().parents[2]
TOKENS = [b"*a", b"&a ", b"!!float ", b"!!int ", b"!!binary ", b"!!set ", b"!foo ", b"? ", b"<<: ", b"<<: *a\n",
          b"${", b"${A}", b"${PASSWORD}", b"${PORT}", b"${UNSET:-x}", b"${env:A}", b"${file:", b"$$", b"}",
          b"[", b"]", b"{", b"}", b"\t", b"\n", b"\n  ", b"- ", b": ", b", ", b"#", b" #", b"'", b'"', b"---\n",
          b"~", b"null", b"1:30:00", b"0x1F", b"1e309", b".nan", b"2024-01-01", b"\xef\xbb\xbf", b"\x00"]
ENV = {"A": "1", "PORT": "9464", "PASSWORD": "*a #b\n&c !d: [e", "EMPTY": ""}
REGISTRY = PluginRegistry().discover()


def _seed_texts() -> list[bytes]:
    out = [(REPO / "bridge" / "default-config.yaml").read_bytes()]
    for rendered in sorted((REPO / "helm" / "monbridge" / "examples").glob("*/rendered.yaml")):
        for doc in yaml.safe_load_all(rendered.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                out.extend(v.encode() for k, v in (doc.get("data") or {}).items() if k.endswith(".yaml"))
    readme = (REPO / "README.md").read_text()
    out.extend(m.encode() for m in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "plugins:" in m)
    return out


def load(data: bytes) -> object:
    return parse_config(data, "fuzz.yaml", REGISTRY, env=ENV)


@pytest.mark.fuzz
def test_fuzz_config_loader() -> None:
    pool = _seed_texts() + seeds("config")
    assert len(pool) > 5
    for entry in REGISTRY.entries():  # warm-up, untimed: the first use of a plugin imports its module
        with contextlib.suppress(ConfigError):
            load(f"plugins: [{{plugin_id: {entry.plugin_id}}}]".encode())
    gc.collect()
    gc.freeze()  # what the warm-up left is not scanned again by a full collection during a timed input
    try:
        tried = run_fuzz(load, pool, allowed=(ConfigError,), tokens=TOKENS)
    finally:
        gc.unfreeze()
    assert tried >= len(pool)


def test_corpus_inputs_are_config_errors() -> None:
    """Every input the fuzzer found is refused with a ConfigError (none is a valid config)."""
    for path in sorted((CORPUS / "config").iterdir()):
        with pytest.raises(ConfigError):
            load(path.read_bytes())
