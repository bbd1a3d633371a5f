"""Configuration: one YAML or JSON file, variable substitution, typed models, errors that say where.

``${VAR}``, ``${VAR:-default}``, ``${env:VAR}`` and ``${file:/path}`` (a Kubernetes secret
mount, say) are substituted before parsing, as the OpenTelemetry Collector does; ``$$`` is a
literal ``$``. Each plugin's ``config`` is validated against its plugin's model. Every error
names the file, the line, the path inside it (``plugins[1].config.interval``) and what was
expected, and never the offending value: it may be a secret.
"""

from __future__ import annotations

import functools
import json
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator

from bridge.alerting.settings import AlertingSettings
from bridge.api import PluginType
from bridge.registry import PluginNotFoundError, PluginRegistry

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "MonbridgeConfig",
    "PluginEntry",
    "ServerConfig",
    "default_config_text",
    "load_config",
    "parse_config",
    "redact",
]

DEFAULT_SOURCE = "<embedded default config>"


class ConfigError(Exception):
    """An invalid config; ``issues`` are ``(path, message)`` pairs, already located."""

    def __init__(self, source: str, issues: list[str]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  {i}" for i in issues))


# ---------------------------------------------------------------------------- models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TLSConfig(_Strict):
    cert_file: Path = Field(description="PEM certificate chain")
    key_file: Path = Field(description="PEM private key")


class BasicAuthConfig(_Strict):
    username: str
    password: SecretStr = Field(description="the password (use ${file:...} or ${VAR})")


class AuthConfig(_Strict):
    basic: BasicAuthConfig | None = None
    bearer_token: SecretStr | None = None


_LOOPBACK: list[IPv4Network | IPv6Network] = [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]


class ServerConfig(_Strict):
    listen: str = Field("127.0.0.1:9464", description="HOST:PORT of the HTTP server (/metrics, /-/ready, /api/v1)")
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    allowed_hosts: list[str] = Field(default_factory=list, description=(
        "more host names state-changing requests may address in their Host header (DNS-rebinding "
        "protection), e.g. a Service's or proxy's name; '*.example.org' admits subdomains, ports are not "
        "compared. Always allowed: localhost, IP addresses, the listen host and, listening on all "
        "interfaces, this machine's host name"))
    allowed_origins: list[str] = Field(default_factory=list, description=(
        "origins (scheme://host[:port]) of other web pages that may send state-changing requests; "
        "pages served by monbridge itself (same origin) always may"))
    unauthenticated_writes_from: list[IPvAnyNetwork] = Field(
        default_factory=lambda: list(_LOOPBACK),
        description=("networks whose clients may send state-changing requests (reload, the alert write API) "
                     "without credentials when server.auth is not set; others are refused"))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for i, origin in enumerate(v):
            u = urllib.parse.urlsplit(origin)
            if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query:
                raise ValueError(f"[{i}]: expected an origin, scheme://host[:port], e.g. https://grafana.example.org")
        return v


class PipelineConfig(_Strict):
    cardinality_limit: int = Field(10_000, ge=1, description="most series per metric; more are dropped and counted")


class PluginEntry(_Strict):
    plugin_id: str
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)


class MonbridgeConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)  # type: ignore[arg-type]
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)  # type: ignore[arg-type]
    plugins: list[PluginEntry] = Field(default_factory=list)
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)


def parse_listen(v: str) -> tuple[str, int]:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class LoadedConfig:
    """A validated config: the model, each enabled plugin's validated config, where it came from."""

    source: str
    model: MonbridgeConfig
    plugin_configs: dict[str, Any] = field(default_factory=dict)  # plugin_id -> validated config model
    raw_plugin_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def enabled_plugins(self) -> list[PluginEntry]:
        return [p for p in self.model.plugins if p.enabled]


# ---------------------------------------------------------------------------- substitution

_VAR = re.compile(r"\$\$|\$\{([^}]*)\}")


def _comment_start(line: str) -> int | None:
    """Where a YAML comment starts in ``line`` (a ``#`` at the start or after white space,
    outside quotes), or None."""
    quote = ""
    prev = " "
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and not (quote == '"' and prev == "\\"):
                quote = ""
        elif ch in "\"'" and (prev in " \t[{:,-" or i == 0):
            quote = ch
        elif ch == "#" and prev in " \t":
            return i
        prev = ch
    return None


