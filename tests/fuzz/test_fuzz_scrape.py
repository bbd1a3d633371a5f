"""Fuzz target ``scrape``: a scraped body through the text / OpenMetrics parser and the conversion
of its samples (``TargetScraper.convert``), as a target's scrape runs them. The documented error
is ``ParseError`` (``textparse``); anything else escaping, or a body costing more than the
harness' CPU bound, is a defect. The corpus (``corpus/scrape/``) holds the bodies that were
quadratic: long digit runs in values, timestamps and ``le``, label values over many lines,
escapes before a far quote, a repeated label name at the end of a long label set."""

from __future__ import annotations

import pytest

from integrations.prometheus.scrape import Target, TargetScraper
from integrations.prometheus.textparse import ParseError
from tests.fuzz.harness import DATA, run_fuzz, seeds

pytestmark = pytest.mark.fuzz

TARGET = Target("http://127.0.0.1:9100/metrics", {"job": "node", "instance": "127.0.0.1:9100"})
T0 = 1_700_000_000_000_000_000
SMALL = 16 << 10

TOKENS = [
    b"0", b"1", b"9" * 40, b"0" * 400, b"1" * 5000, b".", b"e", b"E", b"e+", b"e-308", b"-", b"+", b"_", b"0x1p-2",
    b"NaN", b"+Inf", b"-inf", b"Infinity", b"1e400", b" ", b"\t", b"\n", b"\r\n", b"\0", b"#", b"# ", b"# EOF\n",
    b"{", b"}", b",", b"=", b'"', b'\\"', b"\\\\", b"\\n", b"\\", b'le="', b'quantile="', b'="x",', b"\xff", b"\xc3\xa9",
    b"# TYPE x histogram\n", b"# TYPE x summary\n", b"# TYPE x counter\n", b"# TYPE x gaugehistogram\n",
    b"# HELP x text\n", b"# UNIT x_seconds seconds\n", b"x_bucket", b"x_sum", b"x_count", b"x_total", b"x_created",
    b' # {a="b"} 1 2', b" 1700000000000", b" 1700000000.5",
]


def _files() -> list:
    return [*sorted((DATA / "exposition").glob("*.prom")), *sorted((DATA / "exposition").glob("*.om")),
            DATA / "node_exporter_1.5.prom"]


def scrape_body(data: bytes) -> None:
    """Convert ``data`` as a target's body: OpenMetrics when it ends as one does, else text 0.0.4;
    a small body that converts is converted once more (the repeated-scrape caches; a large one
    would be charged twice against the harness' CPU bound)."""
    openmetrics = data.rstrip().endswith(b"# EOF")
    scraper = TargetScraper(TARGET)
    scraper.convert(data, openmetrics, T0)
    if len(data) <= SMALL:
        scraper.convert(data, openmetrics, T0 + 15_000_000_000)


def test_fuzz_scrape() -> None:
    tried = run_fuzz(scrape_body, seeds("scrape", _files()), allowed=(ParseError,), tokens=TOKENS)
    assert tried > len(_files())
