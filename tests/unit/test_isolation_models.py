"""The per-plugin isolation keys of a config entry: defaults, validation, and grants covering requests."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config import PluginEntry
from bridge.isolation import Grants, Isolation, Limits, host_port


def test_defaults_are_the_specification_budget_and_nothing_granted() -> None:
    e = PluginEntry(plugin_id="x")
    assert e.isolation is None
    assert (e.limits.memory_mb, e.limits.cpu_percent, e.limits.cpu_burst_percent, e.limits.connections) == (50, 5, 20, 10)
    assert (e.limits.cpu_window, e.limits.cpu_burst_window) == (60, 5)
    assert e.grants == Grants(paths=[], hosts=[], exec=[])


def test_entry_keys_parse() -> None:
    e = PluginEntry.model_validate({"plugin_id": "x", "isolation": "process", "limits": {"memory_mb": 80},
                                    "grants": {"paths": ["/var/lib/x"], "hosts": ["a.example:80", "[::1]:9"]}})
    assert e.isolation is Isolation.PROCESS and e.limits.memory_mb == 80 and e.limits.connections == 10
    with pytest.raises(ValidationError, match="not an absolute path"):
        Grants(paths=["relative/dir"])
    with pytest.raises(ValidationError, match="port must be"):
        Grants(hosts=["a.example:99999"])
    with pytest.raises(ValidationError):
        Limits(memory_mb=0)
    with pytest.raises(ValidationError):
        PluginEntry.model_validate({"plugin_id": "x", "isolation": "container"})


def test_host_port() -> None:
    assert host_port("Example.COM") == ("example.com", None)
    assert host_port("h:8080") == ("h", 8080)
    assert host_port("[::1]:9") == ("::1", 9)
    assert host_port("::1") == ("::1", None)
    for bad in ("", ":80", "[::1", "[::1]x"):
        with pytest.raises(ValueError):
            host_port(bad)


def test_covers_names_each_request_beyond_the_grants() -> None:
    g = Grants(paths=["/var/lib/x"], hosts=["api.example", "db.example:5432"], exec=["/usr/bin/true"])
    ok = Grants(paths=["/var/lib/x/sub", "/var/lib/x"], hosts=["api.example:443", "db.example:5432"], exec=["/usr/bin/true"])
    assert g.covers(ok) == []
    bad = Grants(paths=["/var/lib/xy", "/etc"], hosts=["db.example:5433", "other.example"], exec=["/bin/sh"])
    assert g.covers(bad) == ["path /var/lib/xy", "path /etc", "host db.example:5433", "host other.example", "exec /bin/sh"]
    assert Grants(paths=["/"]).covers(Grants(paths=["/anything"])) == []


def test_limit_exceeded_carries_its_reason() -> None:
    from bridge.isolation import LimitExceeded, StopReason

    e = LimitExceeded(StopReason.MEMORY_LIMIT, "RSS 61 MiB over 50 MiB")
    assert (e.reason, e.detail, str(e)) == (StopReason.MEMORY_LIMIT, "RSS 61 MiB over 50 MiB", "memory_limit: RSS 61 MiB over 50 MiB")
