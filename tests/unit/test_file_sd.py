"""file_sd: Prometheus' file format and refresh semantics (discovery/file/file.go)."""

from __future__ import annotations

import json
import logging
import os
import tracemalloc
from pathlib import Path

import pytest
import yaml

from integrations.prometheus.file_sd import FILEPATH_LABEL, MAX_FILE_BYTES, FileSD, FileSDError, TargetGroup, parse_file


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
    ("t.yml", "- targets: [a:1]\n  labels:\n    0bad: x\n", "line 3: [0].labels.0bad: not a valid label name"),
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


# ---------------------------------------------------------------------------- hostile files

ALIAS_BOMB = (  # 485 bytes that expand to 10**9 strings
    "- targets: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"- targets: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
              for p, c in zip("abcdefgh", "bcdefghi", strict=True))
)


def refresh_after_breaking(tmp_path: Path, name: str, content: bytes) -> tuple[list[TargetGroup], list[TargetGroup], list[str]]:
    """The groups of a good file, then the groups and errors once it holds ``content``."""
    f = tmp_path / name
    write(f, '[{"targets": ["good:1"]}]' if name.endswith(".json") else "- targets: [good:1]\n")
    sd = FileSD([str(f)])
    good, errors = sd.refresh()
    assert errors == [] and [g.targets for g in good] == [("good:1",)]
    f.write_bytes(content)
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 2_000_000_000))
    groups, errors = sd.refresh()
    return good, groups, errors


@pytest.mark.parametrize(("name", "content", "message"), [
    ("t.yml", ALIAS_BOMB.encode(), "line 4: [3].targets[7]: the file holds more than 10000 values (*c repeats 1111)"),
    ("t.yml", b"- targets: &a [h:1, *a]\n", "line 1: [0].targets[1]: alias *a does not name an anchor (&a) completed"),
    ("t.yml", b"- &g {targets: [h:1], labels: *g}\n", "line 1: [0].labels: alias *g does not name an anchor"),
    ("t.yml", b"- targets: [h:1]\n  labels:\n    ? [a, b]\n    : c\n",
     "line 3: [0].labels: a mapping key must be a string, not a list"),
    ("t.yml", b"- targets: [!!float '']\n", "line 1: [0].targets[0]: not a valid !!float value"),
    ("t.yml", b"- targets: [h:1]\n  labels: {a: !!binary aGk=}\n", "line 2: [0].labels.a: unsupported tag !!binary"),
    ("t.yml", b"- targets: [h:1]\n  labels: {~: x}\n", "line 2: [0].labels: a label name must be a string"),
    ("t.yml", b"- targets: [h:1]\n  labels: {a: \xff}\n", "line 2: not valid UTF-8"),
    ("t.yml", b"[" * 100 + b"]" * 100, "line 1: [0][0][0][0]"),
    ("t.json", b"[" * 100_000 + b"]" * 100_000, "not valid JSON: nested too deep"),
    ("t.json", b"[" + b"{}," * 1_000_000 + b"{}]", "the file holds more than 1000000 JSON values"),
    ("t.json", json.dumps([{"targets": [f"h:{i}" for i in range(100_001)]}]).encode(),
     "line 1: [0].targets: the file lists more than 100000 targets"),
])
def test_hostile_file_is_refused_and_its_previous_groups_kept(tmp_path, name, content, message):
    good, groups, errors = refresh_after_breaking(tmp_path, name, content)
    assert groups == good
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / name}: ") and message in errors[0], errors[0]


