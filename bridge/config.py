"""Configuration: one YAML or JSON file, variable substitution, typed models, errors that say where.

The document is parsed first; then, in every string value (not in keys, not in comments),
``${VAR}``, ``${VAR:-default}``, ``${env:VAR}`` and ``${file:/path}`` (a Kubernetes secret
mount, say) are replaced, and ``$$`` is a literal ``$``. What is substituted is a string and is
never parsed as YAML: a secret holding ``#``, ``*``, ``!``, ``&`` or a newline stays one value.
A typed field converts it as pydantic's lax mode does (``port: ${PORT}`` with ``PORT=9464`` is
the integer 9464, ``enabled: ${ON}`` takes true/false/1/0); a field that takes any type keeps
the string. Each plugin's ``config`` is validated against its plugin's model. The file is
bounded (``MAX_CONFIG_BYTES``, ``MAX_DEPTH``, ``MAX_VALUES``), every problem is reported,
sorted by line, each naming the file, the line, the path inside it
(``plugins[1].config.interval``) and what was expected, never the offending value: it may be a
secret. :class:`ConfigError` is the only error that loading raises.
"""

from __future__ import annotations

import collections.abc
import os
import re
import stat
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError
from yaml.constructor import SafeConstructor

from bridge.alerting.settings import AlertingSettings
from bridge.api import PluginType
from bridge.isolation import Grants, Isolation, Limits
from bridge.registry import PluginNotFoundError, PluginRegistry

if typing.TYPE_CHECKING:
    from bridge.package import VerifiedPackage

__all__ = [
    "ConfigError",
    "LoadedConfig",
    "MonbridgeConfig",
    "PluginEntry",
    "ServerConfig",
    "default_config_text",
    "line_map",
    "load_config",
    "locate",
    "parse_config",
    "read_document",
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
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class TLSConfig(_Strict):
    cert_file: Path = Field(description="PEM certificate chain")
    key_file: Path = Field(description="PEM private key")


class BasicAuthConfig(_Strict):
    username: str
    password: SecretStr = Field(description="the password (use ${file:...} or ${VAR})")


class AuthConfig(_Strict):
    basic: BasicAuthConfig | None = None
    bearer_token: SecretStr | None = None


def _ip_network(v: Any) -> IPv4Network | IPv6Network:
    """An IPv4 or IPv6 network (host bits clear), as pydantic's ``IPvAnyNetwork`` takes it, whose
    module (``pydantic.networks``) costs every config load an import of its own."""
    if isinstance(v, (IPv4Network, IPv6Network)):
        return v
    try:
        return ip_network(v)
    except (TypeError, ValueError):
        raise PydanticCustomError("ip_any_network", "value is not a valid IPv4 or IPv6 network") from None


IPNetwork = Annotated[IPv4Network | IPv6Network, PlainValidator(_ip_network)]

_LOOPBACK: list[IPv4Network | IPv6Network] = [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")]


class ServerConfig(_Strict):
    listen: str = Field("127.0.0.1:9464", description="HOST:PORT of the HTTP server (/metrics, /-/ready, /api/v1)")
    tls: TLSConfig | None = None
    auth: AuthConfig | None = None
    allowed_hosts: list[str] = Field(default=[], description=(
        "more host names state-changing requests may address in their Host header (DNS-rebinding "
        "protection), e.g. a Service's or proxy's name; '*.example.org' admits subdomains, ports are not "
        "compared. Always allowed: localhost, IP addresses, the listen host and, listening on all "
        "interfaces, this machine's host name"))
    allowed_origins: list[str] = Field(default=[], description=(
        "origins (scheme://host[:port]) of other web pages that may send state-changing requests; "
        "pages served by monbridge itself (same origin) always may"))
    unauthenticated_writes_from: list[IPNetwork] = Field(
        default_factory=lambda: list(_LOOPBACK),
        description=("networks whose clients may send state-changing requests (reload, the alert write API) "
                     "without credentials when server.auth is not set; others are refused"))
    read_timeout: float = Field(30.0, gt=0, le=3600, allow_inf_nan=False, description=(
        "seconds a connection gets to send a request's headers, after it connects or was answered; "
        "then it is closed (slow or idle clients hold no connection for ever)"))
    route_prefix: str = Field("", description=(
        "a path every route is served under (as Prometheus' --web.route-prefix), e.g. /monbridge behind a "
        "proxy; /-/healthy and /-/ready answer at the root too"))

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

    @field_validator("route_prefix")
    @classmethod
    def _route_prefix(cls, v: str) -> str:
        v = v.rstrip("/")
        if v and (not v.startswith("/") or any(c in v for c in "?#%\\ ") or "//" in v):
            raise ValueError("expected a path such as /monbridge (the prefix a proxy serves monbridge under)")
        return v


class HistoryConfig(_Strict):
    window: float = Field(3600.0, gt=0, le=7 * 86400, description="seconds of recent history kept per series")
    resolution: float = Field(15.0, ge=1, description="seconds between two rows of history")
    max_bytes: int = Field(16 << 20, ge=1 << 16, description=(
        "memory the history may hold; new series beyond it are not kept (counted in "
        "monbridge_dashboard_history_series_refused_total). At the defaults a series costs 2,304 bytes"))

    @model_validator(mode="after")
    def _rows(self) -> HistoryConfig:
        if self.window < 2 * self.resolution:
            raise ValueError("window: must hold at least two rows of resolution seconds")
        return self


class DashboardConfig(_Strict):
    enabled: bool = Field(True, description="the web dashboard (/ui/), its API (/api/v1/components) and history")
    history: HistoryConfig = Field(default_factory=HistoryConfig)  # type: ignore[arg-type]


class PipelineConfig(_Strict):
    cardinality_limit: int = Field(10_000, ge=1, description="most series per metric; more are dropped and counted")


class PluginEntry(_Strict):
    plugin_id: str
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    isolation: Isolation | None = Field(
        default=None, description="in_process, process or wasm; default: process for third-party plugins")
    limits: Limits = Field(default_factory=Limits)  # type: ignore[arg-type]
    grants: Grants = Field(default_factory=Grants)


class PackagesConfig(_Strict):
    dir: Path | None = Field(default=None, description="installed signed plugin packages (default: $MONBRIDGE_PLUGIN_DIR, "
                                                         "else $XDG_DATA_HOME/monbridge/plugins or ~/.local/share/...)")
    trust: Path | None = Field(default=None, description="trust store of publishers' keys (default: $MONBRIDGE_TRUST_DIR, "
                                                           "else $XDG_CONFIG_HOME/monbridge/trust or ~/.config/...)")


def _data_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return Path(xdg) if xdg else Path.home() / ".local" / "share"


def _config_home() -> Path:
    xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return Path(xdg) if xdg else Path.home() / ".config"


def default_plugin_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """Where packages are installed: ``configured`` (``packages.dir``), else
    ``$MONBRIDGE_PLUGIN_DIR``, else ``$XDG_DATA_HOME/monbridge/plugins`` (``~/.local/share``)."""
    if configured is not None:
        return Path(configured)
    env = os.environ.get("MONBRIDGE_PLUGIN_DIR", "").strip()
    return Path(env) if env else _data_home() / "monbridge" / "plugins"


def default_trust_dir(configured: str | os.PathLike[str] | None = None) -> Path:
    """The trust store: ``configured`` (``packages.trust``), else ``$MONBRIDGE_TRUST_DIR``,
    else ``$XDG_CONFIG_HOME/monbridge/trust`` (``~/.config``)."""
    if configured is not None:
        return Path(configured)
    env = os.environ.get("MONBRIDGE_TRUST_DIR", "").strip()
    return Path(env) if env else _config_home() / "monbridge" / "trust"


class MonbridgeConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)  # type: ignore[arg-type]
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)  # type: ignore[arg-type]
    plugins: list[PluginEntry] = Field(default=[])
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    packages: PackagesConfig = Field(default_factory=PackagesConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)  # type: ignore[arg-type]


