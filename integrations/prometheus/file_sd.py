"""File-based service discovery with the semantics of Prometheus' ``file_sd_configs`` (2.42,
``discovery/file/file.go``).

Each pattern is a glob whose last path element may hold a ``*`` and which ends in ``.json``,
``.yml`` or ``.yaml`` (any case), as Prometheus requires. A file holds a list of target groups::

    - targets: ["host1:9100", "host2:9100"]
      labels: {env: prod}

JSON is read as Go's encoding/json reads it (keys matched case-insensitively, unknown keys
rejected, values must be strings), YAML as yaml.v2's strict mode does (unknown and duplicate keys
rejected, scalars taken as the text written, so ``targets: [9100]`` is the string ``"9100"``;
an explicit tag must fit its value, so ``!!float ''`` is refused; aliases and ``<<`` merge keys
apply; only the first document is read; ``${...}`` is text, never substituted). Label names must
be valid. Every group gets ``__meta_filepath`` (the file as globbed) and the source
``<file>:<index>``.

The files are written by other tools, so they are bounded like any peer's input: YAML goes
through the config's reader (``bridge.config.read_document``: nesting, values and aliases
bounded, ``MAX_YAML_VALUES`` here; an alias bomb or a recursive alias is refused where it
starts); a file over ``MAX_FILE_BYTES``, JSON with more than ``MAX_JSON_VALUES`` values or
nested too deep, a file listing more than ``MAX_TARGETS`` targets, and anything that is not a
regular file (a FIFO is never opened blocking) are refused. Every problem is a
:class:`FileSDError` naming the line and the path inside the file.

``refresh()`` re-reads the files whose size, mtime, inode or ctime changed, drops the groups of
files that are gone, and keeps the previous groups of a file that cannot be read or parsed, as
Prometheus does: nothing already accepted is lost to a half-written file. A file that failed is
read again on every refresh, so its error is reported until it is fixed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.helpers import ConfigError, NotARegularFile, line_map, locate, read_document, read_regular_file
from integrations.prometheus.relabel import LABEL_NAME_RE

__all__ = ["FILEPATH_LABEL", "FileSD", "FileSDError", "TargetGroup", "parse_file", "validate_pattern"]

FILEPATH_LABEL = "__meta_filepath"
MAX_FILE_BYTES = 16 << 20
"""A larger file is refused (Prometheus has no bound)."""
MAX_TARGETS = 100_000
"""The most targets one file may list."""
MAX_JSON_VALUES = 1_000_000
"""The most values a JSON file may hold, counted before it is parsed as one more than its
commas and opening brackets (an upper bound): what parsing it may allocate is bounded."""
MAX_YAML_VALUES = 10_000
YAML_BYTES_PER_VALUE = 6
"""The most values (scalars, mappings, lists) a YAML file may hold: ``MAX_YAML_VALUES``, or one
per ``YAML_BYTES_PER_VALUE`` bytes of the file if that is more, each alias counted as the values
it repeats, as the config's are bounded. An alias bomb (billions of values from a few hundred
bytes) is refused at the alias that crosses the bound; a file written out in full (a target list
takes 6 bytes or more a value) is read whatever its length, up to ``MAX_FILE_BYTES``. Reading
costs in proportion to the file (YAML about 1 MB/s, JSON about 20 times faster), in a worker
thread."""
_LINE_VALUES = 10_000  # how far a JSON file is read again to find the line of a problem
# Prometheus' patFileSDName.
_PATTERN_RE = re.compile(r"[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)\Z")


@dataclass(frozen=True)
class TargetGroup:
    targets: tuple[str, ...]  # "host:port", each becomes a target's __address__
    labels: Mapping[str, str]  # the group's labels, __meta_filepath included
    source: str  # "<file>:<index>"


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if Prometheus accepts it as a file_sd path name, else raise ValueError."""
    if not _PATTERN_RE.match(pattern):
        raise ValueError(
            f"path name {pattern!r} is not valid for file discovery: it must end in .json, .yml or .yaml, "
            "and only its last path element may contain a *"
        )
    return pattern


