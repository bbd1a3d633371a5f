"""``monbridge plugin``: make, sign, verify, install and list signed plugin packages.

Only click is imported here; each command imports :mod:`bridge.package` (and with it the
cryptography library) when it runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from bridge.package import TrustStore

#: The package was refused (unsigned, tampered, untrusted signer, expired or revoked key, a
#: conflicting install).
EXIT_REFUSED = 1
#: A file given cannot be used: a manifest, key, module or trust store that is unreadable or
#: invalid (as ``monbridge validate`` exits 2 for an invalid config).
EXIT_INVALID = 2

_DIR_HELP = ("install directory [default: the --config's packages.dir, else $MONBRIDGE_PLUGIN_DIR, else "
             "$XDG_DATA_HOME/monbridge/plugins or ~/.local/share/monbridge/plugins]")
_TRUST_HELP = ("trust store: a directory of publishers' *.pub files and an optional revocations.json [default: the "
               "--config's packages.trust, else $MONBRIDGE_TRUST_DIR, else $XDG_CONFIG_HOME/monbridge/trust or "
               "~/.config/monbridge/trust]")
_CONFIG_HELP = "the agent's config file, whose packages.dir and packages.trust name the directories"


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _configured(config_path: str | None) -> tuple[str | None, str | None]:
    """``packages.dir`` and ``packages.trust`` of the config file ``config_path`` (None: not given)."""
    if config_path is None:
        return None, None
    from pydantic import ValidationError

    from bridge.config import MAX_CONFIG_BYTES, ConfigError, PackagesConfig, read_document, read_regular_file

    try:
        _, data = read_regular_file(config_path, MAX_CONFIG_BYTES)
        doc, _ = read_document(data, config_path, env=os.environ)
        section = PackagesConfig.model_validate((doc or {}).get("packages") or {} if isinstance(doc, dict) else {})
    except OSError as e:
        _fail(f"{config_path}: cannot read: {e.strerror or e}", EXIT_INVALID)
    except ConfigError as e:
        _fail(str(e), EXIT_INVALID)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        what = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        _fail(f"{config_path}: packages.{'.'.join(map(str, err['loc']))}: {what}", EXIT_INVALID)
    return (None if section.dir is None else str(section.dir)), (None if section.trust is None else str(section.trust))


def _trust(directory: str | None, config_path: str | None = None) -> TrustStore:
    from bridge.package import TrustStore, TrustStoreError, default_trust_dir

    path = default_trust_dir(directory or _configured(config_path)[1])
    if not path.is_dir():
        _fail(f"{path}: no trust store there (a directory of publishers' .pub files; see --trust)", EXIT_INVALID)
    try:
        return TrustStore.load(path)
    except TrustStoreError as e:
        _fail(str(e), EXIT_INVALID)


def _plugin_dir(directory: str | None, config_path: str | None) -> Path:
    from bridge.package import default_plugin_dir

    return default_plugin_dir(directory or _configured(config_path)[0])


def _refused(e: Exception) -> NoReturn:
    _fail(f"refused: {e}", EXIT_REFUSED)


def _permissions(p: Any) -> str:
    parts = [f"{kind}={','.join(values)}" for kind, values in
             (("paths", p.paths), ("hosts", p.hosts), ("exec", p.exec)) if values]
    return " ".join(parts) or "none"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def plugin() -> None:
    """Signed plugin packages: keys, signing, verifying, installing.

    \b
    A package (ID-VERSION.mbpkg) holds metadata.json, the WASM module and an Ed25519 signature
    over both. A publisher makes a key, signs; a user trusts the publisher's .pub file (copies it
    into the trust store) and installs:
      monbridge plugin keygen --publisher "Acme Inc" --out keys/
      monbridge plugin sign plugin.wasm --manifest metadata.json --key keys/acme-inc-1a2b3c4d.key
      cp keys/acme-inc-1a2b3c4d.pub ~/.config/monbridge/trust/
      monbridge plugin install monitoring.metrics.acme-1.0.0.mbpkg
      monbridge plugin list

    Exit status: 0 done, 1 a package was refused (unsigned, tampered, untrusted or expired or
    revoked key, incompatible API, a conflicting install), 2 a file given is unreadable or invalid.
    """


@plugin.command()
@click.option("--publisher", required=True, help="the publisher's name, shown with every package it signs")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="directory for the key files (created if missing)")
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True,
              help="days the key is valid; packages it signed stop verifying after that")
def keygen(publisher: str, out_dir: str, days: int) -> None:
    """Make an Ed25519 signing key: NAME.key (private, mode 0600) and NAME.pub (for trust stores)."""
    from bridge.package import generate_key

    try:
        key = generate_key(publisher, days)
    except ValueError as e:
        _fail(f"--publisher/--days: {e}", EXIT_INVALID)
    slug = "".join(c if c.isalnum() else "-" for c in publisher.lower()).strip("-")[:40] or "key"
    out = Path(out_dir)
    private, public = out / f"{slug}-{key.key_id[:8]}.key", out / f"{slug}-{key.key_id[:8]}.pub"
    try:
        out.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, data, mode in ((private, key.private_document(), 0o600), (public, key.public_document(), 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
    except OSError as e:
        _fail(f"{e.filename or out}: cannot write: {e.strerror}", EXIT_INVALID)
    click.echo(f"key {key.key_id} for {key.publisher!r}, valid until {key.not_after:%Y-%m-%dT%H:%M:%SZ}\n"
               f"  private key: {private} (keep it secret)\n"
               f"  public key:  {public} (copy it into the trust store of whoever installs your packages)")


@plugin.command()
@click.argument("module", type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_path", required=True, type=click.Path(dir_okay=False),
              help="the package's metadata.json (id, name, version, plugin_type, api_version, author, ...)")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False), help="the private key file (.key)")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the package file to write [default: ID-VERSION.mbpkg in the current directory]")
def sign(module: str, manifest_path: str, key_path: str, output: str | None) -> None:
    """Check the manifest, then write a package of it and MODULE signed with the key."""
    from bridge.package import (
        MAX_MANIFEST_BYTES,
        MAX_MODULE_BYTES,
        PackageError,
        SigningKey,
        parse_manifest,
        read_file,
        sign_package,
    )

    try:
        key = SigningKey.load(key_path)
    except ValueError as e:
        _fail(str(e), EXIT_INVALID)
    files: list[bytes] = []
    for path, most in ((manifest_path, MAX_MANIFEST_BYTES), (module, MAX_MODULE_BYTES)):
        try:
            files.append(read_file(path, most))
        except OSError as e:
            _fail(f"{path}: cannot read: {e.strerror}", EXIT_INVALID)
        except ValueError as e:
            _fail(f"{path}: {e}", EXIT_INVALID)
    try:
        manifest = parse_manifest(files[0], manifest_path)
        data = sign_package(files[0], files[1], key, source=manifest_path)
    except PackageError as e:  # the file at fault: the manifest, the module or the key
        where = manifest_path if e.member == "metadata.json" else module if e.member else key_path
        _fail(f"{where}: {e.message}", EXIT_INVALID)
    target = Path(output or f"{manifest.id}-{manifest.version}.mbpkg")
    try:
        _write_atomically(target, data)
    except OSError as e:
        _fail(f"{target}: cannot write: {e.strerror}", EXIT_INVALID)
    click.echo(f"{target}: {manifest.id} {manifest.version} signed by {key.key_id} ({key.publisher})")


def _write_atomically(target: Path, data: bytes) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@plugin.command()
@click.argument("package", type=click.Path(dir_okay=False))
@click.option("--trust", "trust_dir", help=_TRUST_HELP)
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
def verify(package: str, trust_dir: str | None, config_path: str | None) -> None:
    """Check PACKAGE: its signature, its signer's key (trusted, not expired, not revoked), its manifest."""
    from bridge.package import PackageError, verify_package

    store = _trust(trust_dir, config_path)
    try:
        pkg = verify_package(package, store)
    except PackageError as e:
        _refused(e)
    m = pkg.manifest
    click.echo(f"{package}: verified: {m.id} {m.version} ({m.plugin_type.value}), signed by {pkg.signer.key_id} "
               f"({pkg.signer.publisher}) at {pkg.signed_at:%Y-%m-%dT%H:%M:%SZ}; "
               f"permissions: {_permissions(m.permissions)}")