def parse_listen(v: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as (host, port); an empty host is ``0.0.0.0``.
    The port is ASCII digits (``str.isdigit`` takes other scripts' digits too)."""
    host, sep, port = v.rpartition(":")
    if (not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535
            or host.startswith("[") != host.endswith("]")):
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


# ---------------------------------------------------------------------------- reading the document

MAX_CONFIG_BYTES = 1 << 20
"""A larger config file is refused (a real one is a few KB)."""
MAX_DEPTH = 64
"""The deepest nesting of mappings and lists."""
MAX_VALUES = 10_000
"""The most values (scalars, mappings, lists) a document holds, each alias (``*name``) counted
as the values it repeats. A YAML "billion laughs" (aliases of aliases, repeating one value
billions of times from a few hundred bytes) is refused at the alias that crosses it, before
anything is built, as go-yaml and SnakeYAML bound alias expansion; the bound also keeps the
time a config costs to read under about a tenth of a second."""
MAX_ISSUES_SHOWN = 200
"""The most problems one error message lists (the rest are counted)."""
MAX_NUMBER_CHARS = 100
"""The longest number (a 1:30:00 base-60 integer costs quadratic time in its length)."""

_Loc = tuple[Any, ...]
_TAG = "tag:yaml.org,2002:"
_STR, _MERGE, _TIMESTAMP, _NULL = _TAG + "str", _TAG + "merge", _TAG + "timestamp", _TAG + "null"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_COLLECTION_TAGS = {_TAG + "map", _TAG + "seq"}
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: fast, bounded depth
_SCALARS = SafeConstructor()
_IMPLICIT_FIRST = frozenset(yaml.SafeLoader.yaml_implicit_resolvers)  # first characters of non-strings
# What PyYAML's resolver takes as null, in a plain scalar (its text, which never ends in a line break)
_NULL_TEXTS = frozenset({"", "~", "null", "Null", "NULL"})
_SCALAR_EVENT, _MAPPING_START_EVENT, _MAPPING_END_EVENT = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.MappingEndEvent
_SEQUENCE_START_EVENT, _SEQUENCE_END_EVENT = yaml.SequenceStartEvent, yaml.SequenceEndEvent
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NO_KEY = object()
_MERGE_KEY = object()
_INVALID = object()


@dataclass(frozen=True)
class _Issue:
    line: int | None
    loc: _Loc | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return where + (f"{format_path(self.loc)}: " if self.loc is not None else "") + self.message


class _Fatal(Exception):
    """The document cannot be read any further."""

    def __init__(self, issue: _Issue) -> None:
        self.issue = issue


@dataclass(slots=True)
class _Collection:
    """A mapping or list being read: its value so far, where it is, what its next event fills in."""

    value: dict[Any, Any] | list[Any]
    loc: _Loc
    anchor: str | None
    size: int = 1
    key: Any = _NO_KEY
    key_line: int = 0
    merge_key: bool = False
    merges: list[dict[Any, Any]] = field(default_factory=list)
    key_lines: dict[Any, int] = field(default_factory=dict)


class _Reader:
    """Reads one YAML (or JSON) document from the parser's events into plain values.

    Scalars are what the YAML 1.1 safe schema makes of them (strings, numbers, booleans, null;
    a plain date stays a string), ``<<`` merge keys are applied, and every ``${...}`` in a string
    value is substituted. Anything else (a mapping or list as a key, a tag outside that schema,
    nesting deeper than ``MAX_DEPTH``, more than ``max_values`` values, a second document) is
    an issue with its line and path; the parser's own errors are issues with line and column.

    Without ``env`` nothing is substituted. With ``text_scalars`` a scalar is the text written
    (null is None; an explicit tag must still fit its value), as go-yaml decodes into a string.
    With ``first_document`` the stream ends after its first document, which go-yaml's
    ``Unmarshal`` reads. ``what`` names the document in messages.
    """

    def __init__(self, text: str, env: Mapping[str, str] | None, *, max_values: int = MAX_VALUES,
                 text_scalars: bool = False, first_document: bool = False, what: str = "the config") -> None:
        self.text = text
        self.env = env
        self.max_values = max_values
        self.text_scalars = text_scalars
        self.first_document = first_document
        self.what = what
        self.issues: list[_Issue] = []
        self.lines: dict[_Loc, int] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.values = 0
        self.constructed: dict[tuple[str, str], Any] = {}  # (tag, text) -> the scalar's value, or _INVALID

    def read(self) -> Any:
        try:
            loader = _LOADER(self.text)  # PyYAML's own reader checks the characters here
            try:
                return self._events(loader)
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            hint = ""
            if mark is not None and "${" in (self.text.split("\n", mark.line + 1)[mark.line:] or [""])[0]:
                hint = " (inside {...} or [...], quote a value holding ${...}: '${VAR}')"
            raise _Fatal(_Issue(None, None, f"{where}not valid YAML/JSON: {e.problem or e.context}{hint}")) from None
        except yaml.reader.ReaderError as e:
            line = self.text.count("\n", 0, max(0, e.position)) + 1
            raise _Fatal(_Issue(line, None, f"not valid YAML/JSON: {e.reason}")) from None
        except yaml.YAMLError as e:
            raise _Fatal(_Issue(None, None, f"not valid YAML/JSON: {e}")) from None

    def _events(self, loader: Any) -> Any:
        stack: list[_Collection] = []
        root: Any = _NO_KEY
        value: Any
        documents = 0
        get_event, lines, text_scalars = loader.get_event, self.lines, self.text_scalars
        # The events are told apart by their exact class (libyaml makes no other), the commonest first; a
        # scalar, list or mapping inside a list or mapping is placed here, not by _place, _count and _add.
        while (ev := get_event()) is not None:  # None after the stream's end
            line = ev.start_mark.line + 1
            kind = type(ev)
            if kind is _SCALAR_EVENT and stack and (ev.tag is None or ev.tag == "!") and (
                    text_scalars or not ev.implicit[0] or ev.value[:1] not in _IMPLICIT_FIRST):
                # A string, or with text_scalars the text written, null or <<: what _scalar makes of it.
                c = stack[-1]
                items = c.value
                text = ev.value
                is_key = False
                if type(items) is list:
                    loc = (*c.loc, len(items))
                    lines[loc] = line
                elif c.key is _NO_KEY:
                    loc, is_key = c.loc, True
                else:
                    loc = (*c.loc, c.key)
                    lines[loc] = c.key_line
                self.values += 1
                if self.values > self.max_values:
                    self._count(0, line, loc, "")
                if not ev.implicit[0] or text[:1] not in _IMPLICIT_FIRST:  # quoted, or plain and surely a string
                    value = text if is_key or "$" not in text else self._substitute(text, line, loc)
                else:  # a plain scalar with text_scalars: the resolver's null and merge, without the resolver
                    value = _MERGE_KEY if is_key and text == "<<" else None if text in _NULL_TEXTS else text
                size, anchor = 1, ev.anchor
            elif kind is _SCALAR_EVENT:
                value, size, anchor = self._scalar(loader, stack, ev, line), 1, ev.anchor
            elif kind is _MAPPING_END_EVENT or kind is _SEQUENCE_END_EVENT:
                c = stack.pop()
                value = self._merged(c) if c.merges else c.value
                size, anchor = c.size, c.anchor
            elif kind is _MAPPING_START_EVENT or kind is _SEQUENCE_START_EVENT:
                parent = stack[-1] if stack else None
                if parent is not None and type(parent.value) is list:
                    loc = (*parent.loc, len(parent.value))
                    lines[loc] = line
                elif parent is not None and parent.key is not _NO_KEY:
                    loc = (*parent.loc, parent.key)
                    lines[loc] = parent.key_line
                else:  # the top level, or a key (refused)
                    loc = self._place(stack, line, "a mapping" if kind is _MAPPING_START_EVENT else "a list")
                if ev.tag is not None and ev.tag != "!" and ev.tag not in _COLLECTION_TAGS:
                    raise _Fatal(_Issue(line, loc, f"unsupported tag {ev.tag} (a config is mappings, lists and "
                                                   "scalars)"))
                if len(stack) >= MAX_DEPTH:
                    raise _Fatal(_Issue(line, loc, f"nested more than {MAX_DEPTH} levels deep"))
                self.values += 1
                if self.values > self.max_values:
                    self._count(0, line, loc, "")
                stack.append(_Collection({} if kind is _MAPPING_START_EVENT else [], loc, ev.anchor))
                continue
            elif kind is yaml.AliasEvent:
                value, size = self._alias(stack, ev.anchor or "", line)
                anchor = None
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1 and self.first_document:
                    break
                if documents > 1:
                    raise _Fatal(_Issue(line, None, "a second YAML document (a config is one document)"))
                continue
            else:  # stream start and end, document end
                continue
            if anchor is not None:
                self.anchors[anchor] = (value, size)
            if not stack:
                root = value
            elif type((c := stack[-1]).value) is list:
                c.size += size
                c.value.append(value)
            elif c.key is _NO_KEY:  # a key: its value comes next
                c.size += size
                c.key, c.key_line, c.merge_key = value, line, value is _MERGE_KEY
            elif not c.merge_key and c.key not in c.key_lines:  # a value, under a key not seen before
                c.size += size
                c.key_lines[c.key] = c.key_line
                c.value[c.key] = value
                c.key = _NO_KEY
            else:
                self._add(c, value, size, line)
        return None if root is _NO_KEY else root

    def _place(self, stack: list[_Collection], line: int, what: str) -> _Loc:
        """Where the value that starts here goes; a mapping or list cannot be a key."""
        if not stack:
            self.lines.setdefault((), line)
            return ()
        c = stack[-1]
        if isinstance(c.value, list):
            loc = (*c.loc, len(c.value))
            self.lines[loc] = line
            return loc
        if c.key is _NO_KEY:
            raise _Fatal(_Issue(line, c.loc, f"a mapping key must be a string, not {what}"))
        loc = (*c.loc, c.key)
        self.lines[loc] = c.key_line
        return loc

    def _alias(self, stack: list[_Collection], anchor: str, line: int) -> tuple[Any, int]:
        is_key = bool(stack) and isinstance(stack[-1].value, dict) and stack[-1].key is _NO_KEY
        loc = stack[-1].loc if is_key else self._place(stack, line, "")
        if anchor not in self.anchors:
            raise _Fatal(_Issue(line, loc, f"alias *{anchor} does not name an anchor (&{anchor}) completed before it"))
        value, size = self.anchors[anchor]
        if is_key and isinstance(value, (dict, list)):
            raise _Fatal(_Issue(line, loc, f"a mapping key must be a string, not *{anchor}"))
        self._count(size, line, loc, f" (*{anchor} repeats {size})")
        return _copy(value), size  # each place gets its own copy (bounded by MAX_VALUES)

    def _scalar(self, loader: Any, stack: list[_Collection], ev: Any, line: int) -> Any:
        is_key = bool(stack) and stack[-1].key is _NO_KEY and isinstance(stack[-1].value, dict)
        loc = stack[-1].loc if is_key else self._place(stack, line, "")
        self._count(1, line, loc, "")
        tag = ev.tag
        if tag is None or tag == "!":
            text = ev.value
            if not ev.implicit[0] or text[:1] not in _IMPLICIT_FIRST:  # quoted, or plain and surely a string
                return text if is_key else self._substitute(text, line, loc)
            if self.text_scalars:
                tag = loader.resolve(yaml.ScalarNode, text, ev.implicit)
                return _MERGE_KEY if tag == _MERGE and is_key else None if tag == _NULL else text
            if text.isascii() and text.isdigit() and (text[0] != "0" or text == "0") and len(text) <= MAX_NUMBER_CHARS:
                return int(text)  # the common number, without PyYAML's resolver and constructor
            tag = loader.resolve(yaml.ScalarNode, text, ev.implicit)
            if tag == _MERGE and is_key:
                return _MERGE_KEY
            if tag in (_TIMESTAMP, _MERGE):
                tag = _STR  # a plain date is a string (YAML 1.2 has no timestamps)
        if tag == _STR:
            return ev.value if is_key else self._substitute(ev.value, line, loc)
        short = tag.replace(_TAG, "!!")
        if tag not in _SCALAR_TAGS:
            self.issues.append(_Issue(line, loc, f"unsupported tag {short} (a config's scalars are strings, "
                                                 "numbers, booleans and null)"))
            return None
        if len(ev.value) > MAX_NUMBER_CHARS:
            self.issues.append(_Issue(line, loc, f"{short} value longer than {MAX_NUMBER_CHARS} characters"))
            return None
        value = self.constructed.get((tag, ev.value), _NO_KEY)
        if value is _NO_KEY:  # each tag and text constructed once (a document may repeat them many times)
            try:
                value = SafeConstructor.yaml_constructors[tag](_SCALARS, yaml.ScalarNode(tag, ev.value))
            except Exception:  # noqa: BLE001 - PyYAML's constructors raise what they happen to raise
                value = _INVALID
            self.constructed[(tag, ev.value)] = value
        if value is _INVALID:
            self.issues.append(_Issue(line, loc, f"not a valid {short} value"))
            return None
        return ev.value if self.text_scalars and value is not None else value

    def _count(self, n: int, line: int, loc: _Loc, why: str) -> None:
        self.values += n
        if self.values > self.max_values:
            raise _Fatal(_Issue(line, loc, f"{self.what} holds more than {self.max_values} values{why}, aliases "
                                           "counted as the values they repeat"))

    def _add(self, c: _Collection, value: Any, size: int, line: int) -> None:
        c.size += size
        if isinstance(c.value, list):
            c.value.append(value)
            return
        if c.key is _NO_KEY:  # a key: the value comes next
            c.key, c.key_line, c.merge_key = value, line, value is _MERGE_KEY
            return
        key, c.key = c.key, _NO_KEY
        if c.merge_key:
            merges = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merges):
                self.issues.append(_Issue(c.key_line, c.loc, "a << merge key takes a mapping or a list of mappings"))
                return
            c.merges[:0] = reversed(merges)  # the earliest mapping wins, as PyYAML merges
            return
        if key in c.key_lines:
            self.issues.append(_Issue(c.key_line, (*c.loc, key), f"key already set at line {c.key_lines[key]}"))
        c.key_lines[key] = c.key_line
        assert isinstance(c.value, dict)
        c.value[key] = value

    @staticmethod
    def _merged(c: _Collection) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for m in c.merges:
            out.update(m)
        assert isinstance(c.value, dict)
        out.update(c.value)
        return out

    def _substitute(self, value: str, line: int, loc: _Loc) -> str:
        """``value`` with each ``${...}`` replaced and ``$$`` made ``$`` (one pass, linear in its
        length); the result is never parsed again. The first bad reference is an issue."""
        if "$" not in value or self.env is None:
            return value
        out = []
        i = 0
        while (k := value.find("$", i)) >= 0:
            out.append(value[i:k])
            if value.startswith("$$", k):
                out.append("$")
                i = k + 2
            elif value.startswith("${", k):
                end = value.find("}", k + 2)
                if end < 0:
                    self.issues.append(_Issue(line, loc, "${ without its closing } (write $$ for a literal $)"))
                    return ""
                resolved = self._resolve(value[k + 2:end], line, loc)
                if resolved is None:
                    return ""
                out.append(resolved)
                i = end + 1
            else:
                out.append("$")
                i = k + 1
        out.append(value[i:])
        return "".join(out)

    def _resolve(self, expr: str, line: int, loc: _Loc) -> str | None:
        """The value of one ``${expr}``, or None (and an issue) when it has none."""
        if expr.startswith("file:"):
            return self._file(expr[5:], line, loc)
        if expr.startswith("env:"):
            expr = expr[4:]
        name, sep, default = expr.partition(":-")
        if not _NAME.fullmatch(name):
            self.issues.append(_Issue(line, loc, f"${{{_clip(expr)}}}: expected ${{NAME}}, ${{NAME:-default}}, "
                                                 "${env:NAME} or ${file:/path} (write $$ for a literal $)"))
            return None
        val = (self.env or {}).get(name)
        if val is None or (sep and val == ""):
            if sep:
                return default
            self.issues.append(_Issue(line, loc, f"environment variable {_clip(name)} is not set (use "
                                                 f"${{{_clip(name)}:-default}} to give a default)"))
            return None
        return val

    def _file(self, path: str, line: int, loc: _Loc) -> str | None:
        try:
            _, data = read_regular_file(path, MAX_CONFIG_BYTES)
        except NotARegularFile:
            self.issues.append(_Issue(line, loc, f"${{file:{_clip(path, 256)}}}: not a regular file"))
            return None
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) else "not a valid path"
            self.issues.append(_Issue(line, loc, f"${{file:{_clip(path, 256)}}}: cannot read: {why}"))
            return None
        if len(data) > MAX_CONFIG_BYTES:
            self.issues.append(_Issue(line, loc, f"${{file:{_clip(path, 256)}}}: larger than {MAX_CONFIG_BYTES} bytes"))
            return None
        try:
            return data.decode("utf-8").rstrip("\n")
        except UnicodeDecodeError:
            self.issues.append(_Issue(line, loc, f"${{file:{_clip(path, 256)}}}: not UTF-8 text"))
            return None


