"""monbridge's container image built with podman, and the Helm chart's pod run without a cluster.

* ``base_tarball()``: a Debian base made by ``debootstrap --variant=minbase`` with Python, kept as
  a tarball in a cache directory under a name keyed by the debootstrap arguments (a second run
  reuses it). Only Debian's mirror and PyPI are reachable here, no container registry, so the
  Dockerfile's ``PYTHON_IMAGE`` is this base imported with ``podman import``.
* ``Podman``: podman with its storage, run directory and temporary files in one directory of the
  test's own (overlay storage, the ``runc`` runtime, ulimits the machine allows), every command
  bounded by a timeout and logged, long ones reporting progress.
* ``pod_run()``: the chart's rendered workload mapped to ``podman run`` as a kubelet would run its
  pod: the container's command and args, env (field refs and Secret refs filled with stand-in
  values), the rendered ConfigMaps and stand-in Secrets as files mounted where the pod mounts
  them, hostPath volumes bind-mounted (read-only where the mount is), emptyDir volumes as tmpfs,
  PersistentVolumeClaims as fresh directories, ``readOnlyRootFilesystem`` as ``--read-only``,
  ``runAsUser``/``runAsGroup`` as ``--user``, dropped capabilities, ``no-new-privileges``, and
  memory/CPU limits. Whatever of the pod spec it does not know how to map is an error, so the
  chart cannot grow a field the run silently ignores.

Networking: a pod with its own network gets it here too (podman's bridge network) and each
container port is published on a free port of 127.0.0.1 only (``-p 127.0.0.1:<free>:<port>``),
as a Service would reach it. A ``hostNetwork`` pod runs with ``--network host``, and since the
chart's config listens on 0.0.0.0 at a fixed port, its ``server.listen`` is the one thing of the
rendering changed: 127.0.0.1 and a free port, which the probes then use.

The machine's quirks handled here: ``crun`` refuses a hybrid cgroup v1/v2 layout, so the runtime
is ``runc``; the ulimits podman asks for as root by default are refused, so ``nofile`` and
``nproc`` are set to this process' hard limits (``nproc`` capped at the kernel's ``pid_max``,
which podman caps its own at, so its runtime may not go above that); and pip in the build reaches
PyPI through this machine's CA bundle, mounted into the build's RUN steps.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.helm.chart import monbridge_container, workload

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "helm" / "Dockerfile"
IGNORE_FILE = REPO / "helm" / "Dockerfile.dockerignore"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = Path("/etc/apt")

DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_INCLUDE = ("python3", "python3-venv", "python3-pip", "python-is-python3")
#: Left out of the cached base: debootstrap's downloaded packages and the package lists.
TAR_EXCLUDES = ("./var/cache/apt/archives/*.deb", "./var/lib/apt/lists/*")

DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0
COMMAND_TIMEOUT = 120.0
PROGRESS_EVERY = 20.0

Progress = Callable[[str], None]


class ContainerError(AssertionError):
    """A step of building or running the image failed; the message names the step and has its log."""


# --------------------------------------------------------------------------- machine facts


def debian_mirror(apt_dir: Path = APT_SOURCES, suite: str = DEBIAN_SUITE) -> str:
    """The first Debian mirror URI apt uses for ``suite`` (one-line ``sources.list`` files and
    deb822 ``.sources`` files), e.g. ``http://deb.debian.org/debian``."""
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list")),
             *sorted((apt_dir / "sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if ("deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split()
                        and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
                    return fields["uris"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    raise ContainerError(f"no Debian mirror for {suite!r} in {', '.join(str(p) for p in files)}")


def ulimit_args() -> list[str]:
    """``--ulimit`` options at this process' hard limits (``nproc`` capped at ``pid_max``)."""
    out = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(which)[1]
        if name == "nproc":
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
            hard = pid_max if hard == resource.RLIM_INFINITY else min(hard, pid_max)
        elif hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        out += ["--ulimit", f"{name}={hard}:{hard}"]
    return out


# --------------------------------------------------------------------------- bounded commands


def run_logged(argv: Sequence[str], log_path: Path, timeout: float, what: str, progress: Progress,
               stdin: bytes | None = None) -> str:
    """Run ``argv`` (its output appended to ``log_path``) within ``timeout`` s; returns its output.
    Every ``PROGRESS_EVERY`` s it reports how long it has run and its last line of output. On a
    timeout its whole process group is killed; on a timeout or a failure the error has the log's end."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        log.write(f"$ {' '.join(map(str, argv))}\n".encode())
        log.flush()
        proc = subprocess.Popen(list(map(str, argv)), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    started = time.monotonic()
    next_report = started + PROGRESS_EVERY
    while True:
        try:
            proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if now - started > timeout:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ContainerError(f"{what} did not finish within {timeout:.0f} s and was killed; "
                                 f"{_tail(log_path, start_offset)}")
        if now >= next_report:
            next_report = now + PROGRESS_EVERY
            progress(f"{what}: {now - started:.0f} s, {_last_line(log_path, start_offset)}")
    output = log_path.read_bytes()[start_offset:].decode(errors="replace").split("\n", 1)[1]
    if proc.returncode != 0:
        raise ContainerError(f"{what} failed with exit status {proc.returncode}; {_tail(log_path, start_offset)}")
    return output


def _last_line(path: Path, offset: int) -> str:
    lines = [ln for ln in path.read_bytes()[offset:].decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:160] if lines else "no output yet"


def _tail(path: Path, offset: int, lines: int = 40) -> str:
    text = path.read_bytes()[offset:].decode(errors="replace").splitlines()[-lines:]
    return f"the last lines of its log {path}:\n" + "\n".join(text)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- the Debian base


def debootstrap_args(mirror: str) -> list[str]:
    """debootstrap's arguments but the target directory (which goes before the mirror)."""
    return ["--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}", DEBIAN_SUITE, mirror]


def base_tarball(cache_dir: Path, progress: Progress, log_dir: Path, debootstrap: str = "debootstrap") -> Path:
    """The Debian base as a tarball in ``cache_dir``, named by a hash of the debootstrap arguments;
    made (and kept) when missing with the ``debootstrap`` program. Concurrent runs on one cache
    directory make it once."""
    args = debootstrap_args(debian_mirror())
    key = hashlib.sha256(json.dumps([*args, TAR_EXCLUDES]).encode()).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"debian-{DEBIAN_SUITE}-{key}.tar"
    if tarball.exists():
        progress(f"Debian base: cached {tarball}")
        return tarball
    with _locked(cache_dir / f"{key}.lock"):
        if tarball.exists():
            return tarball
        work = Path(tempfile.mkdtemp(prefix=f"debootstrap-{key}-", dir=cache_dir))
        try:
            rootfs = work / "rootfs"
            log = log_dir / "debootstrap.log"
            progress(f"Debian base: debootstrap {' '.join(args[:-1])} from {args[-1]} (log {log})")
            started = time.monotonic()
            run_logged([debootstrap, *args[:-1], rootfs, args[-1]], log, DEBOOTSTRAP_TIMEOUT, "debootstrap", progress)
            progress(f"Debian base: debootstrap took {time.monotonic() - started:.0f} s")
            partial = work / "base.tar"
            run_logged(["tar", "--numeric-owner", *(f"--exclude={x}" for x in TAR_EXCLUDES), "-C", rootfs,
                        "-cf", partial, "."], log, COMMAND_TIMEOUT, "tar of the Debian base", progress)
            os.replace(partial, tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return tarball


# --------------------------------------------------------------------------- podman


def storage_driver(directory: Path) -> str:
    """``overlay`` (the kernel's, as root), or ``vfs`` where ``directory`` is itself on an overlay
    (a CI job inside a container), which the kernel's overlay cannot stack on. On ext4 here, with
    other work on the machine, an overlay build took 170-220 s and a vfs one (every layer a full
    copy) about 9 minutes and 5.7 GB."""
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(directory)], capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT, check=True).stdout.strip()
    return "vfs" if fstype in ("overlayfs", "overlay") else "overlay"


class Podman:
    """podman with everything it keeps in ``home`` (storage, run directory, temporary files)."""

    def __init__(self, home: Path, progress: Progress) -> None:
        self.home = home
        self.progress = progress
        self.log = home / "podman.log"
        for d in ("storage", "run", "tmp"):
            (home / d).mkdir(parents=True, exist_ok=True)
        self.storage_driver = storage_driver(home)
        self.argv = ["podman", "--root", str(home / "storage"), "--runroot", str(home / "run"),
                     "--tmpdir", str(home / "tmp"), "--storage-driver", self.storage_driver, "--runtime", "runc",
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    def __call__(self, *args: str | Path, timeout: float = COMMAND_TIMEOUT, what: str | None = None) -> str:
        return run_logged([*self.argv, *args], self.log, timeout, what or f"podman {args[0]}", self.progress)

    def result(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """A podman command's status and output, not checked."""
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def import_base(self, tarball: Path, tag: str) -> str:
        started = time.monotonic()
        self("import", tarball, tag, what="podman import of the Debian base")
        self.progress(f"podman import: {time.monotonic() - started:.0f} s")
        return tag

    def build(self, base: str, tag: str) -> str:
        """``podman build`` of helm/Dockerfile (context: the repository) on ``base``."""
        started = time.monotonic()
        self.progress(f"podman build of {DOCKERFILE.relative_to(REPO)} on {base} (log {self.log})")
        self("build", "--runtime", "runc", *ulimit_args(),
             "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
             "--build-arg", f"PYTHON_IMAGE={base}", "--ignorefile", IGNORE_FILE,
             "-f", DOCKERFILE, "-t", tag, REPO, timeout=BUILD_TIMEOUT, what="podman build")
        self.progress(f"podman build: {time.monotonic() - started:.0f} s")
        return tag

    def inspect(self, kind: str, name: str) -> dict[str, Any]:
        out: list[dict[str, Any]] = json.loads(self(kind, "inspect", name))
        return out[0]

    def destroy(self) -> None:
        """Removes every container and image, then the directory."""
        for args in (("rm", "--all", "--force", "--time", "0"), ("rmi", "--all", "--force")):
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([*self.argv, *args], capture_output=True, timeout=COMMAND_TIMEOUT, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


# --------------------------------------------------------------------------- the pod as podman run

_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def quantity_bytes(q: str | int) -> int:
    """A Kubernetes quantity (``64Mi``, ``1G``, ``512``) in bytes."""
    m = re.fullmatch(r"(\d+)([kMGT]i?|Ki)?", str(q))
    if not m:
        raise ContainerError(f"quantity {q!r}: not understood")
    return int(m.group(1)) * _UNITS[m.group(2) or ""]


def quantity_cpus(q: str | int | float) -> str:
    s = str(q)
    return str(int(s[:-1]) / 1000) if s.endswith("m") else s


@dataclass
class PodRun:
    """One pod's container as ``podman run`` options, and what the test checks against."""

    scenario: str
    kind: str
    name: str
    run_args: list[str]  # after "podman run"
    port: int  # where the container's "http" port answers on 127.0.0.1
    liveness_path: str
    readiness_path: str
    grace_seconds: int
    uid: int
    gid: int
    host_network: bool
    files: Path
    mounts: dict[str, str] = field(default_factory=dict)  # container path -> host path or "tmpfs"


_KNOWN_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                   "capabilities", "seccompProfile", "fsGroup", "fsGroupChangePolicy", "privileged"}
_KNOWN_POD = {"serviceAccountName", "automountServiceAccountToken", "hostNetwork", "dnsPolicy",
              "terminationGracePeriodSeconds", "securityContext", "containers", "volumes", "tolerations",
              "priorityClassName", "affinity", "nodeSelector", "topologySpreadConstraints"}
_KNOWN_CONTAINER = {"name", "image", "imagePullPolicy", "command", "args", "ports", "env", "livenessProbe",
                    "readinessProbe", "securityContext", "volumeMounts", "resources"}


def pod_run(scenario: str, docs: list[dict[str, Any]], image: str, files: Path, port: int, *,
            secrets: Mapping[str, Mapping[str, str]] | None = None, node_name: str | None = None) -> PodRun:
    """The rendered workload of ``docs`` (one scenario's manifests) as ``podman run`` options for
    ``image``. ConfigMaps come from ``docs``; Secrets from ``secrets`` (name -> key -> value), a
    Secret key an env var refers to and ``secrets`` lacks gets the stand-in ``standin-<key>``.
    Volume contents are written under ``files``; ``port`` is the free 127.0.0.1 port the
    container's ``http`` port is reached on."""
    secrets = secrets or {}
    node_name = node_name or socket.gethostname()
    work = workload(docs)
    kind = work["kind"]
    namespace = work["metadata"].get("namespace", "default")
    pod = work["spec"]["template"]["spec"]
    container = monbridge_container(docs)
    _refuse_unknown(f"{kind} pod spec", pod, _KNOWN_POD)
    _refuse_unknown(f"{kind} container {container['name']}", container, _KNOWN_CONTAINER)
    if len(pod["containers"]) != 1:
        raise ContainerError(f"{kind}: {len(pod['containers'])} containers; one is mapped")
    pod_name = f"{work['metadata']['name']}-0" if kind == "StatefulSet" else f"{work['metadata']['name']}-standin"
    host_network = bool(pod.get("hostNetwork"))
    name = f"monbridge-test-{scenario}-{uuid.uuid4().hex[:8]}"
    args: list[str] = ["--detach", "--name", name, *ulimit_args()]
    config_maps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}

    # security context: the container's fields over the pod's
    security = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    _refuse_unknown(f"{kind} securityContext", security, _KNOWN_SECURITY)
    uid, gid = security.get("runAsUser"), security.get("runAsGroup", security.get("runAsUser"))
    if uid is None:
        raise ContainerError(f"{kind}: no runAsUser; the run needs a numeric user to check runAsNonRoot against")
    if security.get("runAsNonRoot") and uid == 0:
        raise ContainerError(f"{kind}: runAsNonRoot with runAsUser 0")
    args += ["--user", f"{uid}:{gid}"]
    if "fsGroup" in security:
        args += ["--group-add", str(security["fsGroup"])]
    if security.get("privileged"):
        raise ContainerError(f"{kind}: a privileged container is not run")
    if security.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    caps = security.get("capabilities", {})
    args += [a for c in caps.get("drop", []) for a in ("--cap-drop", c.lower())]
    args += [a for c in caps.get("add", []) for a in ("--cap-add", c.lower())]
    seccomp = security.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise ContainerError(f"{kind}: seccompProfile {seccomp} is not mapped")

    # resources: limits only (requests are a scheduler's business)
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        args += ["--memory", str(quantity_bytes(limits["memory"]))]
    if "cpu" in limits:
        args += ["--cpus", quantity_cpus(limits["cpu"])]

    # env
    field_values = {"metadata.name": pod_name, "metadata.namespace": namespace, "spec.nodeName": node_name,
                    "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
    for var in container.get("env", []):
        if "value" in var:
            value = str(var["value"])
        elif "fieldRef" in var.get("valueFrom", {}):
            value = field_values[var["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            value = secrets.get(ref["name"], {}).get(ref["key"], f"standin-{ref['key']}")
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            value = config_maps[ref["name"]]["data"][ref["key"]]
        else:
            raise ContainerError(f"{kind}: env {var['name']}: {var.get('valueFrom')} is not mapped")
        if "$(" in value:
            raise ContainerError(f"{kind}: env {var['name']}: $(VAR) references are not mapped")
        args += ["--env", f"{var['name']}={value}"]

    # ports and probes
    ports = {p.get("name", str(p["containerPort"])): int(p["containerPort"]) for p in container.get("ports", [])}
    if "http" not in ports:
        raise ContainerError(f"{kind}: no container port named http")

    def probe_path(probe_name: str) -> str:
        get = container[probe_name]["httpGet"]
        probe_port = ports.get(get["port"], get["port"]) if isinstance(get["port"], str) else get["port"]
        if probe_port != ports["http"] or get.get("scheme", "HTTP") != "HTTP":
            raise ContainerError(f"{kind}: {probe_name} on {get}: only HTTP probes on the http port are mapped")
        return str(get["path"])

    liveness, readiness = probe_path("livenessProbe"), probe_path("readinessProbe")

    # volumes
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for claim in work["spec"].get("volumeClaimTemplates", []):
        volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
    mounts: dict[str, str] = {}
    listen_override = f"127.0.0.1:{port}" if host_network else None
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        read_only = bool(mount.get("readOnly"))
        sub = mount.get("subPath", "")
        kind_of = next(k for k in volume if k != "name")
        if kind_of == "emptyDir":
            if sub:
                raise ContainerError(f"{kind}: emptyDir {mount['name']} with subPath is not mapped")
            size = quantity_bytes(volume["emptyDir"]["sizeLimit"]) if volume["emptyDir"].get("sizeLimit") else None
            opts = ["rw" if not read_only else "ro", "mode=1777", *([f"size={size}"] if size else [])]
            args += ["--tmpfs", f"{target}:{','.join(opts)}"]
            mounts[target] = "tmpfs"
            continue
        if kind_of == "hostPath":
            source = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "Directory" and not source.is_dir():
                raise ContainerError(f"{kind}: hostPath {source} is not a directory")
        elif kind_of in ("configMap", "secret"):
            source = files / mount["name"]
            if not source.exists():
                _write_volume(kind, volume, source, config_maps, secrets, listen_override)
        elif kind_of == "persistentVolumeClaim":
            source = files / mount["name"]
            source.mkdir(parents=True, exist_ok=True)
            # a freshly provisioned volume, group-owned by fsGroup as the kubelet leaves it
            os.chown(source, 0, int(security.get("fsGroup", gid)))
            source.chmod(0o2775)
        else:
            raise ContainerError(f"{kind}: volume {mount['name']} ({kind_of}) is not mapped")
        if sub:
            source = source / sub
        options = ["ro" if read_only else "rw"]
        propagation = mount.get("mountPropagation")
        if propagation == "HostToContainer":
            options.append("rslave")
        elif propagation not in (None, "None"):
            raise ContainerError(f"{kind}: mountPropagation {propagation} is not mapped")
        args += ["--volume", f"{source}:{target}:{','.join(options)}"]
        mounts[target] = str(source)

    # network
    if host_network:
        args += ["--network", "host"]
    else:
        args += ["--hostname", pod_name, "--publish", f"127.0.0.1:{port}:{ports['http']}"]

    if "command" in container:
        args += ["--entrypoint", json.dumps(container["command"])]
    args += [image, *container.get("args", [])]
    return PodRun(scenario=scenario, kind=kind, name=name, run_args=args, port=port, liveness_path=liveness,
                  readiness_path=readiness, grace_seconds=int(pod.get("terminationGracePeriodSeconds", 30)),
                  uid=int(uid), gid=int(gid), host_network=host_network, files=files, mounts=mounts)


def _refuse_unknown(where: str, obj: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise ContainerError(f"{where}: {', '.join(unknown)} not mapped to podman run")


def _write_volume(kind: str, volume: Mapping[str, Any], target: Path, config_maps: Mapping[str, Any],
                  secrets: Mapping[str, Mapping[str, str]], listen_override: str | None) -> None:
    """A ConfigMap or Secret volume's files, as the kubelet projects them (``items`` honoured)."""
    if "configMap" in volume:
        source = volume["configMap"]
        name = source["name"]
        if name not in config_maps:
            raise ContainerError(f"{kind}: volume {volume['name']}: ConfigMap {name} is not part of the rendering")
        data = {k: str(v) for k, v in config_maps[name].get("data", {}).items()}
        data.update({k: base64.b64decode(v).decode() for k, v in config_maps[name].get("binaryData", {}).items()})
        if listen_override is not None and "config.yaml" in data:
            config = yaml.safe_load(data["config.yaml"])
            config.setdefault("server", {})["listen"] = listen_override
            data["config.yaml"] = yaml.safe_dump(config, sort_keys=False)
    else:
        source = volume["secret"]
        name = source["secretName"]
        if name not in secrets:
            raise ContainerError(f"{kind}: volume {volume['name']}: no stand-in for Secret {name}")
        data = dict(secrets[name])
    items = source.get("items")
    files = {i["path"]: data[i["key"]] for i in items} if items else data
    mode = int(source.get("defaultMode", 0o644))
    target.mkdir(parents=True)
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    target.chmod(0o755)


def host_memtotal_bytes(proc: Path = Path("/proc")) -> int:
    for line in (proc / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ContainerError(f"no MemTotal in {proc}/meminfo")
