"""Fuzz target ``exposition``: a scraped body bridged into a pipeline beside families whose names it
may clash with, then ``/metrics`` rendered in both formats. Whatever is imported, the OpenMetrics
body must be one prometheus_client's strict parser reads and both formats must hold the same
samples. The documented error is ``ParseError`` (the scraped body's: nothing is imported then);
anything else escaping — a strict parser's refusal of our output included — is a defect."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from bridge.api import Metric, MetricKind
from bridge.exposition import render
from bridge.pipeline import Pipeline
from integrations.prometheus.scrape import Target, TargetScraper
from integrations.prometheus.textparse import ParseError, parse
from tests.fuzz.harness import DATA, run_fuzz, seeds
from tests.fuzz.test_fuzz_scrape import TOKENS

pytestmark = pytest.mark.fuzz

TARGET = Target("http://127.0.0.1:9100/metrics", {"job": "node", "instance": "127.0.0.1:9100"})
T0 = 1_700_000_000_000_000_000
SMALL = 16 << 10
#: Families already in the pipeline, named as the fuzzer's tokens name its metrics.
BESIDE = [Metric("x", MetricKind.GAUGE, 1.0), Metric("x_total", MetricKind.COUNTER, 2.0),
          Metric("x_count", MetricKind.GAUGE, 3.0), Metric("x_created", MetricKind.GAUGE, 4.0)]


def _files() -> list:
    return [*sorted((DATA / "exposition").glob("*.prom")), *sorted((DATA / "exposition").glob("*.om")),
            DATA / "node_exporter_1.5.prom"]


def _samples(body: bytes, openmetrics: bool) -> set[tuple[str, tuple[tuple[str, str], ...], str]]:
    return {(n, tuple(sorted(lb)), "NaN" if math.isnan(v) else repr(v))
            for f in parse(body, openmetrics) for n, lb, v, _, _ in f.samples}


def exposition(data: bytes) -> None:
    openmetrics = data.rstrip().endswith(b"# EOF")
    metrics, _ = TargetScraper(TARGET).convert(data, openmetrics, T0)
    p = Pipeline()
    p.record("beside", BESIDE, prometheus_names=True)
    p.record("scraped", metrics, prometheus_names=True)
    families = p.batch().families()
    text = render(families, {"service.name": "monbridge"}, False)
    om = render(families, {"service.name": "monbridge"}, True)
    if len(data) <= SMALL:  # the judges' own parsing of a large body would exceed the harness' CPU bound
        list(parse_openmetrics(om.decode()))
        assert _samples(text, False) == _samples(om, True)


def test_fuzz_exposition() -> None:
    tried = run_fuzz(exposition, seeds("exposition", _files()), allowed=(ParseError,), tokens=TOKENS)
    assert tried > len(_files())