class NotARegularFile(OSError):
    """A path that names a FIFO, a device or a directory, where a file was expected."""


def open_regular(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> tuple[int, os.stat_result]:
    """A descriptor on the file at ``path``, opened with ``flags`` without blocking and checked on
    the open file itself, and its stat: a FIFO or device (which could block or never end) or a
    directory is refused with NotARegularFile, not waited on. The caller closes the descriptor."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFile(f"{os.fspath(path)}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular_file(path: str | os.PathLike[str], most: int, *, nofollow: bool = False) -> tuple[os.stat_result, bytes]:
    """The stat and at most ``most`` + 1 bytes (one more tells a larger file) of the regular file
    at ``path`` (see open_regular); with ``nofollow``, never through a symlink."""
    fd, st = open_regular(path, os.O_RDONLY | (os.O_NOFOLLOW if nofollow else 0))
    try:
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        return st, f.read(most + 1)


def _clip(text: str, most: int = 60) -> str:
    """``text`` (a name or path from the file) cut short for a message."""
    return text if len(text) <= most else text[:most] + "..."


def _copy(value: Any) -> Any:
    """A copy of the mappings and lists of a read value (its scalars are immutable)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _decode(data: bytes | str, max_bytes: int = MAX_CONFIG_BYTES, what: str = "the config") -> str:
    """The text of a document: bounded, and UTF-8 (a byte order mark is dropped)."""
    if len(data) > max_bytes:
        raise _Fatal(_Issue(None, None, f"{what} is larger than {max_bytes} bytes"))
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _Fatal(_Issue(data.count(b"\n", 0, e.start) + 1, None, "not valid UTF-8")) from None


# ---------------------------------------------------------------------------- locating errors


def format_path(path: tuple[Any, ...]) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else str(p))
    return s or "(top level)"


