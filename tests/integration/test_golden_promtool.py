"""The renderer's golden /metrics body (text 0.0.4) as promtool reads it: it parses, and the only
lint findings are the two the golden data holds on purpose."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "metrics.prom"


def test_the_golden_text_body_passes_promtool(require_binary):
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], input=GOLDEN.read_bytes(),
                          capture_output=True, timeout=60)
    findings = sorted((lint.stdout + lint.stderr).decode().splitlines())
    # An imported counter keeps its name (no _total added); a histogram in ms keeps its unit.
    assert findings == ['node_boots counter metrics should have "_total" suffix',
                        'queue_wait_milliseconds use base unit "seconds" instead of "milliseconds"']
    assert lint.returncode == 3  # lint findings only: a body promtool cannot parse exits 1
