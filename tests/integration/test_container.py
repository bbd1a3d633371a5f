"""The container image built from helm/Dockerfile with podman, and run the way the Helm chart's pod
spec says, without a cluster (see tests/integration/container.py for how the pod maps to
``podman run``, the networking chosen and this machine's quirks).

The image is built once per session on a Debian base made by debootstrap (cached between runs
under the repository's .pytest_cache, keyed by the debootstrap arguments) and imported with
``podman import``: no container registry is reachable here. Podman keeps its storage in the
session's temporary directory, removed at the end. Every step is bounded by a timeout and
reports progress on the terminal (lines starting ``container:``).

Each chart scenario (helm/monbridge/ci/*-values.yaml) whose pod needs no outside peer (its
config runs only the host and process collectors) runs as its pod would: the liveness and
readiness probes' paths and /metrics answer on the container port, the process runs as the
pod's non-root user on a read-only root filesystem, and SIGTERM stops it cleanly within the
pod's terminationGracePeriodSeconds. Where the pod mounts the node's /proc and / (hostPath), its
metrics are the host's: the memory total equals the host's MemTotal and the process count is the
host's, not the container's one process.
"""

from __future__ import annotations

import math
import os
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _require_binary
from tests.helm import chart
from tests.integration import container as ct
from tests.integration.conftest import http_get

pytestmark = pytest.mark.integration

READY_TIMEOUT = 90.0
#: The plugins a pod can run with no outside peer: they read the node (or the pod) only.
LOCAL_PLUGINS = frozenset({"monitoring.metrics.system", "monitoring.metrics.process"})


def rendered(scenario: str) -> list[dict[str, Any]]:
    return chart.manifests(chart.render(chart.scenario_values(scenario)))


def needs_outside_peer(docs: list[dict[str, Any]]) -> bool:
    """Whether the pod's config talks to anything outside it: a plugin other than the local
    collectors, or an alerting section (notifiers, Alertmanager)."""
    config = yaml.safe_load(chart.config_text(docs))
    plugins = {p["plugin_id"] for p in config.get("plugins", []) if p.get("enabled", True)}
    return bool(plugins - LOCAL_PLUGINS) or "alerting" in config


PEERLESS = [s for s in chart.scenarios() if not needs_outside_peer(rendered(s))]


def test_the_peerless_scenarios_include_the_host_metrics_one() -> None:
    # the host-metrics checks below need a scenario that mounts the node's /proc; and the
    # selection must not come out empty when the chart's presets change
    assert "host-metrics" in PEERLESS and "daemonset" in PEERLESS, PEERLESS
    assert {"alerting", "otlp-export", "prometheus-scrape", "sharding"}.isdisjoint(PEERLESS), PEERLESS


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def progress(pytestconfig: pytest.Config) -> ct.Progress:
    """Writes ``container: <message>`` on the terminal as it happens (pytest's capture suspended)."""
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    capture = pytestconfig.pluginmanager.get_plugin("capturemanager")

    def say(message: str) -> None:
        line = f"container: {message}"
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)

    return say


def cache_dir(config: pytest.Config) -> Path:
    """This test's cache directory: pytest's cache when enabled, else the same place under the
    repository's .pytest_cache (CI runs with ``-p no:cacheprovider``)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("container-base"))
    return Path(config.rootpath) / ".pytest_cache" / "d" / "container-base"


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory, progress: ct.Progress) -> Iterator[ct.Podman]:
    for program in ("podman", "runc", "tar"):
        _require_binary(program)
    if os.geteuid() != 0:
        pytest.fail("building the Debian base with debootstrap needs root", pytrace=False)
    p = ct.Podman(tmp_path_factory.mktemp("podman"), progress)
    yield p
    p.destroy()


@pytest.fixture(scope="session")
def image(podman: ct.Podman, pytestconfig: pytest.Config, progress: ct.Progress) -> str:
    """The image built from helm/Dockerfile on the Debian base; its tag."""
    run_id = uuid.uuid4().hex[:12]
    tarball = ct.base_tarball(cache_dir(pytestconfig), progress, podman.home, _require_binary("debootstrap"))
    base = podman.import_base(tarball, f"localhost/monbridge-test-base:{run_id}")
    return podman.build(base, f"localhost/monbridge-test:{run_id}")


# --------------------------------------------------------------------------- the image


def test_image_is_built_non_root_with_monbridge_as_entrypoint(podman: ct.Podman, image: str) -> None:
    config = podman.inspect("image", image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["monbridge"]
    assert "9464/tcp" in config["ExposedPorts"]
    version = tomllib.loads((ct.REPO / "pyproject.toml").read_text())["project"]["version"]
    out = podman("run", "--rm", "--read-only", *ct.ulimit_args(), image, "--version", what="monbridge --version")
    assert out.strip().endswith(version), out


# --------------------------------------------------------------------------- the chart's pods


def metric_samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def process_status(pid: int) -> dict[str, str]:
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.strip()
    return status


def mount_options(pid: int) -> dict[str, tuple[str, str]]:
    """Mount point -> (its options, its filesystem type) in the process' mount namespace."""
    out = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        out[fields[4]] = (fields[5], fields[sep + 1])
    return out


