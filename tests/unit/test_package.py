"""Signed plugin packages: the manifest, the bounded reader, signatures, the trust store, installing."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.api import PluginType
from bridge.config import ConfigError, parse_config
from bridge.isolation import Grants
from bridge.package import (
    MAX_MANIFEST_BYTES,
    MAX_MODULE_BYTES,
    PackageError,
    Refusal,
    SigningKey,
    TrustStore,
    TrustStoreError,
    api_compatible,
    check_permissions,
    default_plugin_dir,
    default_trust_dir,
    generate_key,
    inspect_installed,
    install_package,
    installed,
    parse_manifest,
    read_package,
    sign_package,
    verify_bytes,
    verify_package,
    version_matches,
)
from bridge.registry import PluginRegistry
from tests.unit.packages_for_tests import MODULE, archive, flip, manifest, manifest_bytes, members, repack

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=1)


def trust_dir(tmp_path: Path, *keys: SigningKey, name: str = "trust") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    for k in keys:
        (d / f"{k.key_id}.pub").write_bytes(k.public_document())
    return d


@pytest.fixture
def key() -> SigningKey:
    return generate_key("Acme Inc", days=30, now=NOW)


@pytest.fixture
def trust(tmp_path, key) -> TrustStore:
    return TrustStore.load(trust_dir(tmp_path, key))


@pytest.fixture
def package(key) -> bytes:
    return sign_package(manifest_bytes(), MODULE, key, now=NOW)


def refused(data: bytes, trust: TrustStore, now: datetime = LATER) -> PackageError:
    with pytest.raises(PackageError) as e:
        verify_bytes(data, "acme.mbpkg", trust, now)
    assert str(e.value).startswith("acme.mbpkg: "), str(e.value)
    return e.value


# --------------------------------------------------------------------------- signing and verifying


def test_a_signed_package_verifies_with_its_manifest_module_and_signer(package, trust, key):
    v = verify_bytes(package, "acme.mbpkg", trust, LATER)
    assert v.module_bytes == MODULE
    assert v.manifest.id == "monitoring.metrics.acme-queue" and v.manifest.plugin_type is PluginType.METRIC_COLLECTOR
    assert v.manifest.permissions == Grants(hosts=["queue.internal:8080"], paths=["/var/lib/acme"])
    assert (v.signer.key_id, v.signer.publisher, v.signer.not_after) == (key.key_id, "Acme Inc", NOW + timedelta(days=30))
    assert v.signed_at == NOW
    # what the WASM host takes: exactly these keys
    assert v.host_manifest == {"id": "monitoring.metrics.acme-queue", "name": "Acme queue collector",
                               "version": "1.2.0", "plugin_type": "metric_collector", "api_version": "1.0",
                               "description": "queue depth of the Acme broker", "author": "Acme Inc"}
    assert sorted(members(package)) == ["metadata.json", "plugin.wasm", "signature.json"]


def test_the_module_member_is_named_by_the_manifest(key, trust):
    data = sign_package(manifest_bytes(module="queue.wasm"), MODULE, key, now=NOW)
    assert "queue.wasm" in members(data)
    assert verify_bytes(data, "acme.mbpkg", trust, LATER).manifest.module == "queue.wasm"


def test_an_unsigned_package_is_refused(package, trust):
    files = members(package)
    del files["signature.json"]
    e = refused(archive(files), trust)
    assert e.reason is Refusal.UNSIGNED and "not signed" in str(e)


def test_one_flipped_byte_in_the_module_is_refused(package, trust):
    for offset in (0, len(MODULE) // 2, len(MODULE) - 1):
        e = refused(repack(package, plugin_wasm=flip(MODULE, offset)), trust)
        assert e.reason is Refusal.TAMPERED
        assert "plugin.wasm changed after signing" in str(e) and "metadata.json" not in str(e)


def test_one_flipped_byte_in_the_manifest_is_refused(package, trust):
    doc = members(package)["metadata.json"]
    # in a value that stays valid JSON (the version's patch number: 1.2.0 -> 1.2.1)
    offset = doc.index(b'"1.2.0"') + 5
    e = refused(repack(package, metadata_json=flip(doc, offset)), trust)
    assert e.reason is Refusal.TAMPERED and "metadata.json changed after signing" in str(e)


def test_one_flipped_byte_in_the_signature_is_refused(package, trust):
    sig = json.loads(members(package)["signature.json"])
    raw = base64.b64decode(sig["signature"])
    for offset in (0, 31, 63):
        sig["signature"] = base64.b64encode(flip(raw, offset)).decode()
        e = refused(repack(package, signature_json=json.dumps(sig).encode()), trust)
        assert e.reason is Refusal.TAMPERED and "the signature does not match the package" in str(e)


def test_every_flipped_bit_of_the_package_file_is_refused_or_changes_nothing_signed(package, trust):
    """A flipped bit anywhere in the file is refused, unless it falls in zip bookkeeping the
    reader does not use (a date, a version field): then what verifies is what was signed."""
    reasons = set()
    for offset in range(len(package)):
        for bit in (0x01, 0x80):
            data = bytearray(package)
            data[offset] ^= bit
            try:
                v = verify_bytes(bytes(data), "acme.mbpkg", trust, LATER)
            except PackageError as e:
                reasons.add(e.reason)
            else:
                assert v.module_bytes == MODULE and v.manifest == parse_manifest(manifest_bytes(), "m")
    assert Refusal.MALFORMED in reasons


def test_a_signature_field_changed_is_refused(package, trust, key):
    sig = json.loads(members(package)["signature.json"])
    for field, value, reason in (("signed_at", "2026-06-01T12:00:01Z", Refusal.TAMPERED),
                                 ("key_id", "0" * 32, Refusal.UNKNOWN_SIGNER),
                                 ("algorithm", "rsa", Refusal.MALFORMED),
                                 ("signature", "not base64!", Refusal.MALFORMED)):
        changed = {**sig, field: value}
        e = refused(repack(package, signature_json=json.dumps(changed).encode()), trust)
        assert e.reason is reason, (field, str(e))
    e = refused(repack(package, signature_json=b"{"), trust)
    assert e.reason is Refusal.MALFORMED and e.member == "signature.json" and "not valid JSON" in str(e)
    e = refused(repack(package, signature_json=json.dumps({**sig, "extra": 1}).encode()), trust)
    assert "extra: unknown key" in str(e)


def test_a_package_by_a_key_not_in_the_trust_store_is_refused(package, tmp_path):
    other = generate_key("Someone else", now=NOW)
    e = refused(package, TrustStore.load(trust_dir(tmp_path, other, name="t2")))
    assert e.reason is Refusal.UNKNOWN_SIGNER and "is not in the trust store" in str(e)
    assert refused(package, TrustStore.load(tmp_path / "missing")).reason is Refusal.UNKNOWN_SIGNER


def test_a_package_signed_by_another_key_claiming_a_trusted_key_id_is_refused(package, trust, key):
    forger = generate_key("Acme Inc", now=NOW)
    forger.key_id = key.key_id  # claims the trusted key's id
    forged = sign_package(manifest_bytes(), MODULE, forger, now=NOW)
    e = refused(forged, trust)
    assert e.reason is Refusal.TAMPERED


def test_a_package_whose_key_expired_is_refused_at_verify_time(package, trust, key):
    assert verify_bytes(package, "acme.mbpkg", trust, key.not_after).signer.key_id == key.key_id
    e = refused(package, trust, now=key.not_after + timedelta(seconds=1))
    assert e.reason is Refusal.EXPIRED_KEY
    assert "expired at 2026-07-01T12:00:00Z" in str(e) and "verifies only while its key is valid" in str(e)


def test_a_package_signed_after_its_key_expired_is_refused(package, tmp_path, key):
    # the trust store's not_after (the operator's) earlier than the signing time
    doc = json.loads(key.public_document())
    doc["not_after"] = "2026-06-01T11:59:30Z"
    d = tmp_path / "t3"
    d.mkdir()
    (d / "acme.pub").write_text(json.dumps(doc))
    e = refused(package, TrustStore.load(d), now=NOW - timedelta(minutes=1))
    assert e.reason is Refusal.EXPIRED_KEY and "signed at 2026-06-01T12:00:00Z, after the signing key" in str(e)


def test_signing_with_an_expired_key_is_refused(key):
    with pytest.raises(PackageError) as e:
        sign_package(manifest_bytes(), MODULE, key, now=key.not_after + timedelta(seconds=1))
    assert e.value.reason is Refusal.EXPIRED_KEY


def test_a_package_signed_in_the_future_is_refused(key, trust):
    data = sign_package(manifest_bytes(), MODULE, key, now=NOW + timedelta(hours=1))
    assert refused(data, trust, now=NOW).reason is Refusal.TAMPERED


def test_a_revoked_key_is_refused_whenever_it_signed(package, tmp_path, key):
    d = trust_dir(tmp_path, key, name="t4")
    (d / "revocations.json").write_text(json.dumps({"revoked": [{"key_id": key.key_id, "reason": "key leaked"}]}))
    e = refused(package, TrustStore.load(d))
    assert e.reason is Refusal.REVOKED_KEY and "is revoked: key leaked" in str(e)


def test_an_incompatible_api_version_is_refused(key, trust):
    for api in ("2.0", "1.1", "0.9"):
        data = sign_package(manifest_bytes(api_version=api), MODULE, key, now=NOW)
        e = refused(data, trust)
        assert e.reason is Refusal.API_VERSION and f"plugin API {api}; this monbridge runs 1.0" in str(e)
    assert api_compatible("1.0") and not api_compatible("1") and not api_compatible("x.y")


def test_permissions_beyond_the_grants_are_refused_with_the_list(package, trust):
    v = verify_bytes(package, "acme.mbpkg", trust, LATER)
    check_permissions(v, Grants(hosts=["queue.internal"], paths=["/var/lib"]))  # covered: no error
    with pytest.raises(PackageError) as e:
        check_permissions(v, Grants(hosts=["queue.internal:9090"]), "plugins[2].grants")
    assert e.value.reason is Refusal.PERMISSIONS
    assert str(e.value).endswith("requests permissions not granted by plugins[2].grants: "
                                 "path /var/lib/acme, host queue.internal:8080")


# --------------------------------------------------------------------------- hostile archives


def hostile(data: bytes, trust: TrustStore, *, member: str | None, says: str) -> None:
    e = refused(data, trust)
    assert e.reason is Refusal.MALFORMED, str(e)
    assert e.member == member, str(e)
    assert says in e.message, str(e)
    where = f"acme.mbpkg: {member}: " if member else "acme.mbpkg: "
    assert str(e).startswith(where), str(e)


def test_hostile_archives_are_refused_naming_the_member(package, trust):
    files = members(package)
    m, mod, sig = files["metadata.json"], files["plugin.wasm"], files["signature.json"]
    hostile(archive([("metadata.json", m), ("../plugin.wasm", mod), ("signature.json", sig)]), trust,
            member="../plugin.wasm", says="a path with '..'")
    hostile(archive([("metadata.json", m), ("/etc/plugin.wasm", mod), ("signature.json", sig)]), trust,
            member="/etc/plugin.wasm", says="an absolute path")
    hostile(archive([("metadata.json", m), ("lib/plugin.wasm", mod), ("signature.json", sig)]), trust,
            member="lib/plugin.wasm", says="a directory or a path")
    hostile(archive({"metadata.json": m, "plugin.wasm": b"/etc/passwd", "signature.json": sig},
                    modes={"plugin.wasm": stat.S_IFLNK | 0o777}), trust, member="plugin.wasm", says="a symbolic link")
    hostile(archive({"metadata.json": m, "plugin.wasm": mod, "signature.json": sig},
                    modes={"plugin.wasm": stat.S_IFCHR | 0o644}), trust, member="plugin.wasm", says="not a regular file")
    hostile(archive([("metadata.json", m), ("plugin.wasm", mod), ("plugin.wasm", mod)]), trust,
            member="plugin.wasm", says="appears twice")
    hostile(archive([("metadata.json", m), ("plugin.wasm", mod), ("signature.json", sig), ("x.wasm", mod)]), trust,
            member=None, says="too many members: 4")
    hostile(archive([("metadata.json", m), ("plugin.so", mod), ("signature.json", sig)]), trust,
            member="plugin.so", says="unexpected member")
    hostile(archive([("plugin.wasm", mod), ("signature.json", sig)]), trust, member=None, says="no metadata.json")
    hostile(archive(files, compress=zipfile.ZIP_BZIP2), trust, member="metadata.json", says="stored or deflate")
    hostile(archive(files, comment=b"hello"), trust, member=None, says="no comment")
    hostile(b"not a zip at all", trust, member=None, says="not a package")
    hostile(package[:-30], trust, member=None, says="not a package")


def test_a_zip_bomb_is_refused_before_it_is_decompressed(package, trust):
    files = members(package)
    bomb = b"\0" * (MAX_MODULE_BYTES + 1)
    data = archive({**files, "plugin.wasm": bomb})
    assert len(data) < 100_000  # a few KB of deflate
    hostile(data, trust, member="plugin.wasm", says=f"larger than {MAX_MODULE_BYTES} bytes decompressed")


def test_a_member_lying_about_its_size_is_refused(package, trust):
    # the zip says 16 bytes; the deflate stream holds a megabyte
    data = bytearray(archive({**members(package), "plugin.wasm": b"\0" * (1 << 20)}))
    patched = 0
    for sig, header, size_at in ((b"PK\x01\x02", 46, 24), (b"PK\x03\x04", 30, 22)):
        pos = data.find(sig)
        while pos >= 0:
            if data[pos + header:pos + header + 11] == b"plugin.wasm":
                data[pos + size_at:pos + size_at + 4] = (16).to_bytes(4, "little")
                patched += 1
            pos = data.find(sig, pos + 1)
    assert patched == 2
    e = refused(bytes(data), trust)
    assert e.reason is Refusal.MALFORMED and e.member == "plugin.wasm" and "cannot be read: Bad CRC-32" in str(e)


def test_a_huge_manifest_is_refused(package, trust):
    files = members(package)
    huge = manifest_bytes(description="x" * 900, name="y" * 90) + b" " * MAX_MANIFEST_BYTES
    hostile(archive({**files, "metadata.json": huge}), trust, member="metadata.json",
            says=f"larger than {MAX_MANIFEST_BYTES} bytes decompressed")


def test_a_package_file_that_is_not_a_regular_file_is_refused_without_waiting(tmp_path, trust):
    fifo = tmp_path / "p.mbpkg"
    os.mkfifo(fifo)
    with pytest.raises(PackageError, match="not a regular file"):
        verify_package(fifo, trust)
    with pytest.raises(PackageError, match="cannot read: No such file"):
        verify_package(tmp_path / "missing.mbpkg", trust)


def test_read_package_returns_the_members_as_read(package):
    files = read_package(package, "p")
    assert (files.module_name, files.module, files.manifest) == ("plugin.wasm", MODULE, manifest_bytes())


# --------------------------------------------------------------------------- the manifest


@pytest.mark.parametrize(("changes", "says"), [
    ({"version": "1.2"}, "version: Value error, '1.2' is not a semantic version"),
    ({"id": "monitoring.alerts.acme"}, "does not match its type metric_collector"),
    ({"id": "acme"}, "invalid plugin id 'acme'"),
    ({"plugin_type": "collector"}, "plugin_type: Value error, expected one of metric_collector"),
    ({"api_version": "v1"}, "api_version: Value error, expected MAJOR.MINOR"),
    ({"module": "../x.wasm"}, "module: Value error, expected a file name ending in .wasm"),
    ({"module": "metadata.json"}, "module: Value error"),
    ({"dependencies": [{"id": "monitoring.metrics.system", "version": "about 1"}]}, "dependencies.0.version"),
    ({"permissions": {"paths": ["relative"]}}, "permissions.paths: Value error, 'relative' is not an absolute path"),
    ({"permissions": {"network": True}}, "permissions.network: unknown key"),
    ({"extra": 1}, "extra: unknown key"),
    ({"name": "a\nb"}, "name: String should match pattern"),
    ({"version": 1}, "version: Input should be a valid string"),
])
def test_an_invalid_manifest_is_refused_saying_where(changes, says, key):
    with pytest.raises(PackageError) as e:
        sign_package(manifest_bytes(**changes), MODULE, key, now=NOW, source="acme/metadata.json")
    assert e.value.reason is Refusal.MALFORMED and e.value.member == "metadata.json"
    assert says in str(e.value), str(e.value)


def test_a_manifest_missing_fields_or_not_json_is_refused():
    doc = manifest()
    del doc["author"]
    with pytest.raises(PackageError, match="author: Field required"):
        parse_manifest(json.dumps(doc).encode(), "m")
    for data, says in ((b'{"id": 1, "id": 2}', "key 'id' appears twice"), (b"[" * 60_000, "nested too deeply"),
                       (b"\xff", "not UTF-8"), (b'{"a": NaN}', "NaN is not a JSON number"), (b"{", "not valid JSON")):
        with pytest.raises(PackageError, match=says):
            parse_manifest(data, "m")


@pytest.mark.parametrize(("version", "version_range", "ok"), [
    ("1.2.0", ">=1.0.0, <2.0.0", True), ("2.0.0", ">=1.0.0, <2.0.0", False), ("1.5.3", "^1.2.0", True),
    ("2.0.0", "^1.2.0", False), ("0.2.5", "^0.2.1", True), ("0.3.0", "^0.2.1", False), ("1.2.9", "~1.2.0", True),
    ("1.3.0", "~1.2.0", False), ("1.0.0-rc.1", ">=1.0.0", False), ("1.0.0-rc.2", ">1.0.0-rc.1", True),
    ("1.0.0+build.5", "=1.0.0", True), ("3.0.0", "*", True), ("1.0.0", "!=1.0.0", False),
])
def test_dependency_version_ranges(version, version_range, ok):
    assert version_matches(version, version_range) is ok


# --------------------------------------------------------------------------- trust store and keys


def test_a_broken_trust_store_file_is_an_error_naming_it(tmp_path, key):
    d = trust_dir(tmp_path, key)
    (d / "bad.pub").write_text("{not json")
    with pytest.raises(TrustStoreError, match=r"bad\.pub: .*not valid JSON"):
        TrustStore.load(d)
    doc = json.loads(key.public_document())
    (d / "bad.pub").write_text(json.dumps({**doc, "key_id": "0" * 32}))
    with pytest.raises(TrustStoreError, match=r"bad\.pub: key_id does not match the public key"):
        TrustStore.load(d)
    (d / "bad.pub").write_text(json.dumps(doc))
    with pytest.raises(TrustStoreError, match=rf"\.pub: key {key.key_id} is also in ") as e:
        TrustStore.load(d)
    assert "bad.pub" in str(e.value) and f"{key.key_id}.pub" in str(e.value)
    (d / "bad.pub").unlink()
    (d / "revocations.json").write_text(json.dumps({"revoked": [{"key_id": "nope"}]}))
    with pytest.raises(TrustStoreError, match=r"revocations\.json: revoked\[0\]\.key_id"):
        TrustStore.load(d)


def test_a_private_key_file_is_kept_secret(tmp_path, key):
    path = tmp_path / "acme.key"
    path.write_bytes(key.private_document())
    secret = json.loads(key.private_document())["private_key"]
    assert secret not in repr(key) and secret not in key.public_document().decode()
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by group or others") as e:
        SigningKey.load(path)
    assert secret not in str(e.value)
    path.chmod(0o600)
    loaded = SigningKey.load(path)
    assert loaded.key_id == key.key_id and loaded.public == key.public
    path.write_text(key.private_document().decode().replace(secret, "A" * 43 + "="))
    with pytest.raises(ValueError, match="key_id does not match the key") as e:
        SigningKey.load(path)
    assert "AAAA" not in str(e.value)


# --------------------------------------------------------------------------- installing


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_install_copies_the_verified_package_and_loading_verifies_it_again(tmp_path, package, trust, caplog):
    plugins = tmp_path / "plugins"
    v, target = install_package(write(tmp_path, "acme.mbpkg", package), trust, plugins, now=LATER)
    assert target == plugins / "monitoring.metrics.acme-queue.mbpkg" and target.read_bytes() == package
    assert [p.plugin_id for p in installed(plugins, trust, LATER)] == ["monitoring.metrics.acme-queue"]
    assert [p.name for p in plugins.iterdir()] == [target.name]  # no temporary file left
    # tampered after installation: refused when loaded
    target.write_bytes(repack(package, plugin_wasm=flip(MODULE, 3)))
    with caplog.at_level(logging.WARNING, "monbridge.package"):
        assert installed(plugins, trust, LATER) == []
    assert "plugin package refused" in caplog.text and "plugin.wasm changed after signing" in caplog.text
    [item] = inspect_installed(plugins, trust, LATER)
    assert item.package is None and item.error is not None and item.error.reason is Refusal.TAMPERED


def test_an_installed_package_under_another_name_is_refused(tmp_path, package, trust):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    write(plugins, "monitoring.metrics.other.mbpkg", package)
    [item] = inspect_installed(plugins, trust, LATER)
    assert item.error is not None and "holds monitoring.metrics.acme-queue" in str(item.error)


def test_install_refuses_replacing_another_signers_package_unless_forced(tmp_path, key, package):
    other = generate_key("Mallory", now=NOW)
    trust = TrustStore.load(trust_dir(tmp_path, key, other))
    plugins = tmp_path / "plugins"
    install_package(write(tmp_path, "a.mbpkg", package), trust, plugins, now=LATER)
    # a newer version by the same signer replaces it
    newer = sign_package(manifest_bytes(version="1.3.0"), MODULE, key, now=NOW)
    v, _ = install_package(write(tmp_path, "b.mbpkg", newer), trust, plugins, now=LATER)
    assert v.manifest.version == "1.3.0"
    hijack = sign_package(manifest_bytes(version="9.0.0"), MODULE, other, now=NOW)
    with pytest.raises(PackageError) as e:
        install_package(write(tmp_path, "c.mbpkg", hijack), trust, plugins, now=LATER)
    assert e.value.reason is Refusal.CONFLICT and "--force" in str(e.value) and "Mallory" in str(e.value)
    assert installed(plugins, trust, LATER)[0].manifest.version == "1.3.0"
    install_package(write(tmp_path, "c.mbpkg", hijack), trust, plugins, force=True, now=LATER)
    assert installed(plugins, trust, LATER)[0].signer.publisher == "Mallory"


def test_install_refuses_what_does_not_verify_and_leaves_the_directory_alone(tmp_path, package, trust):
    plugins = tmp_path / "plugins"
    with pytest.raises(PackageError) as e:
        install_package(write(tmp_path, "x.mbpkg", repack(package, plugin_wasm=b"\0asm")), trust, plugins, now=LATER)
    assert e.value.reason is Refusal.TAMPERED and str(e.value).startswith(str(tmp_path / "x.mbpkg"))
    assert not plugins.exists()


def test_the_default_directories_are_per_user(monkeypatch, tmp_path):
    for var in ("MONBRIDGE_PLUGIN_DIR", "MONBRIDGE_TRUST_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_plugin_dir() == tmp_path / ".local/share/monbridge/plugins"
    assert default_trust_dir() == tmp_path / ".config/monbridge/trust"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    assert default_plugin_dir() == tmp_path / "d/monbridge/plugins"
    assert default_trust_dir() == tmp_path / "c/monbridge/trust"
    monkeypatch.setenv("MONBRIDGE_PLUGIN_DIR", "/srv/plugins")
    monkeypatch.setenv("MONBRIDGE_TRUST_DIR", "/srv/trust")
    assert (default_plugin_dir(), default_trust_dir()) == (Path("/srv/plugins"), Path("/srv/trust"))
    assert default_plugin_dir("/etc/p") == Path("/etc/p") and default_trust_dir("/etc/t") == Path("/etc/t")


def test_the_config_names_where_packages_and_the_trust_store_live():
    loaded = parse_config("packages: {dir: /srv/plugins, trust: /etc/monbridge/trust}\n", "c.yaml", PluginRegistry())
    assert loaded.model.packages.dir == Path("/srv/plugins") and loaded.model.packages.trust == Path("/etc/monbridge/trust")
    assert parse_config("server: {}\n", "c.yaml", PluginRegistry()).model.packages.dir is None
    with pytest.raises(ConfigError, match=r"line 1: packages\.trusted: unknown key, did you mean 'trust'"):
        parse_config("packages: {trusted: /x}\n", "c.yaml", PluginRegistry())


def test_signing_refuses_a_module_that_is_not_webassembly(key):
    with pytest.raises(PackageError) as e:
        sign_package(manifest_bytes(), b"(module)", key, now=NOW)
    assert e.value.member == "plugin.wasm" and "not a WebAssembly binary" in str(e.value)
