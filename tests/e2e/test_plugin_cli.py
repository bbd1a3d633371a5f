"""``monbridge plugin`` as a publisher and a user run it: keygen, sign, verify, install, list."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.packages_for_tests import MODULE, archive, flip, manifest_bytes, members, repack

CLI = [sys.executable, "-m", "bridge.cli", "plugin"]
PKG = "monitoring.metrics.acme-queue-1.2.0.mbpkg"


class Run:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.outputs: list[str] = []
        # nothing outside tmp_path: the per-user defaults point into it
        self.env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                    "HOME": str(tmp_path / "home")}
        for var in ("MONBRIDGE_PLUGIN_DIR", "MONBRIDGE_TRUST_DIR"):
            self.env.pop(var, None)

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=self.tmp, env=self.env)
        self.outputs.append(out.stdout + out.stderr)
        assert out.returncode == code, (args, out.returncode, out.stdout, out.stderr)
        return out


@pytest.fixture
def run(tmp_path) -> Run:
    return Run(tmp_path)


def keygen(run: Run, publisher: str = "Acme Inc", out: str = "keys") -> tuple[Path, Path]:
    run("keygen", "--publisher", publisher, "--out", out)
    [private] = sorted((run.tmp / out).glob("*.key"))
    return private, private.with_suffix(".pub")


def signed(run: Run, private: Path, **changes: object) -> Path:
    (run.tmp / "plugin.wasm").write_bytes(MODULE)
    (run.tmp / "metadata.json").write_bytes(manifest_bytes(**changes))
    out = run("sign", "plugin.wasm", "--manifest", "metadata.json", "--key", str(private))
    name = f"monitoring.metrics.acme-queue-{changes.get('version', '1.2.0')}.mbpkg"
    assert out.stdout.startswith(f"{name}: monitoring.metrics.acme-queue")
    return run.tmp / name


def test_keygen_sign_verify_install_list(run, tmp_path):
    private, public = keygen(run)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    secret = json.loads(private.read_text())["private_key"]
    key_id = json.loads(public.read_text())["key_id"]
    package = signed(run, private)
    trust = tmp_path / "config" / "monbridge" / "trust"
    # not trusted yet: no trust store
    out = run("verify", str(package), code=2)
    assert f"error: {trust}: no trust store there" in out.stderr
    trust.mkdir(parents=True)
    out = run("verify", str(package), code=1)
    assert f"refused: {package}: unknown_signer: the signing key {key_id} is not in the trust store" in out.stderr
    (trust / public.name).write_bytes(public.read_bytes())
    out = run("verify", str(package))
    assert out.stdout.startswith(f"{package}: verified: monitoring.metrics.acme-queue 1.2.0 (metric_collector), "
                                 f"signed by {key_id} (Acme Inc)")
    assert "permissions: paths=/var/lib/acme hosts=queue.internal:8080" in out.stdout
    out = run("install", str(package))
    target = tmp_path / "data" / "monbridge" / "plugins" / "monitoring.metrics.acme-queue.mbpkg"
    assert f"installed monitoring.metrics.acme-queue 1.2.0 (metric_collector) at {target}" in out.stdout
    assert target.read_bytes() == package.read_bytes()
    out = run("list")
    assert out.stdout.split() == ["monitoring.metrics.acme-queue", "1.2.0", "metric_collector", f"signer={key_id}",
                                  "(Acme", "Inc)", "permissions:", "paths=/var/lib/acme", "hosts=queue.internal:8080",
                                  "verified"]
    # tampered after installation: list says so, and exits 1
    target.write_bytes(repack(target.read_bytes(), plugin_wasm=flip(MODULE, 5)))
    out = run("list", code=1)
    assert "monitoring.metrics.acme-queue.mbpkg: REFUSED: tampered: bad signature" in out.stdout
    # explicit directories instead of the defaults
    other = tmp_path / "elsewhere"
    run("install", str(package), "--dir", str(other), "--trust", str(trust))
    assert "verified" in run("list", "--dir", str(other), "--trust", str(trust)).stdout
    assert all(secret not in o for o in run.outputs)


def test_refused_packages_say_why(run, tmp_path):
    private, public = keygen(run)
    package = signed(run, private)
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / public.name).write_bytes(public.read_bytes())
    data = package.read_bytes()
    files = members(data)

    def refused(name: str, content: bytes, says: str) -> None:
        path = tmp_path / name
        path.write_bytes(content)
        out = run("verify", str(path), "--trust", str(trust), code=1)
        assert out.stderr.startswith(f"error: refused: {path}: "), out.stderr
        assert says in out.stderr, out.stderr
        run("install", str(path), "--trust", str(trust), "--dir", str(tmp_path / "plugins"), code=1)
        assert not (tmp_path / "plugins").exists()

    refused("unsigned.mbpkg", archive({k: v for k, v in files.items() if k != "signature.json"}),
            "unsigned: no signature.json")
    refused("module.mbpkg", repack(data, plugin_wasm=flip(MODULE, 7)), "tampered: bad signature by")
    refused("manifest.mbpkg", repack(data, metadata_json=files["metadata.json"].replace(b"1.2.0", b"1.2.1")),
            "metadata.json changed after signing")
    refused("traversal.mbpkg", archive([("metadata.json", files["metadata.json"]), ("../../plugin.wasm", MODULE),
                                        ("signature.json", files["signature.json"])]),
            "../../plugin.wasm: malformed: a path with '..'")
    refused("bomb.mbpkg", archive({**files, "plugin.wasm": b"\0" * (17 << 20)}),
            "plugin.wasm: malformed: larger than 16777216 bytes decompressed")
    # a stranger's key
    stranger, _ = keygen(run, "Stranger", out="stranger")
    refused("stranger.mbpkg", signed(run, stranger).read_bytes(), "unknown_signer")
    # a revoked key
    key_id = json.loads(public.read_text())["key_id"]
    (trust / "revocations.json").write_text(json.dumps({"revoked": [{"key_id": key_id, "reason": "leaked"}]}))
    refused("revoked.mbpkg", data, f"revoked_key: the signing key {key_id} is revoked: leaked")
    (trust / "revocations.json").unlink()
    # an expired key (the trust store's copy says so)
    doc = json.loads(public.read_text())
    (trust / public.name).write_text(json.dumps({**doc, "not_after": "2020-01-01T00:00:00Z"}))
    refused("expired.mbpkg", data, "expired_key: the signing key")


def test_install_refuses_another_signers_package_of_the_same_id(run, tmp_path):
    acme, acme_pub = keygen(run)
    mallory, mallory_pub = keygen(run, "Mallory", out="mallory")
    trust = tmp_path / "trust"
    trust.mkdir()
    for pub in (acme_pub, mallory_pub):
        (trust / pub.name).write_bytes(pub.read_bytes())
    plugins = tmp_path / "plugins"
    run("install", str(signed(run, acme)), "--trust", str(trust), "--dir", str(plugins))
    hijack = signed(run, mallory, version="9.9.9")
    out = run("install", str(hijack), "--trust", str(trust), "--dir", str(plugins), code=1)
    assert "conflict: monitoring.metrics.acme-queue is installed" in out.stderr and "--force" in out.stderr
    assert "1.2.0" in run("list", "--trust", str(trust), "--dir", str(plugins)).stdout
    run("install", str(hijack), "--trust", str(trust), "--dir", str(plugins), "--force")
    assert "9.9.9" in run("list", "--trust", str(trust), "--dir", str(plugins)).stdout


def test_bad_inputs_name_the_file(run, tmp_path):
    private, _ = keygen(run)
    (tmp_path / "plugin.wasm").write_bytes(MODULE)
    (tmp_path / "metadata.json").write_bytes(manifest_bytes(version="one"))
    out = run("sign", "plugin.wasm", "--manifest", "metadata.json", "--key", str(private), code=2)
    assert out.stderr.startswith("error: metadata.json: invalid manifest: version:") and "not a semantic version" in out.stderr
    (tmp_path / "metadata.json").write_bytes(manifest_bytes())
    (tmp_path / "plugin.wat").write_text("(module)")
    out = run("sign", "plugin.wat", "--manifest", "metadata.json", "--key", str(private), code=2)
    assert out.stderr.startswith("error: plugin.wat: the module is not a WebAssembly binary")
    out = run("sign", "missing.wasm", "--manifest", "metadata.json", "--key", str(private), code=2)
    assert "error: missing.wasm: cannot read: No such file or directory" in out.stderr
    private.chmod(0o644)
    out = run("sign", "plugin.wasm", "--manifest", "metadata.json", "--key", str(private), code=2)
    assert f"error: {private}: a private key readable by group or others" in out.stderr
    private.chmod(0o600)
    out = run("sign", "plugin.wasm", "--manifest", "metadata.json", "--key", "metadata.json", code=2)
    assert "error: metadata.json: " in out.stderr
    trust = tmp_path / "trust"
    trust.mkdir()
    (trust / "broken.pub").write_text("{")
    out = run("verify", str(signed(run, private)), "--trust", str(trust), code=2)
    assert f"error: {trust / 'broken.pub'}: broken.pub is not valid JSON" in out.stderr
    out = run("keygen", "--publisher", "x", "--out", "keys", "--days", "0", code=2)
    assert "--days" in out.stderr


def test_help_explains_the_commands(run):
    top = subprocess.run([sys.executable, "-m", "bridge.cli", "--help"], capture_output=True, text=True,
                         timeout=60).stdout
    assert "plugin" in top
    out = run("--help").stdout
    for cmd in ("keygen", "sign", "verify", "install", "list", "Exit status"):
        assert cmd in out
    assert "--manifest" in run("sign", "--help").stdout and "--force" in run("install", "--help").stdout
    assert "MONBRIDGE_TRUST_DIR" in run("verify", "--help").stdout and "--config" in run("list", "--help").stdout


def test_the_directories_come_from_the_options_the_config_or_the_environment(run, tmp_path):
    private, public = keygen(run)
    package = signed(run, private)
    trust = tmp_path / "configured-trust"
    trust.mkdir()
    (trust / public.name).write_bytes(public.read_bytes())
    config = tmp_path / "agent.yaml"
    config.write_text("packages:\n  dir: ${PLUGINS}\n  trust: " + str(trust) + "\n")
    run.env.update(PLUGINS=str(tmp_path / "configured"), MONBRIDGE_PLUGIN_DIR=str(tmp_path / "from-env"),
                   MONBRIDGE_TRUST_DIR=str(tmp_path / "no-such-trust"))
    # the config's packages section wins over the environment ...
    out = run("install", str(package), "--config", str(config))
    assert f"at {tmp_path / 'configured' / 'monitoring.metrics.acme-queue.mbpkg'}" in out.stdout
    assert "verified" in run("list", "-c", str(config)).stdout
    # ... the options over the config
    run("install", str(package), "--config", str(config), "--dir", str(tmp_path / "option"))
    assert (tmp_path / "option" / "monitoring.metrics.acme-queue.mbpkg").is_file()
    # without either, the environment
    out = run("list", code=2)
    assert f"error: {tmp_path / 'no-such-trust'}: no trust store there" in out.stderr
    config.write_text("packages: {trusted: /x}\n")
    out = run("list", "--config", str(config), code=2)
    assert f"error: {config}: packages.trusted: unknown key" in out.stderr