def _line_of(path: _Loc, lines: Mapping[_Loc, int]) -> int | None:
    probe = path
    while True:
        line = lines.get(probe)
        if line is not None or not probe:
            return line
        probe = probe[:-1]


def locate(message: str, path: _Loc, lines: Mapping[_Loc, int]) -> str:
    """``message`` about the value at ``path`` of a document read by :func:`read_document`,
    prefixed with its line (or the line of the nearest value holding it) and the path."""
    return str(_Issue(_line_of(path, lines), path or None, message))


def _describe(err: Mapping[str, Any]) -> str:
    t = err.get("type", "")
    if t == "extra_forbidden":
        return "unknown key"
    if t == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid"))
    return msg[0].lower() + msg[1:] if msg else "invalid"


def _members(tp: Any) -> list[Any]:
    """``tp`` itself, or the members of a union (``X | None``), without None."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(tp) for m in _members(a) if m is not type(None)]
    return [tp]


def _step(tp: Any, key: Any) -> Any:
    """The type found at ``key`` inside a value of type ``tp`` (None when unknown)."""
    for m in _members(tp):
        if isinstance(m, type) and issubclass(m, BaseModel):
            if key == m.__name__:  # pydantic names the union member it tried
                return m
            for name, f in m.model_fields.items():
                if key in (name, f.alias):
                    return f.annotation
        origin, args = typing.get_origin(m), typing.get_args(m)
        if origin in (list, tuple, set, frozenset, collections.abc.Sequence) and isinstance(key, int) and args:
            return args[0]
        if origin in (dict, collections.abc.Mapping) and len(args) == 2:
            return args[1]
    return None


def _document_path(model: type[BaseModel], loc: _Loc) -> tuple[_Loc, list[str]]:
    """Pydantic's error location ``loc`` as a path in the document (without the names of the
    union members it tried), and the keys the mapping holding its last part takes."""
    tp: Any = model
    path: list[Any] = []
    keys: list[str] = []
    for i, part in enumerate(loc):
        member = next((m for m in _members(tp) if getattr(m, "__name__", None) == part), None)
        if member is not None and isinstance(part, str):
            tp = member
            continue
        if i == len(loc) - 1:
            keys = [f.alias or name for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)
                    for name, f in m.model_fields.items()]
        tp = _step(tp, part)
        path.append(part)
    return tuple(path), keys


def _validation_issues(e: ValidationError, prefix: _Loc, model: type[BaseModel],
                       lines: Mapping[_Loc, int]) -> list[_Issue]:
    errors = []
    for err in e.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        errors.append((_line_of((*prefix, *loc), lines), loc, err))
    errors.sort(key=lambda x: (x[0] is None, x[0] or 0))
    out = []
    for n, (line, loc, err) in enumerate(errors):
        msg = _describe(err)
        if n >= MAX_ISSUES_SHOWN:  # not shown: only counted, without the work of saying more
            out.append(_Issue(line, (*prefix, *loc), msg))
            continue
        loc, keys = _document_path(model, loc)
        if err.get("type") == "extra_forbidden" and loc and keys:
            import difflib  # only to say what an unknown key was meant to be

            near = difflib.get_close_matches(str(loc[-1]), keys, n=1)
            if near:
                msg += f", did you mean {near[0]!r}?"
            msg += f" (expected one of: {', '.join(keys)})"
        path = (*prefix, *loc)
        out.append(_Issue(_line_of(path, lines), path, msg))
    return out


# ---------------------------------------------------------------------------- loading


def default_config_text(env: Mapping[str, str] | None = None) -> str:
    """The embedded default: the system collector and /metrics on 127.0.0.1:9464, plus OTLP
    push when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set."""
    from importlib import resources  # only here: it imports tempfile, shutil and the compressors

    env = os.environ if env is None else env
    text = resources.files("bridge").joinpath("default-config.yaml").read_text()
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        text += "  - plugin_id: monitoring.integration.otlp\n    enabled: true\n    config: {}\n"
    return text


def parse_config(text: str | bytes, source: str, registry: PluginRegistry,
                 env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Validate a config document (YAML or JSON, text or UTF-8 bytes); raise ConfigError naming
    every problem, sorted by line. Nothing else escapes, whatever the document holds."""
    env = os.environ if env is None else env
    top_keys = ", ".join(MonbridgeConfig.model_fields)
    try:
        reader = _Reader(_decode(text), env)
        data = reader.read()
        if data is None:
            raise _Fatal(_Issue(1, None, f"the config is empty (expected a mapping with keys {top_keys})"))
        if not isinstance(data, dict):
            raise _Fatal(_Issue(reader.lines.get((), 1), (), f"expected a mapping with keys {top_keys}"))
    except _Fatal as e:
        raise ConfigError(source, [str(e.issue)]) from None
    issues = list(reader.issues)
    lines = reader.lines
    model: MonbridgeConfig | None = None
    try:
        model = MonbridgeConfig.model_validate(data)
    except ValidationError as e:
        issues.extend(_validation_issues(e, (), MonbridgeConfig, lines))

    if model is not None:
        registry.add_packages(default_plugin_dir(model.packages.dir), default_trust_dir(model.packages.trust))
    loaded_configs: dict[str, Any] = {}
    raw_configs: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    raw_plugins = data.get("plugins")
    for i, raw in enumerate(raw_plugins if isinstance(raw_plugins, list) else []):
        try:
            entry = PluginEntry.model_validate(raw)
        except ValidationError:
            continue  # reported with the whole document's issues
        loc = ("plugins", i, "plugin_id")
        if entry.plugin_id in seen:
            issues.append(_Issue(_line_of(loc, lines), loc,
                                 f"{entry.plugin_id!r} is already configured at plugins[{seen[entry.plugin_id]}]"))
            continue
        seen[entry.plugin_id] = i
        try:
            registered = registry.entry(entry.plugin_id)
            if registered.package is not None:
                issues.extend(_package_issues(registered.package, entry, i, lines, registry))
                registry.bind_package(entry.plugin_id, entry.limits, entry.grants)
            elif entry.isolation is Isolation.WASM:
                wloc: _Loc = ("plugins", i, "isolation")
                issues.append(_Issue(_line_of(wloc, lines), wloc, f"{entry.plugin_id} is a Python plugin: isolation "
                                                                  "wasm is for signed WASM packages (use process)"))
            config_model = registered.config_model()
        except PluginNotFoundError as e:
            issues.append(_Issue(_line_of(loc, lines), loc, str(e)))
            continue
        except Exception as e:  # noqa: BLE001 - an entry point that fails to import
            issues.append(_Issue(_line_of(loc, lines), loc,
                                 f"plugin {entry.plugin_id!r} failed to load: {type(e).__name__}: {e}"))
            continue
        try:
            loaded_configs[entry.plugin_id] = config_model.model_validate(entry.config)
            raw_configs[entry.plugin_id] = entry.config
        except ValidationError as e:
            issues.extend(_validation_issues(e, ("plugins", i, "config"), config_model, lines))
    if issues:
        raise ConfigError(source, _report(issues, reader.issues))
    assert model is not None
    return LoadedConfig(source, model, loaded_configs, raw_configs)


