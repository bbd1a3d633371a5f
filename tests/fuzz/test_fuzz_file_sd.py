"""Fuzz target ``file_sd``: one file_sd file's content through ``parse_file``, read as YAML and as
JSON, as ``FileSD.refresh`` reads a file that changed. The documented error is ``FileSDError``;
anything else escaping, or a file costing more than the harness' CPU bound, is a defect. Seeds:
``corpus/file_sd/`` (valid YAML and JSON target files, and the alias bomb, recursive alias,
complex key and empty-float tag that crashed or stalled the parser)."""

from __future__ import annotations

import pytest

from integrations.prometheus.file_sd import FileSDError, TargetGroup, parse_file
from tests.fuzz.harness import CORPUS, fuzz_seconds, run_fuzz, seeds

TOKENS = [b"- ", b"targets: ", b"labels: ", b"Targets", b"LABELS", b'"targets": ', b'"labels": ', b"[", b"]", b"{",
          b"}", b", ", b": ", b"\n", b"\n  ", b"\t", b"#", b"'", b'"', b"*a", b"&a ", b"<<: ", b"? ", b"---\n",
          b"!!float ", b"!!int ", b"!!str ", b"!!binary ", b"!!null ", b"!foo ", b"~", b"null", b"true", b"1e309",
          b"NaN", b"h:9100", b"__meta_x", b"${A}", b"\\u00e9", b"\\ud83d", b"\xef\xbb\xbf", b"\xff", b"\x00"]


def as_yaml(data: bytes) -> list[TargetGroup]:
    return parse_file(data, "targets.yml")


def as_json(data: bytes) -> list[TargetGroup]:
    return parse_file(data, "targets.json")


@pytest.mark.fuzz
def test_fuzz_file_sd() -> None:
    pool = seeds("file_sd")
    assert any(p.lstrip().startswith(b"[") for p in pool) and any(p.lstrip().startswith(b"-") for p in pool)
    half = fuzz_seconds() / 2
    tried = run_fuzz(as_yaml, pool, allowed=(FileSDError,), tokens=TOKENS, seconds=half)
    tried += run_fuzz(as_json, pool, allowed=(FileSDError,), tokens=TOKENS, seconds=half)
    assert tried >= 2 * len(pool)


def test_corpus_inputs_are_read_or_refused_with_file_sd_errors() -> None:
    """Every corpus file, as YAML and as JSON, gives target groups or a FileSDError naming a line."""
    refused = 0
    for path in sorted((CORPUS / "file_sd").iterdir()):
        for read in (as_yaml, as_json):
            try:
                groups = read(path.read_bytes())
            except FileSDError as e:
                refused += 1
                assert str(e).startswith("line "), (path.name, read.__name__, str(e))
            else:
                assert all(isinstance(t, str) for g in groups for t in g.targets)
    assert refused >= 4

