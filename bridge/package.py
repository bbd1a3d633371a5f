"""Signed plugin packages: the manifest, the package file, Ed25519 signatures and the trust store.

A package is one file, ``ID-VERSION.mbpkg``: a zip archive holding exactly three regular files,

* ``metadata.json``: the manifest (:class:`Manifest`: id, name, version, plugin type, API
  version, description, author, dependencies, the permissions it requests, the module's name);
* the WASM module (``plugin.wasm`` unless the manifest's ``module`` names another);
* ``signature.json``: who signed it, when, and an Ed25519 signature over a digest of both.

The signed message (:func:`signed_message`) is domain-separated and length-prefixed: the key
id, the signing time, the SHA-256 of the manifest's bytes, the module's name and the SHA-256 of
the module's bytes; one byte changed in either file, or in the signature, fails verification.

A trust store is a directory of publishers' public keys, one ``*.pub`` file per key (what
``monbridge plugin keygen`` writes: key id, publisher, public key, ``not_after``), and an
optional ``revocations.json`` (``{"revoked": [{"key_id": ..., "reason": ...}]}``). A package
verifies when its signer's key is in the store, not revoked (whatever the signing time, which
the signer states), not expired now (a package stops verifying when its key expires: re-sign
with a new key), was not expired when it signed (``signed_at`` after ``not_after``), and the
signature holds. Its ``api_version`` must be one this monbridge runs (:data:`API_VERSION`: same
major, minor at most ours). Every refusal is a :class:`PackageError` naming the package, the
member when there is one, and the reason (:class:`Refusal`).

Reading a package is bounded before anything is decompressed: its size, the zip's central
directory (at the end, no comment, no zip64, at most three entries), member names (no paths,
no ``..``, no links or directories, no duplicates, nothing encrypted, stored or deflated
only) and each member's declared and actual decompressed size.

An installed package (``packages.dir``, one ``ID.mbpkg`` per plugin id) is verified again each
time it is loaded (:func:`installed`): a file changed after installation is refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from bridge.api import PluginType, validate_plugin_id
from bridge.config import NotARegularFile, default_plugin_dir, default_trust_dir, read_regular_file
from bridge.isolation import Grants

if TYPE_CHECKING:  # cryptography is loaded where keys are made or signatures checked
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "API_VERSION",
    "Dependency",
    "Manifest",
    "PackageError",
    "Refusal",
    "SigningKey",
    "Signer",
    "TrustStore",
    "TrustStoreError",
    "VerifiedPackage",
    "check_permissions",
    "default_plugin_dir",
    "default_trust_dir",
    "generate_key",
    "install_package",
    "installed",
    "inspect_installed",
    "InstalledPackage",
    "read_package",
    "sign_package",
    "verify_package",
]

log = logging.getLogger("monbridge.package")

#: The plugin API version this monbridge runs; a package's ``api_version`` must have the same
#: major and at most this minor.
API_VERSION = "1.0"

MANIFEST = "metadata.json"
SIGNATURE = "signature.json"
SUFFIX = ".mbpkg"
#: The largest package file.
MAX_PACKAGE_BYTES = 17 << 20
#: The largest module, decompressed.
MAX_MODULE_BYTES = 16 << 20
#: The largest manifest.
MAX_MANIFEST_BYTES = 64 << 10
#: The largest signature file.
MAX_SIGNATURE_BYTES = 4 << 10
#: The most members of a package (metadata.json, the module, signature.json).
MAX_MEMBERS = 3
#: The largest zip central directory read (three entries with their names and extra fields).
MAX_DIRECTORY_BYTES = 4 << 10
#: The most keys a trust store holds, and the largest key or revocations file.
MAX_TRUST_FILES = 1000
MAX_TRUST_FILE_BYTES = 256 << 10
#: A package signed later than this ahead of the verifier's clock is refused.
CLOCK_SKEW = timedelta(minutes=5)

_SIGNATURE_FORMAT = "monbridge-signature/1"
_DOMAIN = b"monbridge plugin package signature v1\x00"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                     r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
                     r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
_RANGE_PART = re.compile(r"^(\^|~|>=|<=|>|<|==|=|!=)?\s*(\S+)$")
_MODULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.wasm$")
_API_VERSION = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")
_KEY_ID = re.compile(r"^[0-9a-f]{32}$")
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]*$")


class Refusal(StrEnum):
    """Why a package was refused."""

    MALFORMED = "malformed"  # not a readable package: archive, manifest or signature file
    UNSIGNED = "unsigned"  # no signature.json
    TAMPERED = "tampered"  # the signature does not hold over the manifest and module
    UNKNOWN_SIGNER = "unknown_signer"  # the signing key is not in the trust store
    EXPIRED_KEY = "expired_key"
    REVOKED_KEY = "revoked_key"
    API_VERSION = "api_version"
    PERMISSIONS = "permissions"  # requests permissions beyond the grants
    CONFLICT = "conflict"  # installing over another signer's package of the same id


class PackageError(Exception):
    """A package refused: ``package`` (its path or name), ``member`` (or None), ``reason``."""

    def __init__(self, package: str | os.PathLike[str], reason: Refusal, message: str, member: str | None = None) -> None:
        self.package = os.fspath(package)
        self.reason = reason
        self.member = member
        self.message = message
        where = f"{self.package}: {member}" if member else self.package
        super().__init__(f"{where}: {reason.value}: {message}")


class TrustStoreError(Exception):
    """A trust store that cannot be read; the message names the file."""


# --------------------------------------------------------------------------- manifest


def parse_semver(text: str) -> tuple[int, int, int, tuple[int | str, ...]]:
    """``text`` (semver 2.0) as a sortable key: major, minor, patch and the pre-release parts
    (a release sorts after its pre-releases; build metadata is ignored)."""
    m = _SEMVER.match(text)
    if not m or len(text) > 128:
        raise ValueError(f"{text[:60]!r} is not a semantic version (MAJOR.MINOR.PATCH[-PRE][+BUILD])")
    pre: tuple[int | str, ...] = tuple(int(p) if p.isdigit() else p for p in m.group(4).split(".")) if m.group(4) else ()
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), pre


def _semver_key(text: str) -> tuple[Any, ...]:
    major, minor, patch, pre = parse_semver(text)
    # numeric pre-release parts sort before alphanumeric ones; no pre-release sorts last
    return (major, minor, patch, 1 if not pre else 0, tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in pre))


def version_matches(version: str, version_range: str) -> bool:
    """Whether ``version`` is in ``version_range``: comparators joined by commas, all of which
    must hold (``>=1.2.0, <2.0.0``; ``^1.2.0``; ``~1.2.0``; ``=1.2.3``; ``*`` is any)."""
    key = _semver_key(version)
    for op, bound in _range_parts(version_range):
        b = _semver_key(bound) if bound != "*" else None
        if b is None:
            continue
        major, minor = b[0], b[1]
        ok = {
            "": key == b, "=": key == b, "==": key == b, "!=": key != b,
            ">": key > b, ">=": key >= b, "<": key < b, "<=": key <= b,
            "^": key >= b and (key[0] == major if major else (key[1] == minor if minor else key[:3] == b[:3])),
            "~": key >= b and key[:2] == (major, minor),
        }[op]
        if not ok:
            return False
    return True


def _range_parts(version_range: str) -> list[tuple[str, str]]:
    parts = [p.strip() for p in version_range.split(",")]
    if not version_range.strip() or len(version_range) > 256 or len(parts) > 8:
        raise ValueError("expected comparators joined by commas, e.g. '>=1.2.0, <2.0.0', '^1.2.0' or '*'")
    out = []
    for part in parts:
        if part == "*":
            out.append(("", "*"))
            continue
        m = _RANGE_PART.match(part)
        if not m:
            raise ValueError(f"{part[:60]!r}: expected OP VERSION (OP one of ^ ~ = == != > >= < <=)")
        parse_semver(m.group(2))
        out.append((m.group(1) or "", m.group(2)))
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


def _text(most: int) -> Any:
    return Field(min_length=1, max_length=most, pattern=_PRINTABLE.pattern)


def _checked(check: Callable[[str], object]) -> Any:
    """A validator running ``check`` on a string (its ValueError is the error) and keeping it."""
    def run(v: str) -> str:
        check(v)
        return v
    return AfterValidator(run)


def _api_version(v: str) -> None:
    if not _API_VERSION.match(v):
        raise ValueError("expected MAJOR.MINOR, e.g. " + API_VERSION)


def _module_name(v: str) -> None:
    if not _MODULE_NAME.match(v):
        raise ValueError("expected a file name ending in .wasm (letters, digits, '.', '_', '-'; no path)")


def _plugin_type(v: Any) -> Any:
    """The JSON names a type by its value (strict mode would take only the enum itself)."""
    if isinstance(v, str):
        try:
            return PluginType(v)
        except ValueError:
            raise ValueError(f"expected one of {', '.join(t.value for t in PluginType)}") from None
    return v


class Dependency(_Strict):
    id: Annotated[str, Field(max_length=200, description="the plugin id depended on"),
                  AfterValidator(validate_plugin_id)]
    version: Annotated[str, Field(description="the versions accepted: '>=1.2.0, <2.0.0', '^1.2.0', '~1.2.0', "
                                              "'=1.2.3', '*'"), _checked(_range_parts)]


class Manifest(_Strict):
    """``metadata.json``: what a package is, what it needs, what it may do."""

    id: str = Field(max_length=200, description="plugin id, monitoring.<kind>.<name>, its kind matching plugin_type")
    name: str = _text(100)
    version: Annotated[str, Field(max_length=128, description="semantic version"), _checked(parse_semver)]
    plugin_type: Annotated[PluginType, BeforeValidator(_plugin_type)]
    api_version: Annotated[str, Field(max_length=16, description=f"plugin API version MAJOR.MINOR (this monbridge: "
                                                                 f"{API_VERSION})"), _checked(_api_version)]
    description: str = Field("", max_length=1000, pattern=_PRINTABLE.pattern)
    author: str = _text(200)
    dependencies: list[Dependency] = Field(default_factory=list, max_length=64)
    permissions: Grants = Field(default_factory=Grants, description="paths, hosts and programs requested")
    module: Annotated[str, _checked(_module_name)] = Field("plugin.wasm", description="the WASM module's file name")

    def model_post_init(self, _context: Any) -> None:
        validate_plugin_id(self.id, self.plugin_type)

    def host_manifest(self) -> dict[str, Any]:
        """What the WASM host takes: id, name, version, plugin_type (its value), api_version,
        description, author."""
        return {"id": self.id, "name": self.name, "version": self.version, "plugin_type": self.plugin_type.value,
                "api_version": self.api_version, "description": self.description, "author": self.author}


def api_compatible(api_version: str) -> bool:
    """Whether this monbridge runs plugins of ``api_version`` (same major, minor at most ours)."""
    want = _API_VERSION.match(api_version)
    have = _API_VERSION.match(API_VERSION)
    assert have is not None
    return bool(want) and want.group(1) == have.group(1) and int(want.group(2)) <= int(have.group(2))  # type: ignore[union-attr]


def _strict_json(data: bytes, what: str) -> Any:
    """A JSON document (UTF-8, no duplicate keys, no NaN or Infinity); ValueError saying why."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ValueError(f"key {k[:60]!r} appears twice")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} is not valid JSON: line {e.lineno}, column {e.colno}: {e.msg}") from None


