"""The exposition corpus of tests/data/exposition: payloads and their expected outcome as Prometheus 2.42 sees them.

Each payload ``<case>.prom`` (text 0.0.4) or ``<case>.om`` (OpenMetrics 1.0) has ``<case>.json``
beside it: ``{"error_line": N}`` when the scrape fails, else ``{"families": [...]}`` as
:func:`outcome` renders the parse. tests/integration/test_textparse_prometheus.py checks every
case against a real Prometheus; ``python -m tests.unit.exposition_corpus`` rewrites the JSON files
from the parser (review the diff).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from integrations.prometheus.textparse import ParsedFamily, ParseError, parse

CORPUS = Path(__file__).resolve().parents[1] / "data" / "exposition"


def cases() -> list[str]:
    return sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".prom", ".om"))


def payload(case: str) -> bytes:
    return (CORPUS / case).read_bytes()


def is_openmetrics(case: str) -> bool:
    return case.endswith(".om")


def expected(case: str) -> dict[str, Any]:
    return json.loads((CORPUS / case).with_suffix(".json").read_text())


def value_text(v: float) -> str:
    """A value as Prometheus' API writes it (NaN, +Inf, -Inf, shortest repr otherwise)."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def outcome(families: list[ParsedFamily]) -> dict[str, Any]:
    return {"families": [
        {"name": f.name, "type": f.type, "help": f.help, "unit": f.unit,
         "samples": [[name, [list(p) for p in labels], value_text(v), ts, key] for name, labels, v, ts, key in f.samples]}
        for f in families
    ]}


def parse_outcome(case: str) -> dict[str, Any]:
    try:
        return outcome(parse(payload(case), is_openmetrics(case)))
    except ParseError as e:
        return {"error_line": e.line}


if __name__ == "__main__":
    for c in cases():
        (CORPUS / c).with_suffix(".json").write_text(json.dumps(parse_outcome(c), indent=1, ensure_ascii=False) + "\n")
