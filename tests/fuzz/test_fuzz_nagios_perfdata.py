"""Fuzzing Nagios plugin output and perfdata (``integrations.nagios.output.parse_plugin_output``,
``integrations.nagios.perfdata``): whatever a plugin writes, parsing returns the text, long text
and the perfdata items it could read (the others named as errors), never raises, and writing the
items back and parsing that gives the same items; in bounded time and memory.

Seeds: plugin outputs of the monitoring plugins and tricky perfdata in ``corpus/nagios_perfdata/``.
"""

from __future__ import annotations

import pytest

from integrations.nagios.output import parse_plugin_output
from integrations.nagios.perfdata import format_perfdata, parse_perfdata
from integrations.nagios.ranges import RangeError, parse_range
from tests.fuzz.harness import run_fuzz, seeds

TOKENS = [b"|", b"\n", b"'", b"''", b"=", b";", b"@", b"~", b":", b"U", b"ms", b"us", b"%", b"KB", b"MB", b"c",
          b"1e3", b"-", b".", b",", b" ", b"\t", b"\x00", b"\xff", b"\xe2\x82", b"label=1;2;3;4;5"]


def parse(data: bytes) -> None:
    """Parse ``data`` as a plugin's output; the items go back to text and read the same."""
    out = parse_plugin_output(data.decode("utf-8", "replace"))
    again = parse_perfdata(format_perfdata(out.perfdata))
    assert again.errors == [] and again.items == out.perfdata, (out.perfdata, again)
    for item in out.perfdata:
        for r in (item.warn, item.crit):
            if r is not None:
                assert parse_range(r.render()).alerts(1.0) == r.alerts(1.0)
    for field in data.split(b";")[:8]:  # the range parser on its own
        try:
            parse_range(field.decode("utf-8", "replace"))
        except RangeError:
            pass


@pytest.mark.fuzz
def test_fuzz_nagios_perfdata() -> None:
    pool = seeds("nagios_perfdata")
    for data in pool:
        parse(data)
        assert parse_plugin_output(data.decode()).perfdata_errors == []  # the seeds are all valid
    assert run_fuzz(parse, pool, allowed=(), tokens=TOKENS) >= len(pool)