def substitute(text: str, source: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    issues: list[str] = []

    def repl(m: re.Match[str], offset: int) -> str:
        if m.group(0) == "$$":
            return "$"
        expr = m.group(1)
        line = text.count("\n", 0, offset) + 1
        if expr.startswith("file:"):
            path = expr[5:]
            try:
                return Path(path).read_text().rstrip("\n")
            except OSError as e:
                issues.append(f"line {line}: ${{file:{path}}}: cannot read: {e.strerror}")
                return ""
        if expr.startswith("env:"):
            expr = expr[4:]
        name, sep, default = expr.partition(":-")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            issues.append(f"line {line}: ${{{expr}}}: expected ${{NAME}}, ${{NAME:-default}}, ${{env:NAME}} "
                          "or ${file:/path} (write $$ for a literal $)")
            return ""
        val = env.get(name)
        if val is None or (sep and val == ""):
            if sep:
                return default
            issues.append(f"line {line}: environment variable {name} is not set (use ${{{name}:-default}} "
                          "to give a default)")
            return ""
        return val

    # Comments are left as they are: a ``${VAR}`` in a comment is documentation, not a reference.
    offset = 0
    parts = []
    for line in text.splitlines(keepends=True):
        cut = _comment_start(line)
        code = line[:cut] if cut is not None else line
        parts.append(_VAR.sub(functools.partial(repl, offset=offset), code))
        if cut is not None:
            parts.append(line[cut:])
        offset += len(line)
    out = "".join(parts)
    if issues:
        raise ConfigError(source, issues)
    return out


# ---------------------------------------------------------------------------- locating errors


def _line_map(text: str) -> dict[tuple[Any, ...], int]:
    """Line numbers (1-based) of every node of a YAML/JSON document, by path."""
    out: dict[tuple[Any, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                out[(*path, k.value)] = k.start_mark.line + 1
                walk(v, (*path, k.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, (*path, i))

    if root is not None:
        walk(root, ())
    return out


def format_path(path: tuple[Any, ...]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s or "(top level)"


def _describe(err: Mapping[str, Any]) -> str:
    t = err.get("type", "")
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid"))
    return msg[0].lower() + msg[1:] if msg else "invalid"


def _issues(e: ValidationError, prefix: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
            allowed: list[str] | None = None) -> list[str]:
    out = []
    for err in e.errors(include_url=False, include_input=False):
        path = (*prefix, *[p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))])
        line = None
        probe = path
        while probe and line is None:
            line = lines.get(probe)
            probe = probe[:-1]
        where = f"line {line}: " if line else ""
        msg = _describe(err)
        if err.get("type") == "extra_forbidden" and allowed:
            msg += f" (expected one of: {', '.join(allowed)})"
        out.append(f"{where}{format_path(path)}: {msg}")
    return out


# ---------------------------------------------------------------------------- loading


def default_config_text(env: Mapping[str, str] | None = None) -> str:
    """The embedded default: the system collector and /metrics on 127.0.0.1:9464, plus OTLP
    push when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set."""
    env = os.environ if env is None else env
    text = resources.files("bridge").joinpath("default-config.yaml").read_text()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        text += "  - plugin_id: monitoring.integration.otlp\n    enabled: true\n    config: {}\n"
    return text


def parse_config(text: str, source: str, registry: PluginRegistry, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Validate a config document (YAML or JSON text); raise ConfigError naming every problem."""
    text = substitute(text, source, env)
    lines = _line_map(text)
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML/JSON: {getattr(e, 'problem', None) or e}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping with keys server, pipeline, plugins"])
    try:
        model = MonbridgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _issues(e, (), lines, list(MonbridgeConfig.model_fields))) from None

    issues: list[str] = []
    loaded = LoadedConfig(source, model)
    seen: dict[str, int] = {}
    for i, entry in enumerate(model.plugins):
        where = f"line {lines.get(('plugins', i, 'plugin_id'), '?')}: plugins[{i}].plugin_id"
        if entry.plugin_id in seen:
            issues.append(f"{where}: {entry.plugin_id!r} is already configured at plugins[{seen[entry.plugin_id]}]")
            continue
        seen[entry.plugin_id] = i
        try:
            reg = registry.entry(entry.plugin_id)
            cls = reg.plugin_class()
        except PluginNotFoundError as e:
            issues.append(f"{where}: {e}")
            continue
        except Exception as e:  # an entry point that fails to import
            issues.append(f"{where}: plugin {entry.plugin_id!r} failed to load: {type(e).__name__}: {e}")
            continue
        try:
            loaded.plugin_configs[entry.plugin_id] = cls.config_model.model_validate(entry.config)
            loaded.raw_plugin_configs[entry.plugin_id] = entry.config
        except ValidationError as e:
            issues.extend(_issues(e, ("plugins", i, "config"), lines, list(cls.config_model.model_fields)))
    if issues:
        raise ConfigError(source, issues)
    return loaded


def load_config(path: str | os.PathLike[str] | None, registry: PluginRegistry,
                env: Mapping[str, str] | None = None) -> LoadedConfig:
    if path is None:
        return parse_config(default_config_text(env), DEFAULT_SOURCE, registry, env)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read the file: {e.strerror}"]) from None
    return parse_config(text, str(p), registry, env)


def redact(value: Any) -> Any:
    """A JSON-able copy of a config model or value with every secret replaced by ``"<secret>"``."""
    if isinstance(value, SecretStr):
        return "<secret>"
    if isinstance(value, BaseModel):
        return {k: redact(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, PluginType):
        return value.value
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.loads(json.dumps(value, default=str))