def _issues(e: ValidationError) -> str:
    parts = []
    for err in e.errors(include_url=False, include_input=False)[:20]:
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"])
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_manifest(data: bytes, source: str) -> Manifest:
    """``metadata.json``'s bytes as a :class:`Manifest`; PackageError (malformed) saying what is wrong."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise PackageError(source, Refusal.MALFORMED, f"larger than {MAX_MANIFEST_BYTES} bytes", MANIFEST)
    try:
        doc = _strict_json(data, MANIFEST)
        return Manifest.model_validate(doc)
    except ValidationError as e:
        raise PackageError(source, Refusal.MALFORMED, f"invalid manifest: {_issues(e)}", MANIFEST) from None
    except ValueError as e:
        raise PackageError(source, Refusal.MALFORMED, str(e), MANIFEST) from None


# --------------------------------------------------------------------------- the archive


@dataclass(frozen=True)
class PackageFiles:
    """The members of a package, as read (nothing verified)."""

    manifest: bytes
    module_name: str
    module: bytes
    signature: bytes | None


def _refuse(source: str | os.PathLike[str], message: str, member: str | None = None) -> PackageError:
    return PackageError(source, Refusal.MALFORMED, message, member)


def _check_directory(data: bytes, source: str) -> None:
    """The zip's end-of-central-directory record is the last 22 bytes (no archive comment, no
    zip64) and its central directory is small: zipfile then reads no more than that."""
    if len(data) < 22 or data[-22:-18] != b"PK\x05\x06":
        raise _refuse(source, "not a package (a zip archive with no comment)")
    disk, cd_disk, on_disk, entries, cd_size, cd_offset, comment = struct.unpack("<4H2LH", data[-18:])
    if comment or disk or cd_disk or on_disk != entries:
        raise _refuse(source, "not a package (a single-part zip archive with no comment)")
    if len(data) >= 42 and data[-42:-38] == b"PK\x06\x07":
        raise _refuse(source, "not a package (zip64 archives are not read)")
    if entries > MAX_MEMBERS:
        raise _refuse(source, f"too many members: {entries} (a package holds {MANIFEST}, the module and {SIGNATURE})")
    if cd_size > MAX_DIRECTORY_BYTES or cd_offset + cd_size != len(data) - 22:
        raise _refuse(source, "not a package (its zip directory is too large or not where it should be)")


def _check_member(info: zipfile.ZipInfo, source: str) -> None:
    name = info.filename
    if "\x00" in name or not _PRINTABLE.match(name):
        raise _refuse(source, "a member name with control characters")
    shown = name[:100]
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _refuse(source, "an absolute path", shown)
    if ".." in re.split(r"[/\\]", name):
        raise _refuse(source, "a path with '..'", shown)
    if "/" in name or "\\" in name or name.endswith("/"):
        raise _refuse(source, "a directory or a path (members are plain file names)", shown)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise _refuse(source, "a symbolic link", shown)
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        raise _refuse(source, "not a regular file", shown)
    if info.flag_bits & 0x1:
        raise _refuse(source, "encrypted", shown)
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _refuse(source, "compressed with a method other than stored or deflate", shown)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, most: int, source: str) -> bytes:
    name = info.filename
    if info.file_size > most:
        raise _refuse(source, f"larger than {most} bytes decompressed (declares {info.file_size})", name)
    try:
        with zf.open(info) as f:
            data = f.read(most + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _refuse(source, f"cannot be read: {e}", name) from None
    except Exception as e:  # noqa: BLE001 - zlib.error and whatever else a broken stream raises
        raise _refuse(source, f"cannot be read: {type(e).__name__}: {e}", name) from None
    if len(data) > most:
        raise _refuse(source, f"larger than {most} bytes decompressed", name)
    return data


def read_package(data: bytes, source: str) -> PackageFiles:
    """The members of the package ``data`` (from ``source``, named in errors), checked as the
    module docstring says; PackageError (malformed, or unsigned without signature.json)."""
    if len(data) > MAX_PACKAGE_BYTES:
        raise _refuse(source, f"larger than {MAX_PACKAGE_BYTES} bytes")
    _check_directory(data, source)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _refuse(source, f"not a package (unreadable zip archive: {e})") from None
    except Exception as e:  # noqa: BLE001 - struct.error and other ways a broken directory fails
        raise _refuse(source, f"not a package (unreadable zip archive: {type(e).__name__})") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise _refuse(source, f"too many members: {len(infos)}")
        seen: set[str] = set()
        for info in infos:
            _check_member(info, source)
            if info.filename in seen:
                raise _refuse(source, "appears twice", info.filename)
            seen.add(info.filename)
        by_name = {i.filename: i for i in infos}
        if MANIFEST not in by_name:
            raise _refuse(source, f"no {MANIFEST}")
        modules = [i for i in infos if i.filename not in (MANIFEST, SIGNATURE)]
        if len(modules) != 1:
            raise _refuse(source, f"expected one module beside {MANIFEST} and {SIGNATURE}, found {len(modules)}")
        module = modules[0]
        if not _MODULE_NAME.match(module.filename):
            raise _refuse(source, "unexpected member (the module's name ends in .wasm)", module.filename[:100])
        manifest = _read_member(zf, by_name[MANIFEST], MAX_MANIFEST_BYTES, source)
        signature = _read_member(zf, by_name[SIGNATURE], MAX_SIGNATURE_BYTES, source) if SIGNATURE in by_name else None
        module_bytes = _read_member(zf, module, MAX_MODULE_BYTES, source)
    return PackageFiles(manifest, module.filename, module_bytes, signature)


def read_file(path: str | os.PathLike[str], most: int) -> bytes:
    """At most ``most`` bytes of the regular file at ``path`` (OSError, or ValueError when larger
    or not a regular file: a FIFO or device is not waited on)."""
    try:
        _, data = read_regular_file(path, most)
    except NotARegularFile:
        raise ValueError("not a regular file") from None
    if len(data) > most:
        raise ValueError(f"larger than {most} bytes")
    return data


def _read_package_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return read_file(path, MAX_PACKAGE_BYTES)
    except OSError as e:
        raise _refuse(path, f"cannot read: {e.strerror}") from None
    except ValueError as e:
        raise _refuse(path, str(e)) from None


# --------------------------------------------------------------------------- keys and signatures


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} is not {size} bytes")
    return raw


def key_id_of(public: bytes) -> str:
    """A key's id: the first 16 bytes of the SHA-256 of its raw public key, in hex."""
    return hashlib.sha256(public).hexdigest()[:32]


