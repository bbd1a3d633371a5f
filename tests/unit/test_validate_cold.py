"""What ``monbridge validate`` spends nothing on: a config naming only built-in plugins reads no
installed distribution's metadata (neither monbridge's entry points nor pydantic's plugins), and
the command leaves pydantic's plugins as it found them for what runs after it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
plugins:
  - plugin_id: monitoring.metrics.system
  - plugin_id: monitoring.integration.otlp
    config: {endpoint: "http://127.0.0.1:4318", receive: {http: {listen: "127.0.0.1:4318"}}}
  - plugin_id: monitoring.alerts.webhook
    config: {url: "http://127.0.0.1:5001/hook"}
"""

PROBE = """\
import importlib.metadata as md, json, os, sys
scans, depth = [], [0]
for name in ("entry_points", "distributions"):
    real = getattr(md, name)
    def spy(*a, _real=real, _name=name, **k):
        if not depth[0]:  # entry_points() reads distributions(): one scan
            scans.append(_name)
        depth[0] += 1
        try:
            return _real(*a, **k)
        finally:
            depth[0] -= 1
    setattr(md, name, spy)
from bridge.cli import main
try:
    main(["validate", "--config", sys.argv[1]])
except SystemExit as e:
    assert e.code == 0, e.code
during, scans[:] = list(scans), []
after = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
from pydantic import BaseModel
class Later(BaseModel):
    x: int = 1
Later(x=2)  # a model built after the command looks for pydantic plugins as usual
print(json.dumps({"during": during, "later": scans, "env_after": after}))
"""


def probe(tmp_path: Path, env_value: str | None = None) -> dict:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    if env_value is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE, str(config)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_validating_built_in_plugins_reads_no_distribution_metadata(tmp_path):
    result = probe(tmp_path)
    assert result["during"] == []
    # a model built after the command looks for pydantic's plugins (once)
    assert result["later"] == ["entry_points"]
    assert result["env_after"] is None


def test_a_users_pydantic_plugin_setting_is_kept(tmp_path):
    result = probe(tmp_path, "logfire")
    assert result["env_after"] == "logfire"
    # with only one plugin named as disabled, pydantic looks for the others, as it always does
    assert result["during"] == ["entry_points"] and result["later"] == []
