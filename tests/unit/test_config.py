"""Config loading: substitution, typed plugin configs, errors that say where, secrets kept out."""

from __future__ import annotations

import json

import pytest

from bridge.config import ConfigError, default_config_text, load_config, parse_config, redact, substitute
from bridge.registry import PluginRegistry
from tests.unit.plugins_for_tests import SteadyCollector


@pytest.fixture
def registry():
    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.steady", SteadyCollector)
    return reg


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


def test_substitution_forms(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    env = {"A": "1", "EMPTY": ""}
    text = f"a: ${{A}}\nb: ${{env:A}}\nc: ${{MISSING:-dflt}}\nd: ${{EMPTY:-x}}\ne: $${{A}}\nf: ${{file:{secret}}}\n"
    assert substitute(text, "f", env) == "a: 1\nb: 1\nc: dflt\nd: x\ne: ${A}\nf: s3cr3t\n"


def test_unset_variable_names_line_and_variable(registry):
    with pytest.raises(ConfigError) as e:
        parse_config(GOOD, "agent.yaml", registry, env={})
    assert "agent.yaml" in str(e.value)
    assert "line 9: environment variable PASSWORD is not set" in str(e.value)


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


def test_comments_are_not_substituted():
    text = '# set ${TOKEN} first\na: ${A}  # from ${ALSO_UNSET}\nb: "x # ${A}"\nc: \'#${A}\'\n'
    assert substitute(text, "f", {"A": "1"}) == (
        '# set ${TOKEN} first\na: 1  # from ${ALSO_UNSET}\nb: "x # 1"\nc: \'#1\'\n')
