"""file_sd: Prometheus' file format and refresh semantics (discovery/file/file.go)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from integrations.prometheus.file_sd import FileSD, TargetGroup


def write(path: Path, text: str) -> None:
    path.write_text(text)
    # A distinct mtime even on file systems with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def by_source(groups: list[TargetGroup]) -> dict[str, TargetGroup]:
    return {g.source: g for g in groups}


def test_yaml_and_json_groups(tmp_path):
    write(tmp_path / "a.yml", "- targets: ['h1:9100', h2:9100]\n  labels: {env: prod}\n- targets: [h3:80]\n")
    write(tmp_path / "b.json", json.dumps([{"targets": ["h4:9100"], "labels": {"team": "x"}}]))
    groups, errors = FileSD([str(tmp_path / "*.yml"), str(tmp_path / "*.json")]).refresh()
    assert errors == []
    a, b = str(tmp_path / "a.yml"), str(tmp_path / "b.json")
    assert [(g.source, g.targets, dict(g.labels)) for g in groups] == [
        (f"{a}:0", ("h1:9100", "h2:9100"), {"env": "prod", "__meta_filepath": a}),
        (f"{a}:1", ("h3:80",), {"__meta_filepath": a}),
        (f"{b}:0", ("h4:9100",), {"team": "x", "__meta_filepath": b}),
    ]


def test_yaml_scalars_are_their_text_and_json_keys_ignore_case(tmp_path):
    # yaml.v2 decodes any scalar into a string field as written; Go's encoding/json matches
    # field names case-insensitively.
    write(tmp_path / "a.yaml", "- targets: [9100, true]\n  labels: {n: 007, empty: ~}\n")
    write(tmp_path / "b.JSON", '[{"Targets": ["h:1"], "LABELS": {"a": "b"}}]')
    groups, errors = FileSD([str(tmp_path / "a.yaml"), str(tmp_path / "*.JSON")]).refresh()
    assert errors == []
    assert groups[0].targets == ("9100", "true") and groups[0].labels["n"] == "007" and groups[0].labels["empty"] == ""
    assert groups[1].targets == ("h:1",) and groups[1].labels["a"] == "b"


def test_empty_documents(tmp_path):
    write(tmp_path / "a.yml", "")
    write(tmp_path / "b.json", "null")
    write(tmp_path / "c.json", "[]")
    assert FileSD([str(tmp_path / "*.yml"), str(tmp_path / "*.json")]).refresh() == ([], [])


def test_changed_file_is_reread_and_unchanged_file_is_not(tmp_path):
    f = tmp_path / "t.yml"
    write(f, "- targets: [a:1]\n")
    sd = FileSD([str(tmp_path / "*.yml")])
    groups, _ = sd.refresh()
    assert [g.targets for g in groups] == [("a:1",)]
    first = groups[0]
    assert sd.refresh()[0][0] is first  # not read again
    write(f, "- targets: [a:1, b:2]\n- targets: [c:3]\n")
    groups, errors = sd.refresh()
    assert errors == [] and [g.targets for g in groups] == [("a:1", "b:2"), ("c:3",)]
    write(f, "- targets: [d:4]\n")  # fewer groups: the second one goes
    assert [(g.source, g.targets) for g in sd.refresh()[0]] == [(f"{f}:0", ("d:4",))]


def test_broken_file_keeps_old_groups_and_reports_file_and_line(tmp_path):
    f = tmp_path / "t.yml"
    write(f, "- targets: [a:1]\n  labels: {x: y}\n")
    sd = FileSD([str(tmp_path / "*.yml")])
    good, _ = sd.refresh()
    write(f, "- targets: [a:1]\n  labels: {x: y\n- targets: [b:2]\n")
    groups, errors = sd.refresh()
    assert groups == good
    assert len(errors) == 1 and errors[0].startswith(f"{f}: line 3, column ") and "not valid YAML" in errors[0]
    # Still broken: read again and reported again, the old groups still served.
    groups, errors = sd.refresh()
    assert groups == good and len(errors) == 1
    write(f, "- targets: [c:3]\n")
    groups, errors = sd.refresh()
    assert errors == [] and [g.targets for g in groups] == [("c:3",)]


def test_json_syntax_error_names_line(tmp_path):
    f = tmp_path / "t.json"
    write(f, '[\n  {"targets": ["a:1"]},\n  {"targets": ["b:2"],}\n]\n')
    groups, errors = FileSD([str(f)]).refresh()
    assert groups == [] and len(errors) == 1
    assert errors[0].startswith(f"{f}: line 3, column ") and "not valid JSON" in errors[0]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("t.json", '[\n {"targets": ["a:1"]},\n {"targets": [1]}\n]', "line 3: [1].targets[0]: a target must be a string"),
    ("t.json", '[{"targets": ["a:1"], "labels": {"ok": "1",\n "bad-name": "x"}}]', "line 2: [0].labels.bad-name: "),
    ("t.json", '[{"targets": ["a:1"], "labels": {"a": 1}}]', "a label value must be a string, not a number"),
    ("t.json", '[{"targets": ["a:1"], "extra": 1}]', "[0].extra: unknown field"),
    ("t.json", '[null]', "nil target group item found"),
    ("t.json", '{"targets": ["a:1"]}', "expected a list of target groups"),
    ("t.json", "", "not valid JSON"),
    ("t.yml", "- targets: [a:1]\n- targets:\n  - {x: 1}\n", "line 3: [1].targets[0]: a target must be a string, not a mapping"),
    ("t.yml", "- targets: [a:1]\n  labels:\n    0bad: x\n", "line 3: [0].labels.0bad: '0bad' is not a valid label name"),
    ("t.yml", "- targets: [a:1]\n  targets: [b:2]\n", "line 2: [0].targets: key already set at line 1"),
    ("t.yml", "- targets: [a:1]\n  Targets: [b:2]\n", "line 2: [0].Targets: unknown field"),
    ("t.yml", "- targets: a:1\n", "line 1: [0].targets: targets must be a list"),
    ("t.yml", "targets: [a:1]\n", "expected a list of target groups, not a mapping"),
])
def test_invalid_content(tmp_path, name, text, message):
    f = tmp_path / name
    write(f, text)
    groups, errors = FileSD([str(f)]).refresh()
    assert groups == [] and len(errors) == 1
    assert errors[0].startswith(f"{f}: ") and message in errors[0], errors[0]


def test_deleted_file_groups_go(tmp_path):
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    write(a, "- targets: [a:1]\n")
    write(b, "- targets: [b:1]\n")
    sd = FileSD([str(tmp_path / "*.yml")])
    assert {g.targets for g in sd.refresh()[0]} == {("a:1",), ("b:1",)}
    a.unlink()
    groups, errors = sd.refresh()
    assert errors == [] and [g.targets for g in groups] == [("b:1",)]
    write(tmp_path / "c.yml", "- targets: [c:1]\n")  # new files are picked up
    assert [g.source for g in sd.refresh()[0]] == [f"{b}:0", f"{tmp_path / 'c.yml'}:0"]


def test_unreadable_file_keeps_groups(tmp_path):
    f = tmp_path / "t.yml"
    write(f, "- targets: [a:1]\n")
    sd = FileSD([str(f)])
    good, _ = sd.refresh()
    f.unlink()
    f.mkdir()  # matched by the glob, but not a file that can be read
    groups, errors = sd.refresh()
    assert groups == good and len(errors) == 1 and errors[0].startswith(f"{f}: cannot read the file")


def test_hidden_files_match_as_in_go(tmp_path):
    write(tmp_path / ".hidden.yml", "- targets: [h:1]\n")
    assert [g.targets for g in FileSD([str(tmp_path / "*.yml")]).refresh()[0]] == [("h:1",)]


@pytest.mark.parametrize("pattern", ["targets.txt", "dir*/x.yml", "*/*.json", "a.yml.bak", "noext"])
def test_invalid_patterns(pattern):
    with pytest.raises(ValueError, match="not valid for file discovery"):
        FileSD([pattern])


def test_needs_patterns():
    with pytest.raises(ValueError, match="at least one path name"):
        FileSD([])
    with pytest.raises(TypeError):
        FileSD("a.yml")


def test_groups_are_immutable(tmp_path):
    write(tmp_path / "t.yml", "- targets: [a:1]\n")
    group = FileSD([str(tmp_path / "t.yml")]).refresh()[0][0]
    with pytest.raises(TypeError):
        group.labels["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        group.source = "x"  # type: ignore[misc]