def _python_glob(pattern: str) -> str:
    """Go's filepath.Match syntax in Python's glob syntax: ``[^...]`` negates, ``\\`` escapes."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(f"[{nxt}]" if nxt in "*?[" else nxt)
            i += 2
            continue
        if c == "[" and pattern.startswith("[^", i):
            out.append("[!")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class FileSDError(Exception):
    """A file_sd file's content that cannot be used; the message names the line and the path
    inside the file (``line 3: [1].targets[0]: ...``)."""


class _GroupError(Exception):
    def __init__(self, message: str, path: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass
class _FileState:
    key: tuple[int, ...] | None  # None: the last read failed, so the file is read again next time
    groups: list[TargetGroup]


class FileSD:
    """The target groups of the files matching ``patterns``, kept current by ``refresh()``."""

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, str):
            raise TypeError("patterns must be a sequence of glob patterns, not a string")
        if not patterns:
            raise ValueError("file service discovery config must contain at least one path name")
        self._patterns = [validate_pattern(p) for p in patterns]
        self._files: dict[str, _FileState] = {}

    @property
    def patterns(self) -> list[str]:
        return list(self._patterns)

    def _list_files(self) -> list[str]:
        out: dict[str, None] = {}
        for pattern in self._patterns:
            for path in sorted(glob.glob(_python_glob(pattern), include_hidden=True)):
                out.setdefault(path, None)
        return list(out)

    def refresh(self) -> tuple[list[TargetGroup], list[str]]:
        """All current target groups, and one error message for each file that failed this time."""
        errors: list[str] = []
        files: dict[str, _FileState] = {}
        for path in self._list_files():
            previous = self._files.get(path)
            try:
                st = os.stat(path)
                if previous is not None and previous.key == _stat_key(st):
                    files[path] = previous
                    continue
                key, groups = _read_file(path)
            except FileSDError as e:
                errors.append(f"{path}: {e}")
                files[path] = _FileState(None, previous.groups if previous else [])
                continue
            except OSError as e:
                errors.append(f"{path}: cannot read the file: {e.strerror or e}")
                files[path] = _FileState(None, previous.groups if previous else [])
                continue
            files[path] = _FileState(key, groups)
        self._files = files
        return [g for state in files.values() for g in state.groups], errors


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns)


def _read_file(path: str) -> tuple[tuple[int, ...], list[TargetGroup]]:
    try:  # a FIFO matched by the glob is refused, never waited on
        st, content = read_regular_file(path, MAX_FILE_BYTES)
    except NotARegularFile:
        raise FileSDError("cannot read the file: not a regular file") from None
    return _stat_key(st), parse_file(content, path)


def parse_file(content: bytes, filename: str) -> list[TargetGroup]:
    """The target groups of one file_sd file holding ``content``, read as YAML or JSON by the
    extension of ``filename`` (which also labels the groups). Raises FileSDError, nothing else."""
    ext = os.path.splitext(filename)[1].lower()
    if ext not in (".json", ".yml", ".yaml"):
        raise FileSDError(f"unsupported file extension {ext!r} (expected .json, .yml or .yaml)")
    if len(content) > MAX_FILE_BYTES:
        raise FileSDError(f"the file is larger than {MAX_FILE_BYTES} bytes")
    is_json = ext == ".json"
    lines: Mapping[tuple[Any, ...], int] = {}
    if is_json:
        data = _load_json(content)
    else:
        values = max(MAX_YAML_VALUES, len(content) // YAML_BYTES_PER_VALUE)
        try:
            data, lines = read_document(content, filename, text_scalars=True, first_document=True,
                                        max_bytes=MAX_FILE_BYTES, max_values=values, what="the file")
        except ConfigError as e:
            more = len(e.issues) - 1
            raise FileSDError(e.issues[0] + (f" (and {more} more problems)" if more else "")) from None
    try:
        return _groups(data, filename, case_insensitive_keys=is_json)
    except _GroupError as e:
        if is_json:  # the JSON parser knows no lines: read the file as YAML, as far as needed
            lines = line_map(content, max_bytes=MAX_FILE_BYTES, max_values=_LINE_VALUES)
        raise FileSDError(locate(e.message, e.path, lines)) from None


# ---------------------------------------------------------------------------- parsing


def _load_json(content: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        line = content.count(b"\n", 0, e.start) + 1
        raise FileSDError(f"line {line}: not valid UTF-8") from None
    if 1 + text.count(",") + text.count("[") + text.count("{") > MAX_JSON_VALUES:
        raise FileSDError(f"the file holds more than {MAX_JSON_VALUES} JSON values (counted as its commas and "
                          "opening brackets)")
    if not text.strip():
        raise FileSDError("line 1, column 1: not valid JSON: unexpected end of JSON input")
    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as e:
        raise FileSDError(f"line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise FileSDError("not valid JSON: nested too deep") from None
    except ValueError as e:
        raise FileSDError(f"not valid JSON: {e}") from None


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _string(value: Any, path: tuple[Any, ...], what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _GroupError(f"{what} must be a string, not {_kind(value)}", path)
    return value


def _groups(data: Any, filename: str, case_insensitive_keys: bool) -> list[TargetGroup]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise _GroupError(f"expected a list of target groups, not {_kind(data)}")
    groups = []
    count = 0
    for i, item in enumerate(data):
        if item is None:
            raise _GroupError("nil target group item found", (i,))
        if not isinstance(item, dict):
            raise _GroupError(f"a target group must be a mapping with targets and labels, not {_kind(item)}", (i,))
        raw_targets: Any = None
        raw_labels: Any = None
        for key, value in item.items():
            if not isinstance(key, str):
                raise _GroupError("a field name must be a string", (i,))
            field = key.lower() if case_insensitive_keys else key
            if field == "targets":
                raw_targets = value
            elif field == "labels":
                raw_labels = value
            else:
                raise _GroupError("unknown field (expected targets and labels)", (i, key))
        if raw_targets is None:
            raw_targets = []
        if not isinstance(raw_targets, list):
            raise _GroupError(f"targets must be a list of host:port strings, not {_kind(raw_targets)}", (i, "targets"))
        count += len(raw_targets)
        if count > MAX_TARGETS:
            raise _GroupError(f"the file lists more than {MAX_TARGETS} targets", (i, "targets"))
        targets = tuple(_string(t, (i, "targets", j), "a target") for j, t in enumerate(raw_targets))
        if raw_labels is None:
            raw_labels = {}
        if not isinstance(raw_labels, dict):
            raise _GroupError(f"labels must be a mapping of label names to strings, not {_kind(raw_labels)}", (i, "labels"))
        labels: dict[str, str] = {}
        for name, value in raw_labels.items():
            if not isinstance(name, str):
                raise _GroupError("a label name must be a string", (i, "labels"))
            if not LABEL_NAME_RE.match(name):
                raise _GroupError("not a valid label name", (i, "labels", name))
            labels[name] = _string(value, (i, "labels", name), "a label value")
        labels[FILEPATH_LABEL] = filename
        groups.append(TargetGroup(targets, types.MappingProxyType(labels), f"{filename}:{i}"))
    return groups