def container_log(podman: ct.Podman, run: ct.PodRun) -> str:
    logs = podman.result("logs", run.name)
    return logs.stdout + logs.stderr


def wait_ready(podman: ct.Podman, run: ct.PodRun, url: str) -> float:
    """Polls the readiness probe's path until it answers 200; fails with the container's log if the
    container exits or it does not answer within READY_TIMEOUT. Returns the seconds it took."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < READY_TIMEOUT:
        state = podman.result("container", "inspect", "--format", "{{.State.Status}}", run.name).stdout.strip()
        if state != "running":
            pytest.fail(f"{run.scenario}: container {state} before it was ready; its log:\n{container_log(podman, run)}",
                        pytrace=False)
        try:
            status, _, body = http_get(url + run.readiness_path, timeout=2.0)
            if status == 200:
                return time.monotonic() - started
            last = f"HTTP {status}: {body[:200]!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.5)
    pytest.fail(f"{run.scenario}: {run.readiness_path} not 200 within {READY_TIMEOUT:.0f} s (last: {last}); "
                f"its log:\n{container_log(podman, run)}", pytrace=False)


@pytest.mark.parametrize("scenario", PEERLESS)
def test_chart_pod_runs_as_its_spec_says(scenario: str, podman: ct.Podman, image: str, tmp_path: Path,
                                         free_port, progress: ct.Progress) -> None:
    docs = rendered(scenario)
    run = ct.pod_run(scenario, docs, image, tmp_path / "volumes", free_port())
    url = f"http://127.0.0.1:{run.port}"
    podman("run", *run.run_args, what=f"podman run ({scenario})")
    try:
        took = wait_ready(podman, run, url)
        progress(f"{scenario}: ready after {took:.1f} s")

        # the probes and /metrics on the container's http port
        for path in (run.liveness_path, run.readiness_path):
            status, _, body = http_get(url + path)
            assert status == 200, f"{scenario}: {path}: HTTP {status} {body[:200]!r}"
        status, _, body = http_get(url + "/metrics")
        assert status == 200, f"{scenario}: /metrics: HTTP {status}"
        samples = metric_samples(body.decode())
        assert any(s.name.startswith("system_") for s in samples), f"{scenario}: no system metrics on /metrics"

        # the process: the pod's non-root user, a read-only root, the emptyDir on tmpfs
        pid = int(podman.inspect("container", run.name)["State"]["Pid"])
        status_lines = process_status(pid)
        assert status_lines["Uid"].split() == [str(run.uid)] * 4, status_lines["Uid"]
        assert status_lines["Gid"].split() == [str(run.gid)] * 4, status_lines["Gid"]
        assert run.uid != 0
        assert status_lines["CapEff"] == "0000000000000000", status_lines["CapEff"]
        assert status_lines["NoNewPrivs"] == "1"
        mounts = mount_options(pid)
        assert mounts["/"][0].split(",")[0] == "ro", mounts["/"]
        for target, source in run.mounts.items():
            assert target in mounts, f"{scenario}: {target} is not mounted"
            if source == "tmpfs":
                assert mounts[target][1] == "tmpfs", mounts[target]
        assert mounts["/etc/monbridge"][0].split(",")[0] == "ro"

        if "/host/proc" in run.mounts:
            check_host_metrics(scenario, samples, mounts)
    finally:
        started = time.monotonic()
        podman("stop", "--time", str(run.grace_seconds), run.name, timeout=run.grace_seconds + 30,
               what=f"podman stop ({scenario})")
        took = time.monotonic() - started
        state = podman.inspect("container", run.name)["State"]
        log = container_log(podman, run)
        podman("rm", run.name)
    progress(f"{scenario}: stopped by SIGTERM in {took:.1f} s, exit status {state['ExitCode']}")
    assert took < run.grace_seconds, f"{scenario}: SIGTERM took {took:.1f} s (grace {run.grace_seconds} s)"
    assert state["ExitCode"] == 0, f"{scenario}: exit status {state['ExitCode']}; its log:\n{log}"


def check_host_metrics(scenario: str, samples: list[Any], mounts: dict[str, tuple[str, str]]) -> None:
    """The system collector read the node's /proc (mounted read-only at /host/proc), not the container's."""
    assert mounts["/host/proc"][0].split(",")[0] == "ro" and mounts["/host/root"][0].split(",")[0] == "ro"
    memory = [s for s in samples if s.name == "system_memory_usage_bytes"]
    assert memory, f"{scenario}: no system_memory_usage_bytes"
    total = sum(s.value for s in memory)
    host_total = ct.host_memtotal_bytes()
    assert math.isclose(total, host_total, rel_tol=1e-9), f"{scenario}: memory total {total} != host MemTotal {host_total}"
    processes = sum(s.value for s in samples if s.name.startswith("system_process_count"))
    host_processes = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit())
    # the container's own PID namespace holds monbridge alone; the node's holds every process
    assert processes > 1 and host_processes / 2 <= processes <= host_processes * 2, (processes, host_processes)
