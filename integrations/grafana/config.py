"""The config of ``monitoring.integration.grafana``::

    - plugin_id: monitoring.integration.grafana
      config:
        url: https://grafana.example.com        # Grafana's root URL (a sub path too)
        token: ${GRAFANA_TOKEN}                 # a service account token (Editor on the folder)
        folder: {uid: monbridge, title: monbridge}
        dashboards: {enabled: true, families: [host, monbridge], overwrite: true}
        annotations: {enabled: true, tags: [monbridge], dashboard_uid: null, state_path: /var/lib/monbridge/grafana.json}
"""

from __future__ import annotations

import re

from pydantic import Field, SecretStr, field_validator

from bridge.api import HttpUrl, IntegrationConfig, PluginConfig

__all__ = ["AnnotationsConfig", "DashboardsConfig", "FolderConfig", "GrafanaConfig"]

_UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def _uid(v: str) -> str:
    if not _UID.match(v):
        raise ValueError("a Grafana uid is 1 to 40 letters, digits, '-' or '_'")
    return v


class FolderConfig(PluginConfig):
    uid: str = Field(default="monbridge", description="the folder's uid (looked up, created when missing)")
    title: str = Field(default="monbridge", min_length=1, max_length=255, description="the title of a folder created")

    _check_uid = field_validator("uid")(_uid)


class DashboardsConfig(PluginConfig):
    enabled: bool = Field(default=True, description="provision the dashboards of `monbridge grafana dashboards`")
    families: list[str] | None = Field(default=None, description="the plugin families to provision (default: all)")
    overwrite: bool = Field(default=True, description="replace a dashboard changed in Grafana (false: such a "
                                                      "dashboard is left alone and reported)")

    @field_validator("families")
    @classmethod
    def _families(cls, v: list[str] | None) -> list[str] | None:
        from integrations.grafana.catalog import FAMILIES

        known = [f.key for f in FAMILIES]
        unknown = [k for k in v or () if k not in known]
        if unknown:
            raise ValueError(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                             f"expected some of {', '.join(known)}")
        return v


class AnnotationsConfig(PluginConfig):
    enabled: bool = Field(default=True, description="write alert transitions as Grafana annotations")
    tags: list[str] = Field(default_factory=lambda: ["monbridge"], max_length=20,
                            description="tags of every annotation (the dashboards show the tag monbridge)")
    dashboard_uid: str | None = Field(default=None, description="the dashboard the annotations belong to "
                                                                "(default: the organization's, shown on every dashboard)")
    max_alerts: int = Field(default=10000, ge=1, le=1_000_000,
                            description="the most alerts whose annotation is followed; more are dropped (counted)")
    state_path: str | None = Field(default=None, description="a file keeping which annotation each alert has, so "
                                                             "an alert resolved after a restart still ends its region")

    @field_validator("dashboard_uid")
    @classmethod
    def _dashboard_uid(cls, v: str | None) -> str | None:
        return None if v is None else _uid(v)


class GrafanaConfig(IntegrationConfig):
    url: HttpUrl = Field(description="Grafana's root URL (with its sub path, if served under one)")
    token: SecretStr | None = Field(default=None, description="a service account token (Authorization: Bearer)")
    org_id: int | None = Field(default=None, ge=1, description="the organization (X-Grafana-Org-Id)")
    folder: FolderConfig = Field(default_factory=FolderConfig)
    dashboards: DashboardsConfig = Field(default_factory=DashboardsConfig)
    annotations: AnnotationsConfig = Field(default_factory=AnnotationsConfig)
    request_timeout: float = Field(default=10.0, gt=0, le=300, description="seconds one request may take")
    max_response_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20,
                                    description="the largest answer read from Grafana; a larger one is refused")
    backoff_initial: float = Field(default=1.0, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(default=60.0, gt=0, description="the longest wait between retries")
    max_requests_per_round: int = Field(default=200, ge=1, le=100_000,
                                        description="annotation requests sent in one alert round at most")
