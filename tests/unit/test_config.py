"""Config loading: substitution, typed plugin configs, errors that say where, secrets kept out."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from bridge import CollectorConfig, config
from bridge.config import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_VALUES,
    ConfigError,
    default_config_text,
    load_config,
    parse_config,
    redact,
)
from bridge.registry import PluginRegistry
from tests.unit.plugins_for_tests import SteadyCollector

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "config"


class EchoConfig(CollectorConfig):
    values: dict[str, Any] = {}
    port: int = 0
    flag: bool = False


class EchoCollector(SteadyCollector):
    """A collector whose config keeps whatever it is given under ``values``."""

    config_model: ClassVar[type[CollectorConfig]] = EchoConfig
    plugin_id = "monitoring.metrics.echo"


#: The keys of the ``server`` section, as an "expected one of" list names them.
SERVER_KEYS = "listen, tls, auth, allowed_hosts, allowed_origins, unauthenticated_writes_from, read_timeout, route_prefix"


@pytest.fixture
def registry():
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    reg.register_plugin("monitoring.metrics.echo", EchoCollector)
    return reg


def echo(registry, body: str, env: dict[str, str] | None = None) -> EchoConfig:
    """The echo plugin's validated config, from ``body`` indented under its ``config:``."""
    text = "plugins:\n  - plugin_id: monitoring.metrics.echo\n    config:\n" + "".join(
        f"      {line}\n" for line in body.splitlines())
    return parse_config(text, "agent.yaml", registry, env=env or {}).plugin_configs["monitoring.metrics.echo"]


def errors(registry, text: str | bytes, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "agent.yaml", registry, env=env or {})
    assert str(e.value).startswith("invalid config agent.yaml:\n")
    return e.value.issues


GOOD = """\
server:
  listen: "127.0.0.1:9464"
plugins:
  - plugin_id: monitoring.metrics.steady
    enabled: true
    config:
      collection_interval: 15
      value: ${VALUE:-3.5}
      password: ${PASSWORD}
"""


def test_good_config_with_substitution(registry):
    loaded = parse_config(GOOD, "agent.yaml", registry, env={"PASSWORD": "hunter2-secret"})
    cfg = loaded.plugin_configs["monitoring.metrics.steady"]
    assert cfg.value == 3.5 and cfg.collection_interval == 15
    assert cfg.password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(cfg) and "hunter2" not in json.dumps(redact(cfg))
    assert redact(cfg)["password"] == "<secret>"


def test_json_is_accepted(registry, tmp_path):
    f = tmp_path / "agent.json"
    f.write_text(json.dumps({"plugins": [{"plugin_id": "monitoring.metrics.steady", "config": {"value": 2}}]}))
    loaded = load_config(f, registry)
    assert loaded.plugin_configs["monitoring.metrics.steady"].value == 2
    assert loaded.model.server.listen == "127.0.0.1:9464"