def _package_issues(package: VerifiedPackage, entry: PluginEntry, i: int, lines: Mapping[_Loc, int],
                    registry: PluginRegistry) -> list[_Issue]:
    """What is wrong with the entry of a signed package: an isolation other than ``wasm``, grants
    not covering the permissions its manifest requests (refused, listing them), a dependency
    not installed or of a version out of its range."""
    from bridge.package import version_matches

    out = []
    for dep in package.manifest.dependencies:
        try:
            version = registry.entry(dep.id).version
        except PluginNotFoundError:
            version = None
        try:
            matches = version is not None and version_matches(version, dep.version)
        except ValueError:  # an installed distribution's version that is not semantic
            matches = False
        if not matches:
            loc: _Loc = ("plugins", i, "plugin_id")
            have = "not installed" if version is None else f"{version} is installed"
            out.append(_Issue(_line_of(loc, lines), loc, f"{entry.plugin_id} depends on {dep.id} {dep.version}: {have}"))
    if entry.isolation not in (None, Isolation.WASM):
        loc = ("plugins", i, "isolation")
        out.append(_Issue(_line_of(loc, lines), loc, f"{entry.plugin_id} is a signed WASM package: it runs in the "
                                                     "WASM host (isolation: wasm)"))
    missing = entry.grants.covers(package.manifest.permissions)
    if missing:
        loc = ("plugins", i, "grants")
        out.append(_Issue(_line_of(loc, lines), loc, f"the package {package.path} requests permissions not "
                                                     f"granted here: {', '.join(missing)}"))
    return out


