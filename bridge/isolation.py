"""How a plugin is isolated: its host (``isolation``), its resource ``limits`` and its ``grants``.

These are the per-plugin keys of a config entry, beside ``plugin_id``, ``enabled`` and ``config``::

    - plugin_id: acme.collector.queue
      isolation: process          # in_process | process | wasm; default: process for third-party plugins
      limits: {memory_mb: 50, cpu_percent: 5, cpu_burst_percent: 20, connections: 10}
      grants:
        paths: [/var/lib/acme]    # directories the plugin may write (and read)
        hosts: ["queue.internal:8080", "127.0.0.1"]   # where it may connect (host or host:port)

The defaults are the plugin specification's budget: 50 MB of memory, 5 % of a core sustained
(averaged over 60 s) with 20 % bursts (over 5 s), 10 concurrent network connections; and
nothing granted: no writes anywhere, no connections, no programs run. A packaged plugin's
manifest requests permissions in the same shape as ``grants``; a request beyond what the
config grants is refused (``Grants.covers``).

This module holds the models and the rules between them only; the worker-process host, the
sandbox applied inside a worker, the limits' enforcement and the WASM host build on it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["Grants", "Isolation", "LimitExceeded", "Limits", "StopReason", "host_port"]


class Isolation(StrEnum):
    IN_PROCESS = "in_process"  # on the agent's event loop (built-in plugins)
    PROCESS = "process"  # a worker process of its own, limited and sandboxed
    WASM = "wasm"  # a signed WASM module in the agent's WASM host


class StopReason(StrEnum):
    """Why a host stopped a plugin (``/api/v1/plugins`` and ``monbridge_plugin_stops_total``)."""

    MEMORY_LIMIT = "memory_limit"
    CPU_LIMIT = "cpu_limit"
    CONNECTION_LIMIT = "connection_limit"
    TIMEOUT = "timeout"
    CRASHED = "crashed"


class LimitExceeded(Exception):
    """A plugin's host stopped it: over a limit, out of time, or crashed. Raised from a call into
    the plugin; the supervisor stops the plugin and restarts it with backoff, showing ``reason``."""

    def __init__(self, reason: StopReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Limits(_Strict):
    memory_mb: float = Field(50.0, gt=0, description="most memory (RSS) the plugin may use, in MiB")
    cpu_percent: float = Field(5.0, gt=0, le=100 * 1024, description="CPU sustained, % of one core over cpu_window")
    cpu_window: float = Field(60.0, gt=0, description="seconds the sustained CPU is averaged over")
    cpu_burst_percent: float = Field(20.0, gt=0, le=100 * 1024, description="CPU in a burst, % of one core over cpu_burst_window")
    cpu_burst_window: float = Field(5.0, gt=0, description="seconds a burst is measured over")
    connections: int = Field(10, ge=0, description="most network connections open at once")


def host_port(grant: str) -> tuple[str, int | None]:
    """``host`` or ``host:port`` (``[v6]:port``) as (host, port or None for any port)."""
    text = grant.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{grant!r}: expected [ADDRESS] or [ADDRESS]:PORT")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ValueError(f"{grant!r}: no host")
    if not port_text:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{grant!r}: port must be 1-65535")
    return host.lower(), int(port_text)


class Grants(_Strict):
    paths: list[str] = Field(default=[], description="directories the plugin may write and read")
    hosts: list[str] = Field(default=[], description="host or host:port the plugin may connect to")
    exec: list[str] = Field(default=[], description="programs (absolute paths) the plugin may run")

    @field_validator("paths", "exec")
    @classmethod
    def _absolute(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} is not an absolute path")
        return v

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        for h in v:
            host_port(h)
        return v

    def covers(self, requested: Grants) -> list[str]:
        """What ``requested`` asks for beyond these grants (empty when all of it is granted)."""
        missing: list[str] = []
        for p in requested.paths:
            if not any(_within(p, g) for g in self.paths):
                missing.append(f"path {p}")
        for h in requested.hosts:
            host, port = host_port(h)
            if not any(gh == host and (gp is None or gp == port) for gh, gp in map(host_port, self.hosts)):
                missing.append(f"host {h}")
        for e in requested.exec:
            if e not in self.exec:
                missing.append(f"exec {e}")
        return missing


def _within(path: str, granted: str) -> bool:
    p, g = path.rstrip("/") or "/", granted.rstrip("/") or "/"
    return p == g or p.startswith(g if g == "/" else g + "/")
