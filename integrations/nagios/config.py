"""The config model of ``monitoring.metrics.nagios``, apart from its code: validating a config
imports this, not the collector (``bridge.registry.BUILTIN_PLUGINS`` names it)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge.api import CollectorConfig, PluginConfig

__all__ = ["NagiosCheck", "NagiosCollectorConfig"]

DEFAULT_PLUGIN_PATHS = ("/usr/lib/nagios/plugins", "/usr/lib/monitoring-plugins", "/usr/local/nagios/libexec")


class NagiosCheck(PluginConfig):
    """One check: a Nagios plugin run on its own schedule."""

    name: str = Field(min_length=1, max_length=200, description="the check's name (the nagios.check attribute)")
    command: tuple[str, ...] = Field(min_length=1, description="argv of the plugin, never run through a shell; "
                                                               "a bare first word is looked up in plugin_paths")
    interval: float = Field(default=60.0, gt=0, description="seconds between checks (Nagios' check_interval)")
    retry_interval: float | None = Field(default=None, gt=0,
                                         description="seconds between checks while in a soft non-OK state "
                                                     "(default: interval)")
    max_check_attempts: int = Field(default=3, ge=1, le=100,
                                    description="non-OK results in a row that make a state hard")
    timeout: float = Field(default=60.0, gt=0, le=3600,
                           description="seconds the plugin may run; then its process group is killed (UNKNOWN)")
    labels: dict[str, str] = Field(default_factory=dict, description="attributes added to the check's metrics "
                                                                     "and labels to its alerts")
    environment: dict[str, str] = Field(default_factory=dict,
                                        description="variables the plugin gets besides PATH and LC_ALL=C")

    @field_validator("command")
    @classmethod
    def _program(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v[0].strip():
            raise ValueError("the command's first word (the plugin) is empty")
        if any("\x00" in a for a in v):
            raise ValueError("a command word holds a NUL character")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in v if k.startswith("nagios.") or k in ("alertname", "severity"))
        if reserved:
            raise ValueError(f"label names {reserved} are reserved (nagios.*, alertname, severity)")
        return v

    @property
    def retry(self) -> float:
        return self.retry_interval if self.retry_interval is not None else self.interval


class NagiosCollectorConfig(CollectorConfig):
    """Nagios plugins run as checks; their states, timings and perfdata as metrics."""

    plugin_paths: tuple[str, ...] = Field(default=DEFAULT_PLUGIN_PATHS,
                                          description="directories a bare plugin name is looked up in, in order")
    concurrency: int = Field(default=4, ge=1, le=1024, description="checks running at once, at most")
    unknown_severity: Literal["warning", "critical", "none"] = Field(
        default="warning", description="severity of the alert a hard UNKNOWN raises (none: no alert)")
    start_window: float = Field(default=0.5, ge=0, le=60,
                                description="seconds: checks falling due within one such window of time start "
                                            "together at its end (at most this late), so that one wakeup of the "
                                            "agent starts, and later reaps, several (Nagios schedules at whole "
                                            "seconds); 0 starts each at its time")
    flood_bytes: int = Field(default=1 << 20, ge=8192, le=1 << 30,
                             description="output (stdout and stderr) beyond which a plugin is killed as a flood")
    checks: tuple[NagiosCheck, ...] = Field(default=(), max_length=100_000, description="the checks")

    @model_validator(mode="after")
    def _unique_names(self) -> NagiosCollectorConfig:
        seen: set[str] = set()
        for i, c in enumerate(self.checks):
            if c.name in seen:
                raise ValueError(f"checks[{i}].name {c.name!r} is used by an earlier check; names must be unique")
            seen.add(c.name)
        return self