@plugin.command()
@click.argument("package", type=click.Path(dir_okay=False))
@click.option("--trust", "trust_dir", help=_TRUST_HELP)
@click.option("--dir", "plugin_dir", help=_DIR_HELP)
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@click.option("--force", is_flag=True, help="replace an installed package of the same id signed by another key")
def install(package: str, trust_dir: str | None, plugin_dir: str | None, config_path: str | None, force: bool) -> None:
    """Verify PACKAGE, then install it (as ID.mbpkg, replacing an older version by the same signer)."""
    from bridge.package import PackageError, install_package

    store = _trust(trust_dir, config_path)
    directory = _plugin_dir(plugin_dir, config_path)
    try:
        pkg, target = install_package(package, store, directory, force=force)
    except PackageError as e:
        _refused(e)
    except OSError as e:
        _fail(f"{e.filename or directory}: cannot install: {e.strerror}", EXIT_INVALID)
    m = pkg.manifest
    click.echo(f"installed {m.id} {m.version} ({m.plugin_type.value}) at {target}, signed by {pkg.signer.key_id} "
               f"({pkg.signer.publisher}); permissions it requests (grant them in the plugin's config entry): "
               f"{_permissions(m.permissions)}")


@plugin.command(name="list")
@click.option("--trust", "trust_dir", help=_TRUST_HELP)
@click.option("--dir", "plugin_dir", help=_DIR_HELP)
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
def list_cmd(trust_dir: str | None, plugin_dir: str | None, config_path: str | None) -> None:
    """Installed packages: id, version, type, signer, permissions, and whether each verifies now."""
    from bridge.package import inspect_installed

    store = _trust(trust_dir, config_path)
    directory = _plugin_dir(plugin_dir, config_path)
    items = inspect_installed(directory, store)
    if not items:
        click.echo(f"no packages installed in {directory}")
        return
    refused = 0
    for item in items:
        if item.package is None:
            refused += 1
            assert item.error is not None
            click.echo(f"{item.path.name}: REFUSED: {item.error.reason.value}: {item.error.message}")
            continue
        p, m = item.package, item.package.manifest
        click.echo(f"{m.id}  {m.version}  {m.plugin_type.value}  signer={p.signer.key_id} ({p.signer.publisher})  "
                   f"permissions: {_permissions(m.permissions)}  verified")
    if refused:
        sys.exit(EXIT_REFUSED)