def read_document(data: bytes | str, source: str, *, env: Mapping[str, str] | None = None,
                  text_scalars: bool = False, first_document: bool = False, max_bytes: int = MAX_CONFIG_BYTES,
                  max_values: int = MAX_VALUES, what: str = "the config") -> tuple[Any, Mapping[_Loc, int]]:
    """A YAML or JSON document (text or UTF-8 bytes, at most ``max_bytes``) as plain values,
    read as the config is (bounded depth, values and aliases; see ``_Reader`` for the options),
    and the line of each value by its path (for :func:`locate`). Every problem found while
    reading raises one ConfigError listing them, sorted by line; nothing else escapes."""
    try:
        reader = _Reader(_decode(data, max_bytes, what), env, max_values=max_values, text_scalars=text_scalars,
                         first_document=first_document, what=what)
        value = reader.read()
    except _Fatal as e:
        raise ConfigError(source, [str(e.issue)]) from None
    if reader.issues:
        raise ConfigError(source, _report(reader.issues, reader.issues))
    return value, reader.lines


def line_map(data: bytes | str, *, max_bytes: int = MAX_CONFIG_BYTES, max_values: int = MAX_VALUES) -> Mapping[_Loc, int]:
    """The line of each value of a YAML or JSON document by its path, as far as the document can
    be read within the bounds: best effort, to locate a problem another parser found."""
    try:
        reader = _Reader(_decode(data, max_bytes), None, max_values=max_values, text_scalars=True)
    except _Fatal:
        return {}
    try:
        reader.read()
    except _Fatal:
        pass  # the lines read so far
    return reader.lines


