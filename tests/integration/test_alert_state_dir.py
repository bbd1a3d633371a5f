"""Alert state belongs to the config that owns it: an agent without alerting writes and restores
none, each config file has its own state directory, and a directory is locked by the agent
using it. Every agent runs with HOME and XDG_STATE_HOME in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import wait_until

from bridge.alerting.store import AlertStore
from bridge.api import Alert

pytestmark = pytest.mark.integration

AM_ALERT = {
    "version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "monbridge",
    "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
    "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull", "instance": "db1"}, "annotations": {},
                "startsAt": "2026-01-02T03:04:05Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                "fingerprint": ""}],
}


def isolated_env(tmp_path: Path) -> dict[str, str]:
    home, state = tmp_path / "home", tmp_path / "xdg-state"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), "XDG_STATE_HOME": str(state), "MONBRIDGE_STATE_DIR": ""}


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def alerts(mb) -> list[dict]:
    status, _, body = mb.get("/api/v1/alerts?state=all")
    assert status == 200
    return json.loads(body)["data"]


def post_alert(mb) -> None:
    import urllib.request

    req = urllib.request.Request(mb.url + "/api/v1/alerts/alertmanager", data=json.dumps(AM_ALERT).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


def test_an_agent_without_alerting_writes_and_restores_no_alert_state(tmp_path, run_monbridge):
    env = isolated_env(tmp_path)
    # An active alert in the state directory every agent shared before.
    shared = Path(env["XDG_STATE_HOME"]) / "monbridge"
    store = AlertStore(shared / "alerts.json")
    store.fire(Alert(id="", name="FromAnotherAgent", severity="critical", labels={"team": "other"}), "elsewhere")
    store.save()
    before = files_under(Path(env["HOME"]), Path(env["XDG_STATE_HOME"]))

    mb = run_monbridge({"plugins": [{"plugin_id": "monitoring.metrics.system", "config": {"collection_interval": 1}}]},
                       env=env)
    post_alert(mb)  # alerts it is sent live in memory only
    assert [a["name"] for a in alerts(mb)] == ["DiskFull"]  # not FromAnotherAgent: nothing restored
    mb.stop()
    assert files_under(Path(env["HOME"]), Path(env["XDG_STATE_HOME"])) == before
    assert "alerts: state in" not in mb.log_text()


def test_each_config_has_its_own_state_dir(tmp_path, run_monbridge):
    env = isolated_env(tmp_path)
    config = {"alerting": {"external_url": "http://monbridge.example"}, "plugins": []}
    a = run_monbridge(config, env=env)
    b = run_monbridge(config, env=env)  # the same content, another file
    state_home = Path(env["XDG_STATE_HOME"]) / "monbridge"
    locks = {p.parent: p.read_text().strip() for p in state_home.glob("*/monbridge.lock")}
    assert sorted(locks.values()) == sorted([str(a.proc.pid), str(b.proc.pid)])
    dir_a = next(d for d, pid in locks.items() if pid == str(a.proc.pid))
    dir_b = next(d for d, pid in locks.items() if pid == str(b.proc.pid))
    assert dir_a.name.startswith("monbridge-") and dir_a != dir_b
    assert f"alerts: state in {dir_a}" in a.log_text()

    post_alert(a)
    wait_until(lambda: (dir_a / "alerts.json").exists(), what="a's alert store")
    assert not (dir_b / "alerts.json").exists()
    assert alerts(b) == []
    # Restarted on its config, an agent finds its own state again.
    a.stop()
    again = run_monbridge(config, env=env, workdir=a.config_path.parent)
    assert [x["name"] for x in alerts(again)] == ["DiskFull"]


def test_a_second_agent_on_a_locked_state_dir_fails_to_start(tmp_path, run_monbridge):
    env = isolated_env(tmp_path)
    state = tmp_path / "shared-state"
    config = {"alerting": {"state_dir": str(state)}, "plugins": []}
    first = run_monbridge(config, env=env)
    second = run_monbridge(config, env=env, wait=False)
    assert second.proc.wait(timeout=30) == 1
    log = second.log_text()
    assert f"the alert state directory {state} is in use by another monbridge (pid {first.proc.pid}" in log
    assert "give each agent its own alerting.state_dir" in log
    assert first.get("/-/healthy")[0] == 200
    assert (state / "monbridge.lock").read_text().strip() == str(first.proc.pid)