def test_substitution_forms(registry, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    env = {"A": "1", "EMPTY": ""}
    body = (f"values:\n  a: ${{A}}\n  b: ${{env:A}}\n  c: ${{MISSING:-dflt}}\n  d: ${{EMPTY:-x}}\n  e: $${{A}}\n"
            f"  f: ${{file:{secret}}}\n  g: 'x-${{A}}-$$-${{A}}'")
    assert echo(registry, body, env).values == {"a": "1", "b": "1", "c": "dflt", "d": "x", "e": "${A}",
                                                "f": "s3cr3t", "g": "x-1-$-1"}


@pytest.mark.parametrize("secret", ["*alias", "!tag", "&anchor x", "a #comment", "line1\nkey: added", "[1, 2",
                                    "{a: b}", "'quoted\"", "${A}", "- item", "? x", "--- x", "|\n  block", "%YAML 1.2"])
def test_substituted_values_are_strings_never_parsed(registry, secret):
    """A variable's value is one string, whatever YAML it looks like: not echoed, not truncated,
    never a key, an alias, a tag, a comment or a second variable."""
    cfg = echo(registry, "values:\n  token: ${SECRET}\n  quoted: \"${SECRET}\"\n  mixed: 'Bearer ${SECRET}'",
               {"SECRET": secret, "A": "not this"})
    assert cfg.values == {"token": secret, "quoted": secret, "mixed": f"Bearer {secret}"}


def test_substituted_secret_keeps_its_line_and_is_never_echoed(registry):
    text = GOOD.replace("value: ${VALUE:-3.5}", "value: ${PASSWORD}")
    for secret in ("*a #b", "line1\nvalue: 2", "!!float x"):
        msgs = errors(registry, text, {"PASSWORD": secret})
        assert msgs == ["line 8: plugins[0].config.value: input should be a valid number, unable to parse string as a number"]


def test_substituted_values_are_coerced_by_typed_fields(registry):
    cfg = echo(registry, "port: ${PORT}\nflag: ${FLAG}\nvalues: {port: '${PORT}'}", {"PORT": "9464", "FLAG": "true"})
    assert cfg.port == 9464 and cfg.flag is True
    assert cfg.values == {"port": "9464"}  # a field of any type keeps the string


def test_unquoted_variable_in_flow_mapping_gets_a_hint(registry):
    msgs = errors(registry, "server: {listen: ${LISTEN}}\n", {"LISTEN": "127.0.0.1:1"})
    assert msgs == ["line 1, column 19: not valid YAML/JSON: did not find expected ',' or '}' (inside {...} or "
                    "[...], quote a value holding ${...}: '${VAR}')"]
    assert parse_config("server: {listen: '${LISTEN}'}\n", "a.yaml", registry,
                        env={"LISTEN": "127.0.0.1:1"}).model.server.listen == "127.0.0.1:1"


def test_keys_and_comments_are_not_substituted(registry):
    body = "# set ${TOKEN} first\nvalues:\n  ${A}: ${A}  # from ${ALSO_UNSET}\n  b: \"x # ${A}\"\n  c: '#${A}'"
    assert echo(registry, body, {"A": "1"}).values == {"${A}": "1", "b": "x # 1", "c": "#1"}


def test_bad_references_are_located_and_clipped(registry):
    assert errors(registry, "server:\n  listen: 'a ${B'\n") == [
        "line 2: server.listen: ${ without its closing } (write $$ for a literal $)"]
    assert errors(registry, "server:\n  listen: '${" + "x y" * 100 + "}'\n") == [
        "line 2: server.listen: ${" + ("x y" * 20)[:60] + "...}: expected ${NAME}, ${NAME:-default}, ${env:NAME} or "
        "${file:/path} (write $$ for a literal $)"]


def test_file_substitution_refuses_what_is_not_a_regular_file(registry, tmp_path):
    msgs = errors(registry, f"server: {{listen: '${{file:{tmp_path}}}'}}\n")
    assert msgs == [f"line 1: server.listen: ${{file:{tmp_path}}}: not a regular file"]
    msgs = errors(registry, f"server: {{listen: '${{file:{tmp_path / 'nope'}}}'}}\n")
    assert msgs == [f"line 1: server.listen: ${{file:{tmp_path / 'nope'}}}: cannot read: No such file or directory"]


def test_a_fifo_is_refused_as_config_file_and_as_file_substitution_without_blocking(registry, tmp_path):
    import os

    from bridge.config import load_config

    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # no writer ever comes: opening it to read would block
    with pytest.raises(ConfigError, match="cannot read the file: not a regular file"):
        load_config(fifo, registry)
    msgs = errors(registry, f"server: {{listen: '${{file:{fifo}}}'}}\n")
    assert msgs == [f"line 1: server.listen: ${{file:{fifo}}}: not a regular file"]


def test_unset_variable_names_line_and_variable(registry):
    with pytest.raises(ConfigError) as e:
        parse_config(GOOD, "agent.yaml", registry, env={})
    assert "agent.yaml" in str(e.value)
    assert "line 9: plugins[0].config.password: environment variable PASSWORD is not set" in str(e.value)


def test_errors_name_file_line_path_and_expectation_never_the_value(registry):
    bad = GOOD.replace("collection_interval: 15", "collection_interval: -1\n      colour: blue")
    with pytest.raises(ConfigError) as e:
        parse_config(bad, "agent.yaml", registry, env={"PASSWORD": "hunter2-secret"})
    msg = str(e.value)
    assert "invalid config agent.yaml" in msg
    assert "line 7: plugins[0].config.collection_interval: input should be greater than 0" in msg
    assert "line 8: plugins[0].config.colour: unknown key (expected one of:" in msg
    assert "hunter2" not in msg


def test_secret_with_wrong_type_is_not_echoed(registry):
    bad = GOOD.replace("value: ${VALUE:-3.5}", "value: ${PASSWORD}")
    with pytest.raises(ConfigError) as e:
        parse_config(bad, "agent.yaml", registry, env={"PASSWORD": "hunter2-secret"})
    assert "plugins[0].config.value" in str(e.value) and "hunter2" not in str(e.value)


def test_unknown_plugin_lists_installed(registry):
    with pytest.raises(ConfigError) as e:
        parse_config("plugins:\n  - plugin_id: monitoring.metrics.nope\n", "a.yaml", registry, env={})
    msg = str(e.value)
    assert "line 2: plugins[0].plugin_id: plugin 'monitoring.metrics.nope' not found" in msg
    assert "monitoring.metrics.system" in msg and "monitoring.metrics.steady" in msg


def test_top_level_and_server_errors(registry):
    with pytest.raises(ConfigError, match=r"line 1: servre: unknown key"):
        parse_config("servre: {}\n", "a.yaml", registry, env={})
    with pytest.raises(ConfigError, match=r"line 2: server.listen: value error, expected HOST:PORT"):
        parse_config("server:\n  listen: localhost\n", "a.yaml", registry, env={})
    with pytest.raises(ConfigError, match=r"line 2, column 1: not valid YAML/JSON"):
        parse_config("plugins: [\n", "a.yaml", registry, env={})


def test_unauthenticated_networks_are_ipv4_or_ipv6_networks(registry):
    from ipaddress import IPv4Network, IPv6Network

    loaded = parse_config("server:\n  unauthenticated_writes_from: [10.0.0.0/8, 'fd00::/8', 192.0.2.7]\n",
                          "a.yaml", registry, env={})
    assert loaded.model.server.unauthenticated_writes_from == [
        IPv4Network("10.0.0.0/8"), IPv6Network("fd00::/8"), IPv4Network("192.0.2.7/32")]
    assert parse_config("{}", "a.yaml", registry, env={}).model.server.unauthenticated_writes_from == [
        IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]
    # host bits set, not a network, not a string: each at its line, the value never quoted
    issues = errors(registry, "server:\n  unauthenticated_writes_from:\n    - 10.0.0.1/8\n    - nonsense\n"
                              "    - {a: 1}\n")
    assert issues == [f"line {n}: server.unauthenticated_writes_from[{i}]: value is not a valid IPv4 or IPv6 network"
                      for i, n in enumerate((3, 4, 5))]


def test_list_defaults_are_not_shared(registry):
    one, two = (parse_config("{}", "a.yaml", registry, env={}).model for _ in range(2))
    assert one.server.allowed_hosts == [] and one.plugins == []
    one.server.allowed_hosts.append("example.org")
    assert two.server.allowed_hosts == []


def test_duplicate_plugin_is_an_error(registry):
    text = "plugins:\n  - plugin_id: monitoring.metrics.steady\n  - plugin_id: monitoring.metrics.steady\n"
    with pytest.raises(ConfigError, match=r"plugins\[1\].plugin_id: 'monitoring.metrics.steady' is already configured"):
        parse_config(text, "a.yaml", registry, env={})


def test_missing_file(registry, tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_config(tmp_path / "nope.yaml", registry)


def test_default_config(registry):
    loaded = load_config(None, registry, env={})
    assert [p.plugin_id for p in loaded.enabled_plugins] == ["monitoring.metrics.system"]
    assert loaded.model.server.listen == "127.0.0.1:9464"
    text = default_config_text({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert "monitoring.integration.otlp" in text
    assert "monitoring.integration.otlp" in default_config_text({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "x"})




# ---------------------------------------------------------------------------- hostile documents


@pytest.mark.parametrize("text,expected", [
    ("plugins:\n  - plugin_id: monitoring.metrics.echo\n    config:\n      ? [a, b]\n      : 1\n",
     "line 4: plugins[0].config: a mapping key must be a string, not a list"),
    ("? {a: 1}\n: x\n", "line 1: (top level): a mapping key must be a string, not a mapping"),
    ("server:\n  listen: !!float ''\n", "line 2: server.listen: not a valid !!float value"),
    ("server:\n  listen: !!int x\n", "line 2: server.listen: not a valid !!int value"),
    ("server:\n  listen: !!binary aGk=\n", "line 2: server.listen: unsupported tag !!binary (a config's scalars "
                                           "are strings, numbers, booleans and null)"),
    ("server:\n  listen: !secret x\n", "line 2: server.listen: unsupported tag !secret (a config's scalars "
                                       "are strings, numbers, booleans and null)"),
    ("server: !!set {a}\n", "line 1: server: unsupported tag tag:yaml.org,2002:set (a config is mappings, "
                            "lists and scalars)"),
    ("pipeline:\n  cardinality_limit: " + "1" * 5000 + "\n",
     "line 2: pipeline.cardinality_limit: !!int value longer than 100 characters"),
    ("pipeline:\n  cardinality_limit: 1" + ":00" * 1000 + "\n",
     "line 2: pipeline.cardinality_limit: !!int value longer than 100 characters"),
    ("a: &a [*a]\n", "line 1: a[0]: alias *a does not name an anchor (&a) completed before it"),
    ("server: *nowhere\n", "line 1: server: alias *nowhere does not name an anchor (&nowhere) completed before it"),
    ("{}\n--- {}\n", "line 2: a second YAML document (a config is one document)"),
    ("server: {}\nplugins: []\nserver: {}\n", "line 3: server: key already set at line 1"),
    ("server:\n  listen: '127.0.0.1:1'\n  <<: 3\n", "line 3: server: a << merge key takes a mapping or a list "
                                                  "of mappings"),
    ("server: {listen: \x00}\n", "line 1: not valid YAML/JSON: control characters are not allowed"),
    (b"# \xe9t\xe9\nserver: {}\n", "line 1: not valid UTF-8"),
    ("", "line 1: the config is empty (expected a mapping with keys server, pipeline, plugins, alerting, packages, "
         "dashboard)"),
    ("# nothing but a comment\n\n", "line 1: the config is empty (expected a mapping with keys server, pipeline, "
                                    "plugins, alerting, packages, dashboard)"),
    ("~\n", "line 1: the config is empty (expected a mapping with keys server, pipeline, plugins, alerting, packages, "
            "dashboard)"),
    ("- a\n", "line 1: (top level): expected a mapping with keys server, pipeline, plugins, alerting, packages, dashboard"),
])
def test_every_document_problem_is_a_located_config_error(registry, text, expected, monkeypatch):
    assert errors(registry, text) == [expected]
    # Without libyaml, PyYAML's own parser says the same (its syntax messages word a few things otherwise).
    monkeypatch.setattr(config, "_LOADER", yaml.SafeLoader)
    [pure] = errors(registry, text)
    assert pure == expected or (pure.split(":")[0] == expected.split(":")[0] and "not valid YAML/JSON" in pure)


def test_fuzz_corpus_inputs_are_located_config_errors(registry):
    found = {p.name: errors(registry, p.read_bytes()) for p in sorted(CORPUS.iterdir())}
    assert found["complex-key.yaml"] == ["line 4: plugins[0].config: a mapping key must be a string, not a list"]
    assert found["float-empty-tag.yaml"] == ["line 2: server.listen: not a valid !!float value"]
    assert found["recursive-alias.yaml"] == ["line 1: a[0]: alias *a does not name an anchor (&a) completed before it"]
    assert found["unclosed-references.yaml"] == ["line 2: server.listen: ${ without its closing } (write $$ for a "
                                                 "literal $)"]
    assert found["unclosed-flow.yaml"] == ["line 2, column 1: not valid YAML/JSON: did not find expected node content"]
    assert found["alias-bomb.yaml"] == [f"line 5: e[0]: the config holds more than {MAX_VALUES} values (*d repeats "
                                        "7381), aliases counted as the values they repeat"]


def test_alias_bomb_is_refused_before_it_expands(registry):
    """The classic billion laughs (9 levels of 9 aliases: 387 million strings from 342 bytes)."""
    bomb = (CORPUS / "alias-bomb.yaml").read_bytes()
    assert len(bomb) < 500
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="aliases counted as the values they repeat"):
        parse_config(bomb, "bomb.yaml", registry, env={})
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # KiB: no expansion happened


def test_aliases_and_merge_keys_within_bounds_work(registry):
    text = """\
x-auth: &auth {username: u, password: '${PW}'}
x-base: &base {listen: "127.0.0.1:1"}
"""
    # Anchors defined under an unknown key are still an unknown key; within a section they work:
    body = """\
values:
  defaults: &d {a: 1, b: 2}
  other: &o {b: 3, c: 4}
  merged:
    <<: [*d, *o]
    c: 5
  copy: *d
"""
    cfg = echo(registry, body)
    assert cfg.values["merged"] == {"a": 1, "b": 2, "c": 5}  # explicit keys win, then the earliest mapping
    assert cfg.values["copy"] == {"a": 1, "b": 2} and cfg.values["copy"] is not cfg.values["defaults"]
    assert errors(registry, text + "server: *base\n", {"PW": "x"})[0].startswith("line 1: x-auth: unknown key")


def test_size_depth_and_count_bounds(registry, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match=f"the config is larger than {MAX_CONFIG_BYTES} bytes"):
        load_config(big, registry, env={})
    deep = "values: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(ConfigError, match=f"nested more than {MAX_DEPTH} levels deep"):
        echo(registry, deep)
    echo(registry, "values: {a: " + "[" * (MAX_DEPTH - 6) + "]" * (MAX_DEPTH - 6) + "}")
    with pytest.raises(ConfigError, match=f"holds more than {MAX_VALUES} values"):
        echo(registry, "values: {a: [" + "1," * MAX_VALUES + "]}")


def test_load_config_reads_the_file_as_utf8_bytes(registry, tmp_path):
    f = tmp_path / "agent.yaml"
    f.write_bytes("\ufeff# café\nserver: {listen: '127.0.0.1:9'}\n".encode())
    assert load_config(f, registry, env={}).model.server.listen == "127.0.0.1:9"
    f.write_bytes(b"server:\n  listen: '\xff'\n")
    with pytest.raises(ConfigError, match="line 2: not valid UTF-8"):
        load_config(f, registry, env={})


# ---------------------------------------------------------------------------- reporting every problem


def test_every_problem_is_reported_sorted_by_line_with_the_keys_of_its_depth(registry):
    text = """\
servre: {}
server:
  listn: "127.0.0.1:1"
  auth:
    basic: {usernam: u, password: p}
pipeline: {cardinality_limt: 3}
plugins:
  - plugin_id: monitoring.metrics.steady
    config:
      valeu: 2
      collection_interval: -1
  - plugin_id: monitoring.metrics.nope
  - plugin_id: monitoring.metrics.echo
    config: {port: many}
  - plugin_id: monitoring.metrics.steady
"""
    assert errors(registry, text) == [
        "line 1: servre: unknown key, did you mean 'server'? (expected one of: server, pipeline, plugins, alerting, packages, "
        "dashboard)",
        f"line 3: server.listn: unknown key, did you mean 'listen'? (expected one of: {SERVER_KEYS})",
        "line 5: server.auth.basic.username: required key is missing",
        "line 5: server.auth.basic.usernam: unknown key, did you mean 'username'? (expected one of: username, password)",
        "line 6: pipeline.cardinality_limt: unknown key, did you mean 'cardinality_limit'? (expected one of: "
        "cardinality_limit)",
        "line 10: plugins[0].config.valeu: unknown key, did you mean 'value'? (expected one of: collection_interval, "
        "timeout, value, password)",
        "line 11: plugins[0].config.collection_interval: input should be greater than 0",
        "line 12: plugins[1].plugin_id: " + errors(registry, "plugins: [{plugin_id: monitoring.metrics.nope}]")[0]
        .split("plugin_id: ", 1)[1],
        "line 14: plugins[2].config.port: input should be a valid integer, unable to parse string as an integer",
        "line 15: plugins[3].plugin_id: 'monitoring.metrics.steady' is already configured at plugins[0]",
    ]


def test_unknown_key_without_a_near_miss_lists_the_keys_without_a_guess(registry):
    assert errors(registry, "server: {zzz: 1}\n") == [f"line 1: server.zzz: unknown key (expected one of: {SERVER_KEYS})"]


def test_an_unset_variable_is_reported_once(registry):
    text = "server:\n  listen: ${LISTEN}\npipeline:\n  cardinality_limit: ${LIMIT}\n"
    assert errors(registry, text) == [
        "line 2: server.listen: environment variable LISTEN is not set (use ${LISTEN:-default} to give a default)",
        "line 4: pipeline.cardinality_limit: environment variable LIMIT is not set (use ${LIMIT:-default} to give a "
        "default)",
    ]


def test_a_flood_of_problems_lists_the_first_ones_by_line_and_counts_the_rest(registry):
    text = "server:\n" + "".join(f"  k{i}: 1\n" for i in range(250))
    msgs = errors(registry, text)
    assert len(msgs) == 201 and msgs[-1] == "... and 50 more problems"
    assert msgs[0] == f"line 2: server.k0: unknown key (expected one of: {SERVER_KEYS})"
    assert msgs[199] == f"line 201: server.k199: unknown key (expected one of: {SERVER_KEYS})"