def _timestamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        raise ValueError(f"{what}: expected an RFC 3339 time, e.g. 2027-01-01T00:00:00Z") from None
    if t.tzinfo is None:
        raise ValueError(f"{what}: the time has no time zone (end it with Z)")
    return t.astimezone(UTC)


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Signer:
    """Who signed a verified package: the trust store's key (id, publisher, expiry)."""

    key_id: str
    publisher: str
    not_after: datetime


class SigningKey:
    """A publisher's private key (its text is never shown: ``repr`` names the key id only)."""

    def __init__(self, private: Ed25519PrivateKey, publisher: str, not_after: datetime) -> None:
        self._private = private
        self.publisher = publisher
        self.not_after = not_after
        self.public = _raw_public(private.public_key())
        self.key_id = key_id_of(self.public)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r}, publisher={self.publisher!r})"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def private_document(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

        raw = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return (json.dumps({"type": "monbridge-signing-key", "key_id": self.key_id, "publisher": self.publisher,
                            "not_after": _timestamp(self.not_after), "private_key": _b64(raw)}, indent=2) + "\n").encode()

    def public_document(self) -> bytes:
        return (json.dumps({"type": "monbridge-public-key", "key_id": self.key_id, "publisher": self.publisher,
                            "not_after": _timestamp(self.not_after), "public_key": _b64(self.public)},
                           indent=2) + "\n").encode()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """The key file at ``path``; ValueError naming the file (without any key material)
        when it cannot be read, is not a key, or is readable by group or others."""
        where = os.fspath(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ValueError(f"{where}: not a regular file")
                if st.st_mode & 0o077:
                    raise ValueError(f"{where}: a private key readable by group or others (chmod 600 {where})")
                data = f.read(MAX_TRUST_FILE_BYTES + 1)
        except OSError as e:
            raise ValueError(f"{where}: cannot read: {e.strerror}") from None
        try:
            doc = _strict_json(data[:MAX_TRUST_FILE_BYTES], "the key file")
            if not isinstance(doc, dict) or doc.get("type") != "monbridge-signing-key":
                raise ValueError("not a monbridge signing key (monbridge plugin keygen writes one)")
            raw = _unb64(str(doc.get("private_key", "")), 32, "private_key")
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = cls(Ed25519PrivateKey.from_private_bytes(raw), str(doc.get("publisher", "")),
                      _parse_time(str(doc.get("not_after", "")), "not_after"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        if doc.get("key_id") != key.key_id:
            raise ValueError(f"{where}: key_id does not match the key")
        return key


def generate_key(publisher: str, days: int = 365, now: datetime | None = None) -> SigningKey:
    """A new Ed25519 key for ``publisher``, valid ``days`` days from ``now``."""
    if not publisher.strip() or len(publisher) > 200 or not _PRINTABLE.match(publisher):
        raise ValueError("the publisher is a name of 1 to 200 printable characters")
    if not 0 < days <= 36500:
        raise ValueError("days must be between 1 and 36500")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    now = now or datetime.now(UTC)
    return SigningKey(Ed25519PrivateKey.generate(), publisher.strip(), now.replace(microsecond=0) + timedelta(days=days))


def _field(name: bytes, value: bytes) -> bytes:
    return name + b"\x00" + len(value).to_bytes(8, "big") + value


def signed_message(key_id: str, signed_at: str, manifest: bytes, module_name: str, module: bytes) -> bytes:
    """What a package's signature is over: domain-separated, each field length-prefixed."""
    return (_DOMAIN + _field(b"key_id", key_id.encode()) + _field(b"signed_at", signed_at.encode())
            + _field(b"metadata.json sha256", hashlib.sha256(manifest).digest())
            + _field(b"module name", module_name.encode()) + _field(b"module sha256", hashlib.sha256(module).digest()))


class SignatureFile(_Strict):
    format: str
    algorithm: str
    key_id: str = Field(max_length=64)
    publisher: str = Field(max_length=200)
    signed_at: str = Field(max_length=64)
    metadata_sha256: str = Field(max_length=64)
    module_sha256: str = Field(max_length=64)
    signature: str = Field(max_length=200)


def _zip(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out.getvalue()


def sign_package(manifest: bytes, module: bytes, key: SigningKey, now: datetime | None = None,
                 source: str = MANIFEST) -> bytes:
    """A package of ``manifest`` (validated first) and ``module``, signed with ``key``."""
    parsed = parse_manifest(manifest, source)
    if len(module) > MAX_MODULE_BYTES:
        raise PackageError(source, Refusal.MALFORMED, f"the module is larger than {MAX_MODULE_BYTES} bytes", parsed.module)
    if not module.startswith(b"\0asm"):
        raise PackageError(source, Refusal.MALFORMED, "the module is not a WebAssembly binary (no \\0asm header)",
                           parsed.module)
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    if now > key.not_after:
        raise PackageError(source, Refusal.EXPIRED_KEY, f"the key {key.key_id} expired at {_timestamp(key.not_after)}")
    signed_at = _timestamp(now)
    sig = key.sign(signed_message(key.key_id, signed_at, manifest, parsed.module, module))
    doc = {"format": _SIGNATURE_FORMAT, "algorithm": "ed25519", "key_id": key.key_id, "publisher": key.publisher,
           "signed_at": signed_at, "metadata_sha256": hashlib.sha256(manifest).hexdigest(),
           "module_sha256": hashlib.sha256(module).hexdigest(), "signature": _b64(sig)}
    return _zip([(MANIFEST, manifest), (parsed.module, module),
                 (SIGNATURE, (json.dumps(doc, indent=2) + "\n").encode())])


# --------------------------------------------------------------------------- trust store


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    publisher: str
    public_key: bytes
    not_after: datetime
    source: str


@dataclass
class TrustStore:
    """Publishers' public keys by key id, and the revoked key ids with their reasons."""

    keys: dict[str, TrustedKey] = field(default_factory=dict)
    revoked: dict[str, str] = field(default_factory=dict)
    directory: str = ""

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TrustStore:
        """The trust store in ``directory``: every ``*.pub`` file and ``revocations.json``.
        TrustStoreError naming the file when one cannot be read or is not a key; a directory
        that does not exist is an empty store (every package is then refused)."""
        root = Path(directory)
        store = cls(directory=str(root))
        try:
            names = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        except OSError as e:
            raise TrustStoreError(f"{root}: cannot list the trust store: {e.strerror}") from None
        if len(names) > MAX_TRUST_FILES:
            raise TrustStoreError(f"{root}: more than {MAX_TRUST_FILES} files in the trust store")
        for name in names:
            path = root / name
            if name.endswith(".pub"):
                key = _load_public(path)
                if key.key_id in store.keys:
                    raise TrustStoreError(f"{path}: key {key.key_id} is also in {store.keys[key.key_id].source}")
                store.keys[key.key_id] = key
            elif name == "revocations.json":
                store.revoked = _load_revocations(path)
        return store

    def signer(self, key_id: str, package: str) -> TrustedKey:
        if key_id in self.revoked:
            raise PackageError(package, Refusal.REVOKED_KEY, f"the signing key {key_id} is revoked: {self.revoked[key_id]}")
        key = self.keys.get(key_id)
        if key is None:
            raise PackageError(package, Refusal.UNKNOWN_SIGNER,
                               f"the signing key {key_id} is not in the trust store {self.directory or '(empty)'}")
        return key


def _trust_document(path: Path) -> Any:
    try:
        return _strict_json(read_file(path, MAX_TRUST_FILE_BYTES), path.name)
    except OSError as e:
        raise TrustStoreError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise TrustStoreError(f"{path}: {e}") from None


def _load_public(path: Path) -> TrustedKey:
    doc = _trust_document(path)
    try:
        if not isinstance(doc, dict) or doc.get("type") != "monbridge-public-key":
            raise ValueError("not a monbridge public key (monbridge plugin keygen writes one)")
        raw = _unb64(str(doc.get("public_key", "")), 32, "public_key")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        Ed25519PublicKey.from_public_bytes(raw)
        publisher = doc.get("publisher")
        if not isinstance(publisher, str) or not publisher or len(publisher) > 200 or not _PRINTABLE.match(publisher):
            raise ValueError("publisher: expected a name of 1 to 200 printable characters")
        not_after = _parse_time(str(doc.get("not_after", "")), "not_after")
    except ValueError as e:
        raise TrustStoreError(f"{path}: {e}") from None
    if doc.get("key_id") != key_id_of(raw):
        raise TrustStoreError(f"{path}: key_id does not match the public key (expected {key_id_of(raw)})")
    return TrustedKey(key_id_of(raw), publisher, raw, not_after, str(path))


def _load_revocations(path: Path) -> dict[str, str]:
    doc = _trust_document(path)
    entries = doc.get("revoked") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise TrustStoreError(f"{path}: expected {{\"revoked\": [{{\"key_id\": ..., \"reason\": ...}}, ...]}}")
    out: dict[str, str] = {}
    for i, entry in enumerate(entries):
        key_id = entry.get("key_id") if isinstance(entry, dict) else None
        if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
            raise TrustStoreError(f"{path}: revoked[{i}].key_id: expected a key id (32 hexadecimal digits)")
        reason = entry.get("reason", "")
        out[key_id] = reason[:200] if isinstance(reason, str) and _PRINTABLE.match(reason) and reason else "revoked"
    return out


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature holds, by a trusted key, for a plugin this monbridge runs."""

    manifest: Manifest
    module_bytes: bytes
    signer: Signer
    signed_at: datetime
    path: str
    data: bytes = field(repr=False)

    @property
    def plugin_id(self) -> str:
        return self.manifest.id

    @property
    def host_manifest(self) -> dict[str, Any]:
        """The manifest as the WASM host takes it (see :meth:`Manifest.host_manifest`)."""
        return self.manifest.host_manifest()


def verify_bytes(data: bytes, source: str, trust: TrustStore, now: datetime | None = None) -> VerifiedPackage:
    """Verify the package ``data`` (read from ``source``) against ``trust``; PackageError otherwise."""
    files = read_package(data, source)
    if files.signature is None:
        raise PackageError(source, Refusal.UNSIGNED, f"no {SIGNATURE}: the package is not signed")
    try:
        sig = SignatureFile.model_validate(_strict_json(files.signature, SIGNATURE))
        if sig.format != _SIGNATURE_FORMAT or sig.algorithm != "ed25519":
            raise ValueError(f"expected format {_SIGNATURE_FORMAT} and algorithm ed25519")
        signed_at = _parse_time(sig.signed_at, "signed_at")
        raw_sig = _unb64(sig.signature, 64, "signature")
    except ValidationError as e:
        raise PackageError(source, Refusal.MALFORMED, f"invalid signature file: {_issues(e)}", SIGNATURE) from None
    except ValueError as e:
        raise PackageError(source, Refusal.MALFORMED, str(e), SIGNATURE) from None
    key = trust.signer(sig.key_id, source)
    now = now or datetime.now(UTC)
    if now > key.not_after:
        raise PackageError(source, Refusal.EXPIRED_KEY,
                           f"the signing key {key.key_id} ({key.publisher}) expired at {_timestamp(key.not_after)} "
                           "(a package verifies only while its key is valid: re-sign it with a current key)")
    if signed_at > key.not_after:
        raise PackageError(source, Refusal.EXPIRED_KEY,
                           f"signed at {sig.signed_at}, after the signing key {key.key_id} ({key.publisher}) "
                           f"expired at {_timestamp(key.not_after)}")
    if signed_at > now + CLOCK_SKEW:
        raise PackageError(source, Refusal.TAMPERED, f"signed at {sig.signed_at}, in the future", SIGNATURE)
    message = signed_message(sig.key_id, sig.signed_at, files.manifest, files.module_name, files.module)
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(key.public_key).verify(raw_sig, message)
    except InvalidSignature:
        changed = [name for name, data, claimed in ((MANIFEST, files.manifest, sig.metadata_sha256),
                                                    (files.module_name, files.module, sig.module_sha256))
                   if hashlib.sha256(data).hexdigest() != claimed]
        what = (f"{' and '.join(changed)} changed after signing" if changed
                else "the signature does not match the package")
        raise PackageError(source, Refusal.TAMPERED, f"bad signature by {key.key_id} ({key.publisher}): {what}") from None
    manifest = parse_manifest(files.manifest, source)
    if manifest.module != files.module_name:
        raise PackageError(source, Refusal.MALFORMED, f"the manifest names module {manifest.module!r}, the package "
                                                      f"holds {files.module_name!r}", MANIFEST)
    if not api_compatible(manifest.api_version):
        raise PackageError(source, Refusal.API_VERSION, f"plugin API {manifest.api_version}; this monbridge runs "
                                                        f"{API_VERSION} (same major version, minor at most ours)")
    return VerifiedPackage(manifest, files.module, Signer(key.key_id, key.publisher, key.not_after), signed_at,
                           source, data)


def verify_package(path: str | os.PathLike[str], trust: TrustStore | str | os.PathLike[str],
                   now: datetime | None = None) -> VerifiedPackage:
    """Read and verify the package file at ``path`` against ``trust`` (a store or its directory)."""
    store = trust if isinstance(trust, TrustStore) else TrustStore.load(trust)
    return verify_bytes(_read_package_file(path), os.fspath(path), store, now)


def check_permissions(package: VerifiedPackage, grants: Grants, where: str = "grants") -> None:
    """PackageError (permissions) listing what ``package`` requests beyond ``grants`` (``where``
    names them, e.g. the config entry's path)."""
    missing = grants.covers(package.manifest.permissions)
    if missing:
        raise PackageError(package.path, Refusal.PERMISSIONS,
                           f"requests permissions not granted by {where}: {', '.join(missing)}")


# --------------------------------------------------------------------------- installation


def install_path(directory: str | os.PathLike[str], plugin_id: str) -> Path:
    return Path(directory) / f"{plugin_id}{SUFFIX}"


def install_package(path: str | os.PathLike[str], trust: TrustStore, directory: str | os.PathLike[str], *,
                    force: bool = False, now: datetime | None = None) -> tuple[VerifiedPackage, Path]:
    """Verify the package at ``path`` and copy the bytes verified into ``directory`` as
    ``ID.mbpkg``, atomically (a temporary file renamed over). An installed package of the same
    id signed by another key is replaced only with ``force`` (PackageError conflict otherwise);
    one that no longer verifies is replaced."""
    package = verify_package(path, trust, now)
    target = install_path(directory, package.plugin_id)
    if target.exists() and not force:
        try:
            current = verify_package(target, trust, now)
        except PackageError:
            current = None
        if current is not None and current.signer.key_id != package.signer.key_id:
            raise PackageError(path, Refusal.CONFLICT,
                               f"{package.plugin_id} is installed at {target}, signed by {current.signer.key_id} "
                               f"({current.signer.publisher}); this one is signed by {package.signer.key_id} "
                               f"({package.signer.publisher}) (--force replaces it)")
    Path(directory).mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{package.plugin_id}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(package.data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return package, target


@dataclass(frozen=True)
class InstalledPackage:
    """One file of the install directory: the package when it verifies, else why not."""

    path: Path
    package: VerifiedPackage | None
    error: PackageError | None


def inspect_installed(directory: str | os.PathLike[str], trust: TrustStore,
                      now: datetime | None = None) -> list[InstalledPackage]:
    """Every ``*.mbpkg`` of ``directory``, each verified now (a missing directory holds none)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.glob(f"*{SUFFIX}")):
        try:
            package = verify_package(path, trust, now)
            if path.name != f"{package.plugin_id}{SUFFIX}":
                raise PackageError(path, Refusal.MALFORMED, f"holds {package.plugin_id} (an installed package is "
                                                            f"named after its plugin id: ID{SUFFIX})")
        except PackageError as e:
            out.append(InstalledPackage(path, None, e))
        else:
            out.append(InstalledPackage(path, package, None))
    return out


def installed(directory: str | os.PathLike[str], trust: TrustStore | str | os.PathLike[str],
              now: datetime | None = None) -> list[VerifiedPackage]:
    """The installed packages that verify now, each read and verified again (so a file changed
    after installation is refused); each refused one is logged with its reason."""
    store = trust if isinstance(trust, TrustStore) else TrustStore.load(trust)
    out = []
    for item in inspect_installed(directory, store, now):
        if item.package is None:
            assert item.error is not None
            log.warning("plugin package refused: %s", item.error)
            continue
        out.append(item.package)
    return out

