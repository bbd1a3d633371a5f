"""Fuzz targets ``package`` and ``package_manifest``: a package file's bytes through
``verify_bytes`` (the bounded zip reader, the signature file, the signature check against a
trust store holding the corpus' signer, then the manifest), and a ``metadata.json`` through
``parse_manifest`` (which a mutated package rarely reaches: its signature fails first). The
documented error is ``PackageError``; anything else escaping, or an input costing more than the
harness' CPU bound, is a defect. Seeds: ``corpus/package/`` (signed packages, deflated and
stored, and the unsigned, path traversal, symlink, four-member, duplicate-member, commented and
deflate-bomb packages the reader refuses) and ``corpus/package_manifest/``."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.package import PackageError, Refusal, SigningKey, TrustedKey, TrustStore, parse_manifest, verify_bytes
from tests.fuzz.harness import CORPUS, fuzz_seconds, run_fuzz, seeds

#: The signer of the corpus' packages (a fixed key: its packages verify as long as they are unchanged).
SIGNER = SigningKey(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"monbridge fuzz signer").digest()), "Fuzz",
                    datetime(2099, 1, 1, tzinfo=UTC))
TRUST = TrustStore(keys={SIGNER.key_id: TrustedKey(SIGNER.key_id, "Fuzz", SIGNER.public, SIGNER.not_after, "fuzz")})
NOW = datetime(2026, 6, 1, tzinfo=UTC)

PACKAGE_TOKENS = [b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06", b"metadata.json",
                  b"signature.json", b"plugin.wasm", b"../", b"/", b"\\", b"\x00", b"\xff\xff\xff\xff", b"\x00\x00",
                  b"\xa1\x81", b"\x08\x00", b"\x0c\x00", b"\x01\x00", b"\x00asm\x01\x00\x00\x00"]
MANIFEST_TOKENS = [b'"id": ', b'"version": ', b'"plugin_type": ', b'"api_version": ', b'"permissions": ',
                   b'"dependencies": ', b'"paths": ', b'"hosts": ', b'"exec": ', b'"module": ', b'"1.0"', b'"1.2.3"',
                   b'"^1.0.0"', b'">=1.0.0, <2.0.0"', b'"monitoring.metrics.x"', b'"metric_collector"', b"[", b"]",
                   b"{", b"}", b", ", b": ", b"null", b"true", b"1e999", b"NaN", b'"\\u0000"', b'"\\ud800"', b"\xff"]


def verify(data: bytes) -> object:
    return verify_bytes(data, "fuzz.mbpkg", TRUST, NOW)


def manifest(data: bytes) -> object:
    return parse_manifest(data, "fuzz.mbpkg")


@pytest.mark.fuzz
def test_fuzz_package() -> None:
    packages, manifests = seeds("package"), seeds("package_manifest")
    half = fuzz_seconds() / 2
    tried = run_fuzz(verify, packages, allowed=(PackageError,), tokens=PACKAGE_TOKENS, seconds=half)
    tried += run_fuzz(manifest, manifests, allowed=(PackageError,), tokens=MANIFEST_TOKENS, seconds=half)
    assert tried >= len(packages) + len(manifests)


def test_the_corpus_packages_verify_or_are_refused_as_malformed_or_unsigned() -> None:
    """The corpus' signed packages verify with the fixed signer; the others are refused, saying why."""
    outcomes = {}
    for path in sorted((CORPUS / "package").iterdir()):
        try:
            outcomes[path.name] = verify(path.read_bytes()).__class__.__name__  # type: ignore[attr-defined]
        except PackageError as e:
            assert str(e).startswith("fuzz.mbpkg: "), str(e)
            outcomes[path.name] = e.reason.value
    assert outcomes == {"valid.mbpkg": "VerifiedPackage", "valid-stored.mbpkg": "VerifiedPackage",
                        "unsigned.mbpkg": Refusal.UNSIGNED.value, **{
                            name: Refusal.MALFORMED.value for name in (
                                "bomb.mbpkg", "comment.mbpkg", "duplicate.mbpkg", "four-members.mbpkg",
                                "symlink.mbpkg", "traversal.mbpkg")}}
