"""What every notifier's config has (``NotifierConfig``) and the base URL field, apart from the
notifiers' code: validating a config imports this module, not the HTTP client, the outbox or the
delivery machinery (``bridge.notifiers`` is the public name of all of them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from bridge.alerting.model import Matcher, parse_matchers
from bridge.api import PluginConfig, http_url

__all__ = ["BaseUrl", "NotifierConfig", "check_http_url"]


def check_http_url(v: str) -> str:
    """``v`` if it is an http(s) URL with a host (``bridge.api.http_url``), a bare trailing slash
    dropped; else ValueError (for config validators)."""
    from urllib.parse import urlsplit

    return v.rstrip("/") if urlsplit(http_url(v)).path in ("", "/") else v


#: A notifier's base URL config field (checked and normalized by ``check_http_url``).
BaseUrl = Annotated[str, AfterValidator(check_http_url)]


class NotifierConfig(PluginConfig):
    """Settings every notifier has."""

    match: Any = Field(default=None, description="label matchers this notifier's alerts must satisfy: a mapping of "
                                         "equalities or a list of 'name=\"v\"', 'name=~\"re\"' (default: every alert)")
    send_resolved: bool = Field(default=True, description="also notify when a group's alerts resolve")
    timeout: float = Field(default=10.0, gt=0, description="seconds one delivery attempt may take")

    @field_validator("match")
    @classmethod
    def _match(cls, v: Any) -> Any:
        parse_matchers(v)  # raises ValueError with the matcher at fault
        return v

    def matchers(self) -> tuple[Matcher, ...]:
        return parse_matchers(self.match)
