"""Relabeling: every action, Prometheus' validation, Go regex syntax and Regexp.Expand.

Cases marked "relabel_test.go" are from Prometheus' model/relabel/relabel_test.go (TestRelabel,
TestRelabelValidate, TestTargetLabelValidity); the Expand cases follow Go's regexp documentation
(``$1W`` is the group named ``1W``, ``${1}W`` is group 1 then ``W``).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from integrations.prometheus.relabel import (
    GoRegexError,
    RelabelConfig,
    Relabeler,
    compile_go_regex,
    go_expand,
    hashmod,
)


def cfg(**kw) -> RelabelConfig:
    return RelabelConfig.model_validate(kw)


def run(labels: dict[str, str], *rules: dict) -> dict[str, str] | None:
    return Relabeler([cfg(**r) for r in rules]).apply(labels)


# ---------------------------------------------------------------------------- relabel_test.go TestRelabel


def test_replace_with_braced_group():  # relabel_test.go
    out = run({"a": "foo", "b": "bar", "c": "baz"},
              {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch${1}-ch${1}"})
    assert out == {"a": "foo", "b": "bar", "c": "baz", "d": "choo-choo"}


def test_chained_replaces_see_earlier_results():  # relabel_test.go
    out = run({"a": "foo", "b": "bar", "c": "baz"},
              {"source_labels": ["a", "b"], "regex": "f(.*);(.*)r", "target_label": "a", "replacement": "b${1}${2}m"},
              {"source_labels": ["c", "a"], "regex": "(b).*b(.*)ba(.*)", "target_label": "d", "replacement": "$1$2$2$3"})
    assert out == {"a": "boobam", "b": "bar", "c": "baz", "d": "boooom"}


def test_drop_stops_processing():  # relabel_test.go
    assert run({"a": "foo"}, {"source_labels": ["a"], "regex": ".*o.*", "action": "drop"},
               {"source_labels": ["a"], "regex": "f(.*)", "target_label": "d", "replacement": "ch$1-ch$1"}) is None


def test_regex_is_anchored():  # relabel_test.go: "f|o" does not match "foo"; ".*(b).*" captures "b"
    assert run({"a": "foo"}, {"source_labels": ["a"], "regex": "f|o", "action": "drop"}) == {"a": "foo"}
    assert run({"a": "foo"}, {"source_labels": ["a"], "regex": "no-match", "action": "drop"}) == {"a": "foo"}
    assert run({"a": "abc"}, {"source_labels": ["a"], "regex": ".*(b).*", "target_label": "d"}) == {"a": "abc", "d": "b"}


def test_keep():  # relabel_test.go
    assert run({"a": "foo"}, {"source_labels": ["a"], "regex": "no-match", "action": "keep"}) is None
    assert run({"a": "foo"}, {"source_labels": ["a"], "regex": "f.*", "action": "keep"}) == {"a": "foo"}


def test_no_replacement_without_match():  # relabel_test.go
    assert run({"a": "boo"}, {"source_labels": ["a"], "regex": "f", "target_label": "b", "replacement": "bar"}) == {"a": "boo"}


def test_hashmod_values_from_prometheus():  # relabel_test.go: "baz" -> 976, "foo\nbar" -> 734 (modulus 1000)
    out = run({"a": "foo", "b": "bar", "c": "baz"},
              {"source_labels": ["c"], "target_label": "d", "action": "hashmod", "modulus": 1000})
    assert out == {"a": "foo", "b": "bar", "c": "baz", "d": "976"}
    assert run({"a": "foo\nbar"}, {"source_labels": ["a"], "target_label": "b", "action": "hashmod", "modulus": 1000}) == {
        "a": "foo\nbar", "b": "734"}
    assert hashmod("baz", 1000) == 976 and hashmod("foo\nbar", 1000) == 734


def test_hashmod_is_md5_low_8_bytes_big_endian():
    import hashlib

    value = "10.0.0.1:9100"
    expected = int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big")
    assert hashmod(value, 2**64 - 1) == expected % (2**64 - 1)
    assert hashmod(value, 1) == 0
    with pytest.raises(ValueError):
        hashmod(value, 0)


def test_labelmap():  # relabel_test.go
    assert run({"a": "foo", "b1": "bar", "b2": "baz"}, {"regex": "(b.*)", "replacement": "bar_${1}", "action": "labelmap"}) == {
        "a": "foo", "b1": "bar", "b2": "baz", "bar_b1": "bar", "bar_b2": "baz"}
    out = run({"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc"},
              {"regex": "__meta_(my.*)", "replacement": "${1}", "action": "labelmap"})
    assert out == {"a": "foo", "__meta_my_bar": "aaa", "__meta_my_baz": "bbb", "__meta_other": "ccc",
                   "my_bar": "aaa", "my_baz": "bbb"}


def test_target_label_from_groups():  # relabel_test.go: valid case, invalid replacement "", invalid target_labels
    rx = "some-([^-]+)-([^,]+)"
    rule = {"source_labels": ["a"], "regex": rx, "target_label": "${1}"}
    assert run({"a": "some-name-value"}, {**rule, "replacement": "${2}"}) == {"a": "some-name-value", "name": "value"}
    assert run({"a": "some-name-value"}, {**rule, "replacement": "${3}"}) == {"a": "some-name-value"}
    assert run({"a": "some-name-0"},
               {"source_labels": ["a"], "regex": rx, "replacement": "${1}", "target_label": "${3}"},
               {"source_labels": ["a"], "regex": "some-([^-]+)(-[^,]+)", "replacement": "${1}", "target_label": "${3}"}) == {
        "a": "some-name-0"}


def test_real_life_tags():  # relabel_test.go: "more complex real-life like usecase"
    tags = "path:/secret,job:some-job,label:foo=bar"
    out = run({"__meta_sd_tags": tags},
              {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)path:(/[^,]+).*", "replacement": "${1}",
               "target_label": "__metrics_path__"},
              {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)job:([^,]+).*", "replacement": "${1}",
               "target_label": "job"},
              {"source_labels": ["__meta_sd_tags"], "regex": "(?:.+,|^)label:([^=]+)=([^,]+).*", "replacement": "${2}",
               "target_label": "${1}"})
    assert out == {"__meta_sd_tags": tags, "__metrics_path__": "/secret", "job": "some-job", "foo": "bar"}


def test_labeldrop_then_replace_then_keep():  # relabel_test.go, from prometheus issue 12283
    name = "__meta_kubernetes_pod_container_port_name"
    port = "__meta_kubernetes_pod_annotation_XXX_metrics_port"
    out = run({name: "foo", port: "9091"},
              {"regex": f"^{name}$", "action": "labeldrop"},
              {"source_labels": [port], "regex": "(.+)", "replacement": "metrics", "target_label": name},
              {"source_labels": [name], "regex": "^metrics$", "action": "keep"})
    assert out == {port: "9091", name: "metrics"}


def test_labelkeep_labeldrop():  # relabel_test.go
    assert run({"a": "foo", "b1": "bar", "b2": "baz"}, {"regex": "(b.*)", "action": "labelkeep"}) == {"b1": "bar", "b2": "baz"}
    assert run({"a": "foo", "b1": "bar", "b2": "baz"}, {"regex": "(b.*)", "action": "labeldrop"}) == {"a": "foo"}


def test_lowercase_uppercase():  # relabel_test.go
    out = run({"foo": "bAr123Foo"}, {"source_labels": ["foo"], "action": "uppercase", "target_label": "foo_uppercase"},
              {"source_labels": ["foo"], "action": "lowercase", "target_label": "foo_lowercase"})
    assert out == {"foo": "bAr123Foo", "foo_lowercase": "bar123foo", "foo_uppercase": "BAR123FOO"}
    # Go maps rune by rune (simple case mapping): "ß" has no one-rune upper case and stays.
    assert run({"a": "straße"}, {"source_labels": ["a"], "action": "uppercase", "target_label": "b"})["b"] == "STRAßE"


def test_keepequal_dropequal():  # relabel_test.go
    labels = {"__tmp_port": "1234", "__port1": "1234", "__port2": "5678"}
    assert run(labels, {"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port1"}) == labels
    assert run(labels, {"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port1"}) is None
    assert run(labels, {"source_labels": ["__tmp_port"], "action": "dropequal", "target_label": "__port2"}) == labels
    assert run(labels, {"source_labels": ["__tmp_port"], "action": "keepequal", "target_label": "__port2"}) is None


# ---------------------------------------------------------------------------- builder semantics


def test_empty_value_deletes_and_missing_label_reads_empty():
    # replacement "" deletes the target; a missing source label is "" (so "(.*)" matches it).
    assert run({"a": "x", "b": "y"}, {"source_labels": ["a"], "target_label": "b", "replacement": ""}) == {"a": "x"}
    assert run({"a": "x"}, {"source_labels": ["nope"], "target_label": "b", "replacement": "set"}) == {"a": "x", "b": "set"}
    assert run({"a": "x"}, {"source_labels": ["nope"], "target_label": "a"}) == {}
    assert run({"a": "", "b": "y"}, {"source_labels": ["b"], "target_label": "c"}) == {"b": "y", "c": "y"}


def test_separator_and_name_label():
    out = run({"__name__": "up", "job": "j"}, {"source_labels": ["__name__", "job"], "separator": "/", "target_label": "x"})
    assert out == {"__name__": "up", "job": "j", "x": "up/j"}


def test_invalid_expanded_target_is_skipped():
    # "${1}" expands to "0x", not a label name: Prometheus leaves the labels as they are.
    assert run({"a": "0x"}, {"source_labels": ["a"], "regex": "(.*)", "target_label": "${1}", "replacement": "v"}) == {"a": "0x"}


def test_labelmap_later_name_wins_and_uses_snapshot():
    # Both map to "x"; labels are visited in name order, so the value of "b_x" wins.
    assert run({"a_x": "1", "b_x": "2"}, {"regex": "[ab]_(x)", "replacement": "$1", "action": "labelmap"}) == {
        "a_x": "1", "b_x": "2", "x": "2"}


def test_apply_never_mutates_input_and_memo_returns_copies():
    labels = {"__name__": "m", "a": "1"}
    relabeler = Relabeler([cfg(source_labels=["a"], target_label="b"), cfg(regex="a", action="labeldrop")])
    first = relabeler.apply(labels)
    assert labels == {"__name__": "m", "a": "1"}
    assert first == {"__name__": "m", "b": "1"}
    first["mutated"] = "yes"
    assert relabeler.apply(labels) == {"__name__": "m", "b": "1"}
    assert relabeler.apply(dict(labels)) is not relabeler.apply(dict(labels))


def test_memo_is_bounded_and_remembers_drops():
    relabeler = Relabeler([cfg(source_labels=["i"], regex="1.*", action="drop")], memo_size=10)
    for i in range(100):
        result = relabeler.apply({"i": str(i)})
        assert (result is None) == str(i).startswith("1")
    assert len(relabeler._memo) == 10
    assert relabeler.apply({"i": "99"}) == {"i": "99"} and relabeler.apply({"i": "15"}) is None


def test_no_rules_is_identity_copy():
    labels = {"a": "1"}
    out = Relabeler([]).apply(labels)
    assert out == labels and out is not labels


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("config", "message"), [
    ({"action": "replace"}, "replace action requires 'target_label'"),  # relabel_test.go
    ({"action": "lowercase"}, "lowercase action requires 'target_label'"),  # relabel_test.go
    ({"action": "lowercase", "target_label": "${3}"}, "'target_label' is not a valid label name"),  # relabel_test.go
    ({"source_labels": ["a"], "target_label": "0${3}"}, "'target_label' is invalid for the replace action"),  # relabel_test.go
    ({"source_labels": ["a"], "target_label": "-${3}"}, "'target_label' is invalid for the replace action"),  # relabel_test.go
    ({"target_label": "1abc"}, "'target_label' is not a valid label name"),
    ({"action": "hashmod", "target_label": "x"}, "hashmod requires a non-zero 'modulus'"),
    ({"action": "hashmod", "target_label": "x", "modulus": 0}, "hashmod requires a non-zero 'modulus'"),
    ({"action": "hashmod", "modulus": 2}, "hashmod action requires 'target_label'"),
    ({"action": "hashmod", "modulus": 2, "target_label": "${1}"}, "'target_label' is not a valid label name"),
    ({"action": "uppercase", "target_label": "x", "replacement": "y"}, "'replacement' can not be set for uppercase"),
    ({"action": "labelmap", "replacement": "-$1"}, "'replacement' is invalid for the labelmap action"),
    ({"action": "keepequal", "target_label": "x", "regex": "(.*)"}, "keepequal action requires only 'source_labels'"),
    ({"action": "dropequal", "target_label": "x", "separator": ","}, "dropequal action requires only 'source_labels'"),
    ({"action": "labeldrop", "regex": "a", "source_labels": ["a"]}, "labeldrop action requires only 'regex'"),
    ({"action": "labelkeep", "regex": "a", "target_label": "b"}, "labelkeep action requires only 'regex'"),
    ({"action": "labelkeep", "modulus": 3}, "labelkeep action requires only 'regex'"),
    ({"source_labels": ["a-b"], "target_label": "x"}, "source_labels[0] is not a valid label name"),
    ({"regex": "(a", "target_label": "x"}, "regex is not a valid RE2 regular expression: missing closing )"),
    ({"action": "nope", "target_label": "x"}, "action"),
    ({"action": "hashmod", "target_label": "x", "modulus": 2**64}, "modulus"),
    ({"target_label": "x", "unknown": 1}, "extra"),
])
def test_invalid_configs(config, message):
    with pytest.raises(ValidationError) as e:
        RelabelConfig.model_validate(config)
    assert message.lower() in str(e.value).lower()


@pytest.mark.parametrize("config", [
    {"source_labels": ["a"], "regex": "some-([^-]+)-([^,]+)", "replacement": "${1}", "target_label": "${3}"},  # relabel_test.go
    {"action": "Replace", "target_label": "x"},  # Prometheus lower-cases the action
    {"action": "KEEP"},
    {"action": "labeldrop", "regex": "tmp_.*", "modulus": 0, "separator": ";", "replacement": "$1"},
    {"action": "keepequal", "source_labels": ["a"], "target_label": "b"},
    {"action": "drop", "target_label": "ignored", "modulus": 5},
    {"action": "labelmap", "regex": "__meta_(.+)", "replacement": "${1}_copy"},
])
def test_valid_configs(config):
    RelabelConfig.model_validate(config)


@pytest.mark.parametrize(("target", "valid"), [  # relabel_test.go TestTargetLabelValidity
    ("-label", False), ("label", True), ("label${1}", True), ("${1}label", True), ("${1}", True), ("${", False),
    ("$", False), ("${}", False), ("foo${", False), ("$1", True), ("asd$2asd", True), ("-foo${1}bar-", False),
    ("_${1}_", True), ("foo${bar}foo", True),
])
def test_target_label_validity(target, valid):
    config = {"source_labels": ["a"], "target_label": target}
    if valid:
        RelabelConfig.model_validate(config)
    else:
        with pytest.raises(ValidationError):
            RelabelConfig.model_validate(config)


def test_config_is_frozen():
    c = cfg(target_label="x")
    with pytest.raises(ValidationError):
        c.target_label = "y"  # type: ignore[misc]
    assert (c.action, c.regex, c.separator, c.replacement, c.source_labels, c.modulus) == ("replace", "(.*)", ";", "$1", [], None)


# ---------------------------------------------------------------------------- Go regex syntax


@pytest.mark.parametrize(("regex", "value", "matches"), [
    ("abc", "abc\n", False),  # Go's $ is the end of the text; Python's $ also matches before a final "\n"
    ("abc$", "abc\n", False),
    ("(?m)abc$\n", "abc\n", True),
    ("a.c", "a\nc", False),
    ("(?s)a.c", "a\nc", True),
    (r"\d", "\u0663", False),  # \d, \w, \s are ASCII in RE2
    (r"\w+", "é", False),
    (r"\s", "\u00a0", False),
    (r"\s", "\v", False),
    (r"\pN", "\u0663", True),
    (r"\p{Lu}+", "ÀB", True),
    (r"\PL", "1", True),
    (r"\p{^L}", "a", False),
    ("a{,3}", "a{,3}", True),  # not a repetition in Go: literal text
    ("a{,3}", "aa", False),
    ("a{01}", "a{01}", True),
    ("a{2}", "aa", True),
    ("a{2,}", "aaaa", True),
    ("a{1,2}", "aaa", False),
    (r"[[:alpha:]]+", "abcXYZ", True),
    (r"[[:^digit:]]", "5", False),
    (r"[[:word:]]+", "a_1", True),
    (r"\Qa.b*\E", "a.b*", True),
    (r"\Qa.b*\E", "axbbb", False),
    (r"\x{263a}", "\u263a", True),
    (r"\101\0", "A\x00", True),
    ("(?i)abc", "AbC", True),
    ("a(?i)bc|d", "aBC", True),
    ("a(?i)bc|d", "D", True),  # the flag holds for the rest of the group, later alternatives included
    ("(?i:a)b", "AB", False),
    ("(?i)a(?-i)b", "Ab", True),
    ("(?i)a(?-i)b", "AB", False),
    (r"\bfoo\b", "foo", True),
    (r"x\Bfoo", "xfoo", True),
    (r"\Aab\z", "ab", True),
    ("[]a]+", "]a]", True),
    ("[^]a]", "]", False),
    ("[a-]+", "a-a", True),
    (r"[\d\s]+", "1 2", True),
    (r"[^\D]", "7", True),
    (".", "\u263a", True),
    ("", "", True),
    ("a|", "", True),
    ("(?P<1x>a)", "a", True),
    ("(?)a", "a", True),
])
def test_go_regex_semantics(regex, value, matches):
    assert (compile_go_regex(regex).fullmatch(value) is not None) is matches


@pytest.mark.parametrize(("regex", "message"), [
    (r"(a)\1", "backreferences"),
    ("(?=a)", "invalid or unsupported Perl syntax"),
    ("(?<=a)b", "invalid or unsupported Perl syntax"),
    ("(?<name>a)", "invalid or unsupported Perl syntax"),  # Go 1.19/1.20 know only (?P<name>
    ("(?P=name)", "invalid or unsupported Perl syntax"),
    ("(?P<a-b>x)", "invalid named capture"),
    ("a**", "invalid nested repetition operator"),
    ("a*+", "invalid nested repetition operator"),  # possessive in Python 3.11, an error in RE2
    ("a{2}{3}", "invalid nested repetition operator"),
    ("*a", "missing argument to repetition operator"),
    ("a|*", "missing argument to repetition operator"),
    ("a{1001}", "invalid repeat count"),
    ("a{3,2}", "invalid repeat count"),
    ("(a", "missing closing )"),
    ("a)", "unexpected )"),
    ("[a", "missing closing ]"),
    ("[z-a]", "invalid character class range"),
    ("[[:nope:]]", "invalid character class range"),
    (r"\Z", "invalid escape sequence"),
    (r"\C", "invalid escape sequence"),
    (r"\y", "invalid escape sequence"),
    (r"\x{110000}", "invalid escape sequence"),
    ("(?i-)a", "invalid or unsupported Perl syntax"),
    ("(?x)a", "invalid or unsupported Perl syntax"),
    ("\\", "trailing backslash"),
    (r"\p{Greek}", "not supported"),
])
def test_go_regex_errors(regex, message):
    with pytest.raises(GoRegexError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_go_regex(regex)


def test_ungreedy_flag_swaps_greediness():
    m = compile_go_regex("(?U)(a+)(a*)").fullmatch("aaa")
    assert m is not None and m.group(1) == "a" and m.group(2) == "aa"
    m = compile_go_regex("(?U)(a+?)(a*)").fullmatch("aaa")
    assert m is not None and m.group(1) == "aaa"


# ---------------------------------------------------------------------------- Regexp.Expand


@pytest.mark.parametrize(("template", "expected"), [
    ("$1", "xx"),
    ("${1}", "xx"),
    ("$1W", ""),  # Go docs: "$1W" is the group named "1W", which does not exist
    ("${1}W", "xxW"),
    ("$$", "$"),
    ("$$1", "$1"),
    ("$", "$"),
    ("${", "${"),
    ("${1", "${1"),
    ("$}", "$}"),
    ("$-", "$-"),
    ("$2", ""),  # no such group
    ("$0", "axxb"),
    ("$01", ""),  # a leading zero makes it a name, not a number
    ("$name", ""),
    ("a$1.$1b", "axx."),  # "." ends the name, "b" does not: "$1b" is the group named "1b"
    ("${1}$1", "xxxx"),
])
def test_go_expand(template, expected):
    regex = compile_go_regex("a(x*)b")
    assert go_expand(template, regex, regex.fullmatch("axxb")) == expected


def test_go_expand_named_groups():
    regex = compile_go_regex("a(?P<1W>x*)b(?P<rest>.*)")
    m = regex.fullmatch("axxbyz")
    assert go_expand("$1W", regex, m) == "xx"  # Go docs: with a group named "1W"
    assert go_expand("${rest}-$rest-$restx", regex, m) == "yz-yz-"
    # A group that did not take part in the match expands to "".
    regex = compile_go_regex("(?P<a>x)|(?P<b>y)")
    assert go_expand("[$a][$b]", regex, regex.fullmatch("y")) == "[][y]"
    # Of two groups with one name, the first that matched is used.
    regex = compile_go_regex("(?P<n>x)?(?P<n>y)")
    assert go_expand("$n", regex, regex.fullmatch("y")) == "y"
