"""The config model of ``monitoring.integration.nagios``, apart from its code: validating a config
imports this, not the integration (``bridge.registry.BUILTIN_PLUGINS`` names it)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.api import IntegrationConfig, PluginConfig
from integrations.nagios.ranges import Range, RangeError, parse_range

__all__ = ["AlertResults", "MetricCheck", "NagiosExportConfig", "NscaConfig", "ResultQueue", "check_name"]

#: Characters a host name or service description cannot hold: ``;`` separates the fields of an
#: external command, control characters would end or garble its line.
_BAD_NAME = re.compile(r"[;\x00-\x1f\x7f]")


def check_name(v: str, what: str) -> str:
    """``v`` if it can name a Nagios host or service in an external command, else ValueError."""
    if not v.strip():
        raise ValueError(f"{what} is empty")
    if _BAD_NAME.search(v):
        raise ValueError(f"{what} {v[:60]!r} holds ';' or a control character")
    return v


def _range(v: str | None) -> str | None:
    if v is not None:
        try:
            parse_range(v)
        except RangeError as e:
            raise ValueError(str(e)) from None
    return v


class NscaConfig(PluginConfig):
    """An NSCA server (Debian's ``nsca``), as ``send_nsca`` reaches it."""

    host: str = Field(min_length=1, description="the NSCA server's host name or address")
    port: int = Field(default=5667, ge=1, le=65535)
    encryption: Literal["none", "xor", "aes256"] = Field(
        default="xor", description="the server's decryption_method: none (0), xor (1), aes256 (14, RIJNDAEL-128)")
    password: SecretStr = Field(default=SecretStr(""), description="the server's password (xor, aes256)")
    timeout: float = Field(default=10.0, gt=0, le=300, description="seconds one connection may take")

    @model_validator(mode="after")
    def _password(self) -> NscaConfig:
        if len(self.password.get_secret_value().encode()) > 511:
            raise ValueError("password is longer than NSCA's 511 bytes")
        return self


class MetricCheck(PluginConfig):
    """A passive service result computed from the pipeline's series each export round."""

    service: str = Field(min_length=1, max_length=1000, description="the Nagios service description")
    host: str | None = Field(default=None, description="the Nagios host (default: the integration's host)")
    metric: str = Field(min_length=1, description="OTel metric name, or the Prometheus name of an imported one")
    match: dict[str, str] = Field(default_factory=dict, description="only series with these attribute values")
    aggregate: Literal["avg", "min", "max", "sum", "count", "last"] = "avg"
    warning: str | None = Field(default=None, description="Nagios range: WARNING when it alerts")
    critical: str | None = Field(default=None, description="Nagios range: CRITICAL when it alerts")
    label: str | None = Field(default=None, description="the perfdata label (default: the metric name)")
    missing: Literal["unknown", "ok", "warning", "critical"] = Field(
        default="unknown", description="the state when no series matches")

    @field_validator("warning", "critical")
    @classmethod
    def _ranges(cls, v: str | None) -> str | None:
        return _range(v)

    @field_validator("service")
    @classmethod
    def _service(cls, v: str) -> str:
        return check_name(v, "service")

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        return None if v is None else check_name(v, "host")

    def ranges(self) -> tuple[Range | None, Range | None]:
        return (parse_range(self.warning) if self.warning else None,
                parse_range(self.critical) if self.critical else None)


NagiosState = Literal["OK", "WARNING", "CRITICAL", "UNKNOWN"]


def _default_states() -> dict[str, NagiosState]:
    return {"critical": "CRITICAL", "warning": "WARNING", "info": "OK"}


class AlertResults(PluginConfig):
    """Alerts as passive service results: a firing alert is its severity's state, a resolved one OK."""

    enabled: bool = True
    service_label: str = Field(default="nagios_service",
                               description="the alert label naming the service (default: the alert's name)")
    host_label: str = Field(default="nagios_host", description="the alert label naming the host (default: host)")
    states: dict[str, NagiosState] = Field(
        default_factory=_default_states,
        description="severity -> Nagios state")
    other_state: NagiosState = Field(
        default="WARNING", description="the state of a severity that states does not name")
    resend_interval: float = Field(default=300.0, gt=0,
                                   description="seconds after which an unchanged result is sent again")


class ResultQueue(PluginConfig):
    """Results not delivered yet, and how their delivery is retried (as remote write's queue)."""

    path: str | None = Field(default=None, description="directory of the on-disk queue (and of what alerts were "
                                                       "sent); unset keeps both in memory (a restart loses them)")
    max_bytes: int = Field(default=64 << 20, ge=1 << 16, description="bound on the queue; beyond it the oldest "
                                                                     "results are dropped")
    max_results_per_send: int = Field(default=500, ge=1, le=100_000)
    min_backoff: float = Field(default=0.5, gt=0, allow_inf_nan=False, description="seconds before the first retry")
    max_backoff: float = Field(default=60.0, gt=0, allow_inf_nan=False, description="longest wait between retries")
    fsync: bool = False

    @model_validator(mode="after")
    def _backoffs(self) -> ResultQueue:
        if self.max_backoff < self.min_backoff:
            raise ValueError("max_backoff must be at least min_backoff")
        return self


class NagiosExportConfig(IntegrationConfig):
    """Passive check results into Nagios through its external command file or NSCA."""

    command_file: str | None = Field(default=None, description="Nagios' external command file (a FIFO)")
    nsca: NscaConfig | None = None
    host: str = Field(description="the Nagios host the results belong to")
    host_check: bool = Field(default=True, description="send a host result for monbridge itself each round")
    alerts: AlertResults = Field(default_factory=AlertResults)
    checks: tuple[MetricCheck, ...] = Field(default=(), max_length=10_000)
    queue: ResultQueue = Field(default_factory=ResultQueue)

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return check_name(v, "host")

    @model_validator(mode="after")
    def _transport(self) -> NagiosExportConfig:
        if (self.command_file is None) == (self.nsca is None):
            raise ValueError("give exactly one of command_file and nsca")
        if self.nsca is not None:
            for i, c in enumerate(self.checks):
                if len(c.service.encode()) > 127:
                    raise ValueError(f"checks[{i}].service is longer than NSCA's 127 bytes")
            for h in [self.host, *(c.host for c in self.checks if c.host)]:
                if len(h.encode()) > 63:
                    raise ValueError(f"host {h[:40]!r} is longer than NSCA's 63 bytes")
        seen: set[tuple[str, str]] = set()
        for i, c in enumerate(self.checks):
            key = (c.host or self.host, c.service)
            if key in seen:
                raise ValueError(f"checks[{i}]: service {c.service!r} of host {key[0]!r} is named by an earlier check")
            seen.add(key)
        return self
