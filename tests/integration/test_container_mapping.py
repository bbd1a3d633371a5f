"""How tests/integration/container.py maps the chart's pods to ``podman run`` and reads the
machine (apt's mirror, the ulimits podman may ask for), checked on the rendered chart without
podman: every scenario's pod, including those test_container.py does not run."""

from __future__ import annotations

import copy
import resource
import stat
from pathlib import Path

import pytest
import yaml

from tests.helm import chart
from tests.integration import container as ct

pytestmark = pytest.mark.integration


def rendered(scenario: str) -> list[dict]:
    return chart.manifests(chart.render(chart.scenario_values(scenario)))


def opt_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == option]


# --------------------------------------------------------------------------- the machine


def test_debian_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb-src deb\nURIs: http://mirror.example/debian/ http://other.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert ct.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_debian_mirror_from_one_line_sources_skips_disabled_and_other_suites(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n")
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "x.sources").write_text(
        "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nEnabled: no\n")
    assert ct.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_no_debian_mirror_is_an_error_naming_the_files_read(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb http://mirror.example/debian trixie main\n")
    with pytest.raises(ct.ContainerError, match=r"no Debian mirror for 'bookworm' in .*sources.list"):
        ct.debian_mirror(tmp_path)


def test_ulimits_are_within_the_hard_limits_and_pid_max() -> None:
    args = ct.ulimit_args()
    limits = dict(v.split("=") for v in opt_values(args, "--ulimit"))
    nofile_soft, nofile_hard = map(int, limits["nofile"].split(":"))
    nproc_soft, nproc_hard = map(int, limits["nproc"].split(":"))
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard_nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    assert nofile_soft == nofile_hard and (hard_nofile == resource.RLIM_INFINITY or nofile_hard == hard_nofile)
    assert nproc_soft == nproc_hard <= int(Path("/proc/sys/kernel/pid_max").read_text())
    assert hard_nproc == resource.RLIM_INFINITY or nproc_hard <= hard_nproc


def test_quantities() -> None:
    assert ct.quantity_bytes("64Mi") == 64 * 1024**2
    assert ct.quantity_bytes("1G") == 10**9
    assert ct.quantity_bytes(512) == 512
    assert ct.quantity_cpus("250m") == "0.25"
    with pytest.raises(ct.ContainerError, match="'1.5Gi'"):
        ct.quantity_bytes("1.5Gi")


# --------------------------------------------------------------------------- the pods


def test_host_network_pod_runs_on_the_host_network_listening_on_loopback(tmp_path: Path) -> None:
    run = ct.pod_run("host-metrics", rendered("host-metrics"), "img", tmp_path, 23456)
    args = run.run_args
    assert run.host_network and opt_values(args, "--network") == ["host"]
    assert "--publish" not in args
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    assert config["server"]["listen"] == "127.0.0.1:23456"
    assert f"{tmp_path / 'config'}:/etc/monbridge:ro" in opt_values(args, "--volume")
    assert "/proc:/host/proc:ro" in opt_values(args, "--volume")
    assert "/:/host/root:ro,rslave" in opt_values(args, "--volume")
    assert opt_values(args, "--user") == ["10001:10001"]
    assert "--read-only" in args and "--read-only-tmpfs=false" in args
    assert opt_values(args, "--cap-drop") == ["all"]
    assert opt_values(args, "--security-opt") == ["no-new-privileges"]
    assert opt_values(args, "--tmpfs") == [f"/tmp:rw,mode=1777,size={64 * 1024**2}"]
    assert "PROCFS_PATH=/host/proc" in opt_values(args, "--env")
    assert args[args.index("img"):] == ["img", "run", "--config", "/etc/monbridge/config.yaml",
                                        "--log-level", "info", "--log-format", "json"]
    assert (run.liveness_path, run.readiness_path, run.grace_seconds) == ("/-/healthy", "/-/ready", 30)


def test_pod_network_publishes_the_http_port_on_loopback_only(tmp_path: Path) -> None:
    docs = rendered("daemonset")
    run = ct.pod_run("daemonset", docs, "img", tmp_path, 23457)
    assert opt_values(run.run_args, "--publish") == ["127.0.0.1:23457:9464"]
    assert opt_values(run.run_args, "--memory") == [str(256 * 1024**2)]
    assert opt_values(run.run_args, "--hostname") == ["monbridge-standin"]
    # the ConfigMap's config, unchanged
    assert (tmp_path / "config" / "config.yaml").read_text() == chart.config_text(docs)


def test_secret_refs_and_secret_volumes_get_stand_ins(tmp_path: Path) -> None:
    secrets = {"monbridge-scrape-token": {"scrape-token": "s3cret"}, "otlp-backend": {"endpoint": "http://127.0.0.1:9"}}
    run = ct.pod_run("otlp-export", rendered("otlp-export"), "img", tmp_path, 23458, secrets=secrets)
    env = opt_values(run.run_args, "--env")
    assert "MONBRIDGE_OTLP_ENDPOINT=http://127.0.0.1:9" in env
    assert "MONBRIDGE_OTLP_HEADER_AUTHORIZATION=standin-authorization" in env
    token = tmp_path / "scrape-token" / "scrape-token"
    assert token.read_text() == "s3cret"
    assert stat.S_IMODE(token.stat().st_mode) == 0o644
    assert f"{tmp_path / 'scrape-token'}:/etc/monbridge-secrets:ro" in opt_values(run.run_args, "--volume")
    with pytest.raises(ct.ContainerError, match="no stand-in for Secret monbridge-scrape-token"):
        ct.pod_run("otlp-export", rendered("otlp-export"), "img", tmp_path / "again", 23458)


def test_statefulset_claims_are_fresh_directories_of_the_fs_group(tmp_path: Path) -> None:
    run = ct.pod_run("alerting", rendered("alerting"), "img", tmp_path, 23459)
    claim = tmp_path / "alert-state"
    assert f"{claim}:/var/lib/monbridge-alerting:rw" in opt_values(run.run_args, "--volume")
    assert claim.stat().st_gid == 10001 and claim.stat().st_mode & 0o070 == 0o070
    assert opt_values(run.run_args, "--group-add") == ["10001"]
    assert "POD_NAME=monbridge-0" in opt_values(run.run_args, "--env")


@pytest.mark.parametrize(("path", "value", "error"), [
    (("spec", "template", "spec", "shareProcessNamespace"), True, "shareProcessNamespace not mapped"),
    (("spec", "template", "spec", "containers", 0, "lifecycle"), {}, "lifecycle not mapped"),
    (("spec", "template", "spec", "securityContext", "sysctls"), [], "sysctls not mapped"),
    (("spec", "template", "spec", "volumes", 1), {"name": "tmp", "nfs": {"server": "x"}}, r"tmp \(nfs\) is not mapped"),
    (("spec", "template", "spec", "containers", 0, "securityContext", "runAsUser"), 0, "runAsNonRoot with runAsUser 0"),
])
def test_what_is_not_mapped_is_an_error(tmp_path: Path, path: tuple, value: object, error: str) -> None:
    docs = copy.deepcopy(rendered("daemonset"))
    obj = chart.workload(docs)
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    with pytest.raises(ct.ContainerError, match=error):
        ct.pod_run("daemonset", docs, "img", tmp_path, 23460)