def test_alias_bomb_is_refused_without_expanding_it():
    tracemalloc.start()
    try:
        with pytest.raises(FileSDError, match="more than 10000 values"):
            parse_file(ALIAS_BOMB.encode(), "t.yml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20  # expanded, it is 10**9 strings


def test_aliases_within_the_bound_are_read():
    groups = parse_file(b"- targets: &t [a:1, b:2]\n  labels: &l {env: prod}\n- targets: *t\n  labels:\n"
                        b"    <<: *l\n    dc: eu\n", "t.yml")
    assert [(g.targets, dict(g.labels)) for g in groups] == [
        (("a:1", "b:2"), {"env": "prod", FILEPATH_LABEL: "t.yml"}),
        (("a:1", "b:2"), {"env": "prod", "dc": "eu", FILEPATH_LABEL: "t.yml"}),
    ]


def test_oversized_file_is_refused_before_it_is_parsed(tmp_path):
    content = b"- targets: [h:1]\n" + b"#" * MAX_FILE_BYTES
    good, groups, errors = refresh_after_breaking(tmp_path, "t.yml", content)
    assert groups == good and len(errors) == 1 and f"the file is larger than {MAX_FILE_BYTES} bytes" in errors[0]


def test_yaml_values_are_bounded_by_the_files_length_json_reads_large_files(tmp_path):
    many = [{"targets": [f"10.0.{i // 256}.{i % 256}:9100"], "labels": {"job": "node", "env": "prod"}}
            for i in range(20_000)]
    assert len(parse_file(json.dumps(many).encode(), "t.json")) == 20_000
    # Written out in full, YAML is read whatever its length (JSON is YAML too) ...
    assert len(parse_file(yaml.safe_dump(many).encode(), "t.yml")) == 20_000
    assert len(parse_file(json.dumps(many).encode(), "t.yml")) == 20_000
    # ... but values repeated by aliases are bounded by the file's length.
    amplified = b"- &g {targets: ['10.0.0.1:9100'], labels: {job: node, env: prod}}\n" + b"- *g\n" * 5_000
    with pytest.raises(FileSDError, match=r"^line \d+: \[\d+\]\S*: the file holds more than 10000 values"):
        parse_file(amplified, "t.yml")


def test_yaml_is_not_substituted_and_only_its_first_document_is_read():
    groups = parse_file(b"- targets: ['${HOST}:1', !!int 9100, !!str 007]\n  labels: {a: $$x}\n---\n- {\n", "t.yml")
    assert groups[0].targets == ("${HOST}:1", "9100", "007") and groups[0].labels["a"] == "$$x"


def test_fifo_is_refused_without_blocking(tmp_path):
    f = tmp_path / "t.yml"
    os.mkfifo(f)  # a writer never comes: opening it to read would block
    groups, errors = FileSD([str(f)]).refresh()
    assert groups == [] and errors == [f"{f}: cannot read the file: not a regular file"]


async def test_plugin_logs_a_broken_file_once_and_its_fix_once_and_counts_every_failed_read(tmp_path, caplog):
    from integrations.prometheus.plugin import PrometheusIntegration

    f = tmp_path / "t.yml"
    write(f, "- targets: ['127.0.0.1:1']\n  labels: {job: sd}\n")
    plugin = PrometheusIntegration()
    await plugin.initialize({"scrape": {"interval": 5, "timeout": 1, "file_sd": [str(f)]}})

    async def round_() -> tuple[set[str], float]:
        metrics = await plugin.import_metrics()
        up = {m.attributes["instance"] for m in metrics if m.name == "up"}
        errors = sum(float(m.value) for m in metrics if m.name == "monbridge.scrape.file_sd.errors")
        return up, errors

    try:
        assert await round_() == ({"127.0.0.1:1"}, 0.0)
        write(f, ALIAS_BOMB)
        with caplog.at_level(logging.INFO, logger="monbridge.prometheus"):
            assert await round_() == ({"127.0.0.1:1"}, 1.0)  # the previous target is still scraped
            assert await round_() == ({"127.0.0.1:1"}, 2.0)
            write(f, "- targets: ['127.0.0.1:2']\n")
            assert await round_() == ({"127.0.0.1:2"}, 2.0)
            assert await round_() == ({"127.0.0.1:2"}, 2.0)
        logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("file_sd: ")]
        assert len(logged) == 2, logged
        assert logged[0].startswith(f"file_sd: {f}: line 4: [3].targets[7]: the file holds more than 10000 values")
        assert logged[0].endswith("(the file's previous targets are kept)")
        assert logged[1].startswith(f"file_sd: resolved: {f}: line 4")
    finally:
        await plugin.shutdown()


def test_yaml_values_cost_no_call_each(monkeypatch):
    """A YAML file's values (as a file_sd file holds them: lists and mappings of plain and quoted scalars,
    nulls) are read by the reader's event loop alone: no call of its own per value, and no PyYAML resolver
    (what made a file of many small values cost its CPU bound)."""
    from bridge import config

    calls: list[str] = []
    for name in ("_scalar", "_place", "_count", "_add", "_alias", "_substitute"):
        method = getattr(config._Reader, name)
        monkeypatch.setattr(config._Reader, name, lambda self, *a, _m=method, _n=name: calls.append(_n) or _m(self, *a))
    monkeypatch.setattr(config._LOADER, "resolve", lambda *a: calls.append("resolve") or yaml.SafeLoader.resolve(*a))
    n = 2_000
    content = "".join(f"- targets: [10.0.0.{i % 250}:9100, 'h{i}:1', ~]\n  labels:\n    job: node\n    env: null\n"
                      f"    n: {i}\n" for i in range(n)).encode()
    groups = parse_file(content, "t.yml")
    assert len(groups) == n and groups[7].targets == ("10.0.0.7:9100", "h7:1", "")
    assert dict(groups[7].labels) == {"job": "node", "env": "", "n": "7", FILEPATH_LABEL: "t.yml"}
    assert calls == ["_place"]  # the top-level list's


@pytest.mark.parametrize(("line", "message", "targets"), [
    (b"- targets: [!!float '']\n", r"^line 1: \[0\]\.targets\[0\]: not a valid !!float value \(and 200 more problems\)$", None),
    (b"- targets: [!!int 9_100]\n", None, ("9_100",)),
])
def test_a_tagged_scalar_repeated_is_constructed_once(monkeypatch, line, message, targets):
    from bridge import config

    calls: list[str] = []
    for tag, construct in list(config.SafeConstructor.yaml_constructors.items()):
        monkeypatch.setitem(config.SafeConstructor.yaml_constructors, tag,
                            lambda c, node, _f=construct: calls.append(node.value) or _f(c, node))
    if message:
        with pytest.raises(FileSDError, match=message):
            parse_file(line * 2_000, "t.yml")
    else:
        assert [g.targets for g in parse_file(line * 2_000, "t.yml")] == [targets] * 2_000
    assert len(calls) == 1
