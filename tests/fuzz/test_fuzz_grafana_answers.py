"""Fuzzing what Grafana answers monitoring.integration.grafana, and its state file.

Whatever bytes come back, with a 2xx, a 4xx or a 5xx status, reading them returns an outcome and
raises nothing: a 2xx's body as JSON (an oversized or non-JSON one a permanent failure), an error
status classified with an excerpt; the annotation id and the stored dashboard are taken from a
JSON answer of any shape or found missing. The state file's reader raises only ValueError.

Seeds: a dashboard, a save, an annotation, an error answer and a state file in ``corpus/grafana_answers/``.
"""

from __future__ import annotations

import pytest

from bridge.api import ExportResult, ExportStatus
from integrations.grafana.plugin import annotation_id, parse_state, read_answer, stored_dashboard
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b'"id"', b'"dashboard"', b'"meta"', b'"folderUid"', b"null", b"true", b"1e999", b"-1", b"[", b"{", b"\\ud800",
          b'"version"', b"\x00", b"NaN"]


def answer(data: bytes) -> None:
    for status in (200, 404, 412, 503):
        a = read_answer(status, data, "GET /api/x", 64 << 10, data[:40].decode("latin-1"))
        assert isinstance(a.result, ExportResult) and a.status == status
        assert a.result.ok == (status == 200 and a.result.status is ExportStatus.SUCCESS)
        if a.result.ok:
            ident = annotation_id(a.doc)
            assert ident is None or (type(ident) is int and ident > 0)
            stored = stored_dashboard(a.doc)
            assert stored is None or isinstance(stored[0], dict)
    try:
        state = parse_state(data)
    except ValueError:
        return
    assert all(s.id is None or s.id > 0 for s in state.values())


@pytest.mark.fuzz
def test_fuzz_grafana_answers() -> None:
    pool = seeds("grafana_answers")
    assert run_fuzz(answer, pool, allowed=(), tokens=TOKENS) >= len(pool)


def test_seeds_read_as_grafana_means_them() -> None:
    from tests.fuzz.harness import CORPUS

    d = CORPUS / "grafana_answers"
    dashboard = read_answer(200, (d / "dashboard.json").read_bytes(), "GET", 1 << 20)
    assert stored_dashboard(dashboard.doc)[1] == "monbridge"
    assert annotation_id(read_answer(200, (d / "annotation.json").read_bytes(), "POST", 1 << 20).doc) == 42
    err = read_answer(412, (d / "error.json").read_bytes(), "POST /api/dashboards/db", 1 << 20)
    assert err.result.status is ExportStatus.PERMANENT and "version-mismatch" in err.result.reason
    assert read_answer(200, b"x" * 10, "GET", 5).result.status is ExportStatus.PERMANENT
    state = parse_state((d / "state.json").read_bytes())
    assert state["fp1"].id == 42 and state["fp2"].id is None and state["fp2"].state == "acknowledged"
    for bad in (b"[]", b'{"a": [true, "s", "n", []]}', b'{"a": [1, "s", "n", [1]]}', b"{" * 100_000):
        with pytest.raises(ValueError):
            parse_state(bad)


def test_an_excerpt_cut_drops_the_last_word_in_linear_time() -> None:
    # corpus/grafana_answers/quadratic_last_word.bin: 4 KiB without a space, for which the cut's
    # regex (\S*\Z) took a quarter of a second of CPU on the event loop; the fuzz run times it.
    from bridge.helpers import peer_excerpt

    assert peer_excerpt(" " * 4090 + "SECRETPART") == "(empty body)"
    assert peer_excerpt("ab" + " " * 4090 + "SECRETPART") == "ab"
    assert peer_excerpt("x" * 5000) == "(empty body)"
    assert peer_excerpt("short SECRETPART") == "short SECRETPART"  # nothing cut: nothing dropped
