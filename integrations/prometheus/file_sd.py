"""File-based service discovery with the semantics of Prometheus' ``file_sd_configs`` (2.42,
``discovery/file/file.go``).

Each pattern is a glob whose last path element may hold a ``*`` and which ends in ``.json``,
``.yml`` or ``.yaml`` (any case), as Prometheus requires. A file holds a list of target groups::

    - targets: ["host1:9100", "host2:9100"]
      labels: {env: prod}

JSON is read as Go's encoding/json reads it (keys matched case-insensitively, unknown keys
rejected, values must be strings), YAML as yaml.v2's strict mode does (unknown and duplicate keys
rejected, scalars taken as the text written, so ``targets: [9100]`` is the string ``"9100"``).
Label names must be valid. Every group gets ``__meta_filepath`` (the file as globbed) and the
source ``<file>:<index>``.

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

import yaml

from integrations.prometheus.relabel import LABEL_NAME_RE

__all__ = ["FILEPATH_LABEL", "FileSD", "TargetGroup", "validate_pattern"]

FILEPATH_LABEL = "__meta_filepath"
# Prometheus' patFileSDName.
_PATTERN_RE = re.compile(r"[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)\Z")
_NULL_TAG = "tag:yaml.org,2002:null"


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


class _FileError(Exception):
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
            except _FileError as e:
                errors.append(f"{path}: {e.message}")
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
    with open(path, "rb") as f:
        key = _stat_key(os.fstat(f.fileno()))
        content = f.read()
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as e:
        line = content.count(b"\n", 0, e.start) + 1
        raise _FileError(f"line {line}: not valid UTF-8") from None
    ext = os.path.splitext(path)[1].lower()
    if ext == ".json":
        data, lines = _load_json(text)
        case_insensitive_keys = True
    elif ext in (".yml", ".yaml"):
        data, lines = _load_yaml(text)
        case_insensitive_keys = False
    else:
        raise _FileError(f"unsupported file extension {ext!r} (expected .json, .yml or .yaml)")
    try:
        groups = _groups(data, path, case_insensitive_keys)
    except _FileError as e:
        probe = e.path
        line = None
        while line is None and probe:
            line = lines.get(probe)
            probe = probe[:-1]
        where = f"line {line}: " if line is not None else ""
        raise _FileError(f"{where}{_format_path(e.path)}: {e.message}" if e.path else f"{where}{e.message}") from None
    return key, groups


def _format_path(path: tuple[Any, ...]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else f".{p}"
    return s.lstrip(".")


# ---------------------------------------------------------------------------- parsing


def _load_json(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        data = json.loads(text, parse_constant=no_constants) if text.strip() else _empty_json()
    except json.JSONDecodeError as e:
        raise _FileError(f"line {e.lineno}, column {e.colno}: not valid JSON: {e.msg}") from None
    except ValueError as e:
        raise _FileError(f"not valid JSON: {e}") from None
    return data, _line_map(text)


def _empty_json() -> Any:
    raise _FileError("line 1, column 1: not valid JSON: unexpected end of JSON input")


def _load_yaml(text: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    try:
        root = next(iter(yaml.compose_all(text, Loader=yaml.SafeLoader)), None)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise _FileError(f"{where}not valid YAML: {getattr(e, 'problem', None) or e}") from None
    lines: dict[tuple[Any, ...], int] = {}
    return _yaml_value(root, (), lines), lines


def _yaml_value(node: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> Any:
    """A composed YAML node as yaml.v2 would decode it into strings: scalars keep their text, null is None."""
    if node is None:
        return None
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return None if node.tag == _NULL_TAG else node.value
    if isinstance(node, yaml.SequenceNode):
        return [_yaml_value(item, (*path, i), lines) for i, item in enumerate(node.value)]
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = key_node.value if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _NULL_TAG else None
        if not isinstance(key, str):
            raise _FileError(f"line {key_node.start_mark.line + 1}: mapping keys must be strings")
        if key in out:
            raise _FileError(f"line {key_node.start_mark.line + 1}: key {key!r} already set in map")
        lines[(*path, key)] = key_node.start_mark.line + 1
        out[key] = _yaml_value(value_node, (*path, key), lines)
    return out


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Lines of the nodes of a JSON document, by path (best effort: JSON read as YAML)."""
    lines: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _yaml_value(root, (), lines)
    except (yaml.YAMLError, _FileError):
        return {}
    return lines


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
        raise _FileError(f"{what} must be a string, not {_kind(value)}", path)
    return value


def _groups(data: Any, filename: str, case_insensitive_keys: bool) -> list[TargetGroup]:
    if data is None:
        return []
    if not isinstance(data, list):
        raise _FileError(f"expected a list of target groups, not {_kind(data)}")
    groups = []
    for i, item in enumerate(data):
        if item is None:
            raise _FileError("nil target group item found", (i,))
        if not isinstance(item, dict):
            raise _FileError(f"a target group must be a mapping with targets and labels, not {_kind(item)}", (i,))
        raw_targets: Any = None
        raw_labels: Any = None
        for key, value in item.items():
            field = key.lower() if case_insensitive_keys else key
            if field == "targets":
                raw_targets = value
            elif field == "labels":
                raw_labels = value
            else:
                raise _FileError("unknown field (expected targets and labels)", (i, key))
        if raw_targets is None:
            raw_targets = []
        if not isinstance(raw_targets, list):
            raise _FileError(f"targets must be a list of host:port strings, not {_kind(raw_targets)}", (i, "targets"))
        targets = tuple(_string(t, (i, "targets", j), "a target") for j, t in enumerate(raw_targets))
        if raw_labels is None:
            raw_labels = {}
        if not isinstance(raw_labels, dict):
            raise _FileError(f"labels must be a mapping of label names to strings, not {_kind(raw_labels)}", (i, "labels"))
        labels: dict[str, str] = {}
        for name, value in raw_labels.items():
            if not isinstance(name, str) or not LABEL_NAME_RE.match(name):
                raise _FileError(f"{name!r} is not a valid label name", (i, "labels", name))
            labels[name] = _string(value, (i, "labels", name), "a label value")
        labels[FILEPATH_LABEL] = filename
        groups.append(TargetGroup(targets, types.MappingProxyType(labels), f"{filename}:{i}"))
    return groups
