"""The container image (helm/Dockerfile), tested without a Docker engine: its shape, the files it
copies, and its build and entrypoint replayed in a fresh virtual environment."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from tests.helm.chart import REPO

DOCKERFILE = REPO / "helm" / "Dockerfile"
IGNORE_FILE = REPO / "helm" / "Dockerfile.dockerignore"
BAKED_CONFIG = "/etc/monbridge/config.yaml"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def stages() -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from another stage)."""
    out = []
    for word, args in instructions():
        if word in ("COPY", "ADD"):
            parts = shlex.split(args)
            if any(p.startswith("--from=") for p in parts):
                continue
            paths = [p for p in parts if not p.startswith("--")]
            out.append((paths[:-1], paths[-1]))
    return out


def arg_default(name: str) -> str:
    for word, args in instructions():
        if word == "ARG" and args.startswith(name + "="):
            return args.split("=", 1)[1]
    raise AssertionError(f"ARG {name} has no default")


# --------------------------------------------------------------------------- the Dockerfile


def test_dockerfile_is_multi_stage_slim_non_root_with_monbridge_as_entrypoint() -> None:
    build, runtime = stages()
    base = arg_default("PYTHON_IMAGE")
    assert base == "python:3.11-slim"
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    assert any(w == "RUN" and "pip wheel" in a for w, a in build)
    runtime_runs = " ".join(a for w, a in runtime if w == "RUN")
    assert "python -m venv /opt/monbridge" in runtime_runs and "--no-index" in runtime_runs
    last = {w: a for w, a in runtime}
    assert last["USER"] == "10001:10001"
    assert "--uid 10001" in runtime_runs
    assert json.loads(last["ENTRYPOINT"]) == ["monbridge"]
    assert json.loads(last["CMD"]) == ["run", "--config", BAKED_CONFIG]
    assert "PATH=/opt/monbridge/bin:$PATH" in last["ENV"]
    assert last["EXPOSE"] == "9464"


def test_every_copied_file_exists_in_the_context_and_is_not_ignored() -> None:
    allowed = {line[1:].rstrip("/") for line in IGNORE_FILE.read_text().splitlines() if line.startswith("!")}
    sources = [s for srcs, _ in copies() for s in srcs]
    assert sources, "the Dockerfile copies nothing from the context"
    for src in sources:
        path = REPO / src
        assert path.exists(), f"COPY {src}: no such file in the build context (the repository root)"
        assert src.rstrip("/") in allowed, f"COPY {src}: {IGNORE_FILE.name} leaves it out of the context"
    # What the package build reads: pyproject.toml's readme and packages.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    top_level = {pattern.rstrip("*").split(".")[0] for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {project["project"]["readme"], "pyproject.toml", *top_level}
    assert needed <= {s.rstrip("/") for s in sources}


def test_baked_config_is_copied_to_the_default_path_and_listens_on_all_interfaces() -> None:
    baked = [srcs for srcs, dest in copies() if dest == BAKED_CONFIG]
    assert baked == [["helm/image-config.yaml"]]
    config = yaml.safe_load((REPO / "helm" / "image-config.yaml").read_text())
    assert config["server"]["listen"] == "0.0.0.0:9464"
    # Listening on every interface without auth: state-changing requests only from loopback.
    from bridge.config import parse_config
    from bridge.registry import PluginRegistry

    server = parse_config((REPO / "helm" / "image-config.yaml").read_text(), "image-config.yaml",
                          PluginRegistry().discover(), env={}).model.server
    assert server.auth is None and server.unauthenticated_writes_from
    assert all(net.is_loopback for net in server.unauthenticated_writes_from)


# --------------------------------------------------------------------------- the build, replayed


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PYTHON", "VIRTUAL_ENV", "PROCFS_PATH",
                                                                   "MONBRIDGE_ROOTFS"))}
    return {**env, **extra}


def _run(*cmd: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=_clean_env(),
                            timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_image_build_and_entrypoint_in_a_fresh_virtualenv(tmp_path: Path, free_port) -> None:
    """What the Dockerfile does, without Docker: a context holding only the COPY'd files, wheels
    built from it (build stage), a new venv installing monbridge from those wheels only (runtime
    stage), then the entrypoint: --help, validate and run on the baked config, SIGTERM."""
    context = tmp_path / "context"
    for srcs, _dest in copies():
        for src in srcs:
            target = context / src
            target.parent.mkdir(parents=True, exist_ok=True)
            if (REPO / src).is_dir():
                shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(REPO / src, target)
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels, ".", cwd=context)
    assert list(wheels.glob("monbridge-*.whl")), "no monbridge wheel was built"

    venv = tmp_path / "opt-monbridge"
    _run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    _run(venv / "bin" / "pip", "install", "--quiet", "--no-index", "--find-links", wheels, "monbridge", cwd=tmp_path)
    monbridge = venv / "bin" / "monbridge"

    help_text = _run(monbridge, "--help", cwd=tmp_path).stdout
    for command in ("run", "validate", "plugins", "test"):
        assert command in help_text
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert _run(monbridge, "--version", cwd=tmp_path).stdout.strip().endswith(version)
    plugins = _run(monbridge, "plugins", cwd=tmp_path).stdout
    for plugin_id in ("monitoring.metrics.system", "monitoring.metrics.process", "monitoring.integration.otlp"):
        assert plugin_id in plugins
    baked = REPO / "helm" / "image-config.yaml"
    _run(monbridge, "validate", "--config", baked, cwd=tmp_path)

    # The image's CMD, on a free loopback port instead of 0.0.0.0:9464.
    port = free_port()
    proc = subprocess.Popen([str(monbridge), "run", "--config", str(baked), "--listen", f"127.0.0.1:{port}"],
                            cwd=tmp_path, env=_clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"monbridge exited with {proc.returncode}:\n{proc.stdout.read()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "monbridge never became ready"
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert b"system_cpu" in r.read()
        reload = f"http://127.0.0.1:{port}/-/reload"
        with urllib.request.urlopen(urllib.request.Request(reload, method="POST"), timeout=10) as r:
            assert r.status == 200
        forged = urllib.request.Request(reload, data=b"", method="POST",
                                        headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
        try:
            urllib.request.urlopen(forged, timeout=10)
            raise AssertionError("a cross-origin text/plain reload was taken")
        except urllib.error.HTTPError as e:
            assert e.code == 403
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()

