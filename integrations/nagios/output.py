"""Nagios plugin output and states, as Nagios Core 4 reads them (``parse_check_output`` in
its ``base/checks.c``).

* The first line is ``TEXT | PERFDATA``: the text before the first ``|`` (stripped) is the
  short output, the rest of the line perfdata.
* Later lines are long output until one holds a ``|``: its text before the ``|`` ends the long
  output, and everything after it, on that line and every later one, is more perfdata (lines
  joined with a space).
* Output is read up to the first NUL byte, as Nagios does.
* Semicolons in the short text become colons (Nagios' ``replace_semicolons``: ``;`` separates
  the fields of its log and external commands); long text and perfdata keep theirs.

The length limit is Nagios' ``MAX_PLUGIN_OUTPUT_LENGTH`` (8192 bytes, ``include/nagios.h``):
the documented bound of what Nagios keeps of a plugin's output, perfdata included.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from integrations.nagios.perfdata import PerfItem, parse_perfdata

__all__ = ["MAX_PLUGIN_OUTPUT_LENGTH", "PluginOutput", "State", "parse_plugin_output", "state_from_exit"]

#: Nagios Core's ``MAX_PLUGIN_OUTPUT_LENGTH`` (bytes of output, perfdata included).
MAX_PLUGIN_OUTPUT_LENGTH = 8192


class State(enum.IntEnum):
    """A service state, its value the plugin's exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def state_from_exit(code: int) -> State:
    """The state of an exit code (0-3); anything else is UNKNOWN."""
    return State(code) if 0 <= code <= 3 else State.UNKNOWN


@dataclass(slots=True)
class PluginOutput:
    """Short text, long text (lines joined by newlines), the perfdata text and its items, and
    the perfdata items that could not be read."""

    text: str = ""
    long_text: str = ""
    perfdata_text: str = ""
    perfdata: list[PerfItem] = field(default_factory=list)
    perfdata_errors: list[str] = field(default_factory=list)


def parse_plugin_output(output: str) -> PluginOutput:
    """Split a plugin's output as Nagios Core does (see the module doc) and parse its perfdata."""
    nul = output.find("\x00")
    if nul >= 0:
        output = output[:nul]
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it is no empty line of its own
    short = ""
    long_lines: list[str] = []
    perf: list[str] = []
    in_perf = False
    for n, line in enumerate(lines):
        if n == 0:
            before, bar, after = line.partition("|")
            short = before.strip().replace(";", ":")
            if bar:
                perf.append(after)
        elif in_perf:
            perf.append(line)
        elif "|" in line:
            in_perf = True
            before, _, after = line.partition("|")
            long_lines.append(before)
            perf.append(after)
        else:
            long_lines.append(line)
    perf_text = " ".join(p for p in perf if p).strip()
    parsed = parse_perfdata(perf_text)
    return PluginOutput(short, "\n".join(long_lines), perf_text, parsed.items, parsed.errors)
