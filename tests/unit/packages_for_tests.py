"""Plugin packages for tests: a tiny WASM module, manifests, and archives built member by member
(as a hostile publisher would write them)."""

from __future__ import annotations

import io
import json
import stat
import warnings
import zipfile
from typing import Any

import wasmtime

MODULE = wasmtime.wat2wasm('(module (func (export "collect") (result i32) i32.const 42))')


def manifest(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "monitoring.metrics.acme-queue",
        "name": "Acme queue collector",
        "version": "1.2.0",
        "plugin_type": "metric_collector",
        "api_version": "1.0",
        "description": "queue depth of the Acme broker",
        "author": "Acme Inc",
        "dependencies": [{"id": "monitoring.metrics.system", "version": ">=0.1.0"}],
        "permissions": {"hosts": ["queue.internal:8080"], "paths": ["/var/lib/acme"]},
    }
    doc.update(changes)
    return doc


def manifest_bytes(**changes: Any) -> bytes:
    return json.dumps(manifest(**changes), indent=2).encode()


def members(package: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(package)) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def archive(entries: list[tuple[str, bytes]] | dict[str, bytes], *, mode: int = stat.S_IFREG | 0o644,
            modes: dict[str, int] | None = None, compress: int = zipfile.ZIP_DEFLATED, comment: bytes = b"") -> bytes:
    """A zip of ``entries`` (name, data), each with ``mode`` (or ``modes[name]``) and ``compress``."""
    items = list(entries.items()) if isinstance(entries, dict) else entries
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a duplicate name, when a test writes one
        for name, data in items:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system = 3
            info.external_attr = (modes or {}).get(name, mode) << 16
            info.compress_type = compress
            zf.writestr(info, data)
        zf.comment = comment
    return out.getvalue()


def repack(package: bytes, **replace: bytes) -> bytes:
    """``package`` with members replaced (``plugin_wasm=...`` for ``plugin.wasm``), the zip rebuilt
    with fresh CRCs, as someone changing a package's content would."""
    files = members(package)
    for key, data in replace.items():
        name = {"plugin_wasm": "plugin.wasm", "metadata_json": "metadata.json", "signature_json": "signature.json"}[key]
        files[name] = data
    return archive(files)


def flip(data: bytes, offset: int) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)