def _report(issues: list[_Issue], unread: list[_Issue]) -> list[str]:
    """``issues`` sorted by line; a value that could not be read (an unset variable, say) is
    reported once, not again as invalid; at most ``MAX_ISSUES_SHOWN``."""
    own = {id(i) for i in unread}
    bad = {i.loc for i in unread if i.loc is not None}
    kept = [i for i in issues if id(i) in own or i.loc is None
            or not any(i.loc[:k] in bad for k in range(len(i.loc) + 1))]
    kept.sort(key=lambda i: (i.line is None, i.line or 0))
    out = [str(i) for i in kept[:MAX_ISSUES_SHOWN]]
    if len(kept) > MAX_ISSUES_SHOWN:
        out.append(f"... and {len(kept) - MAX_ISSUES_SHOWN} more problems")
    return out


def load_config(path: str | os.PathLike[str] | None, registry: PluginRegistry,
                env: Mapping[str, str] | None = None) -> LoadedConfig:
    if path is None:
        return parse_config(default_config_text(env), DEFAULT_SOURCE, registry, env)
    p = Path(path)
    try:
        _, data = read_regular_file(p, MAX_CONFIG_BYTES)
    except NotARegularFile:
        raise ConfigError(str(p), ["cannot read the file: not a regular file"]) from None
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read the file: {e.strerror}"]) from None
    return parse_config(data, str(p), registry, env)


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
    import json

    return json.loads(json.dumps(value, default=str))
