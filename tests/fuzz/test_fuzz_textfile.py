"""Fuzz target ``textfile``: a ``*.prom`` file's bytes through ``collectors.textfile.convert_textfile``
(the text parser, the timestamp check and its line, the conversion), as each collection of
``monitoring.metrics.textfile`` runs them on a file anyone who can write the directory wrote. The
documented error is ``TextfileError``; anything else escaping, or a body costing more than the
harness' CPU bound, is a defect."""

from __future__ import annotations

import pytest

from collectors.textfile import TextfileError, convert_textfile
from integrations.prometheus.scrape import Target, TargetScraper
from tests.fuzz.harness import DATA, run_fuzz, seeds

pytestmark = pytest.mark.fuzz

TOKENS = [
    b"0", b"1", b"9" * 40, b" 1700000000000", b" -1", b"NaN", b"+Inf", b" ", b"\t", b"\n", b"\0", b"#", b"# TYPE x counter\n",
    b"# TYPE x histogram\n", b"# TYPE x summary\n", b"# HELP x text\n", b"{", b"}", b",", b"=", b'"', b"\\", b'le="',
    b'quantile="', b"x_bucket", b"x_sum", b"x_count", b"x_total", b"\xff", b"\xc3\xa9",
]


def _files() -> list:
    return [*sorted((DATA / "exposition").glob("*.prom")), DATA / "node_exporter_1.5.prom"]


def textfile_body(data: bytes) -> None:
    scraper = TargetScraper(Target("/var/lib/monbridge/textfile/fuzz.prom", {}))
    convert_textfile(scraper, data, 1_700_000_000_000_000_000)


def test_fuzz_textfile() -> None:
    tried = run_fuzz(textfile_body, seeds("textfile", _files()), allowed=(TextfileError,), tokens=TOKENS)
    assert tried > len(_files())
