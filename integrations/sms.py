"""``monitoring.alerts.sms``: alert groups as SMS through Twilio's Messages REST API.

``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json``, form-encoded ``To``,
``From`` (or ``MessagingServiceSid``) and ``Body``, HTTP basic auth with the account SID and
auth token, one message per recipient. A recipient that already got a notification is not
messaged again when another recipient's failure makes the notification retry, across a
restart too (``sms.json`` in the state directory).

Config::

    account_sid: "AC..."
    auth_token: "${TWILIO_AUTH_TOKEN}"     # secret
    from: "+15005550006"                    # or messaging_service_sid: "MG..."
    to: ["+15551234567"]
    match: {severity: critical}             # recipients per route: one sms notifier per route
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.api import PluginConfig, PluginMetadata, PluginType
from bridge.notifiers import BaseUrl, HttpNotifier, Notification, NotifierConfig, TicketState

if TYPE_CHECKING:
    from bridge.notifiers import AlertContext

__all__ = ["SmsConfig", "TwilioSmsNotifier", "sms_body"]

PLUGIN_ID = "monitoring.alerts.sms"
MAX_BODY = 1600  # Twilio's limit for one message body
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class SmsConfig(NotifierConfig):
    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$", description="the Twilio account SID (AC...)")
    auth_token: SecretStr
    from_: str | None = Field(default=None, alias="from", description="sending number, E.164")
    messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
    to: list[str] = Field(min_length=1, description="recipient numbers, E.164 (+15551234567)")
    base_url: BaseUrl = Field(default="https://api.twilio.com", description="the API's base URL")

    @field_validator("to")
    @classmethod
    def _e164(cls, v: list[str]) -> list[str]:
        for n in v:
            if not _E164.match(n):
                raise ValueError(f"{n!r} is not an E.164 number (+ and 7 to 15 digits)")
        return v

    @model_validator(mode="after")
    def _sender(self) -> SmsConfig:
        if (self.from_ is None) == (self.messaging_service_sid is None):
            raise ValueError("set exactly one of from and messaging_service_sid")
        return self


def sms_body(n: Notification) -> str:
    parts = [n.title()]
    for a in n.alerts:
        summary = a.annotations.get("summary") or a.annotations.get("description") or ""
        parts.append(f"{a.name} {a.state.value}" + (f": {summary}" if summary else ""))
    text = "\n".join(parts)
    return text if len(text) <= MAX_BODY else text[: MAX_BODY - 1] + "…"


class TwilioSmsNotifier(HttpNotifier):
    config_model: ClassVar[type[PluginConfig]] = SmsConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "SMS (Twilio)", "0.1.0", "monbridge", "alert groups as SMS via Twilio",
                              PluginType.ALERT_PROCESSOR)

    async def setup(self) -> None:
        await super().setup()
        self._progress = TicketState(None)  # notification key -> {"sent": [numbers already messaged]}

    def attach(self, ctx: AlertContext) -> None:
        self._progress = TicketState(ctx.engine.state_path("sms.json"))

    async def send(self, notification: Notification) -> None:
        cfg: SmsConfig = self.config
        url = f"{cfg.base_url}/2010-04-01/Accounts/{cfg.account_sid}/Messages.json"
        auth = (cfg.account_sid, cfg.auth_token.get_secret_value())
        body = sms_body(notification)
        sent = list((self._progress.get(notification.key) or {}).get("sent", []))
        for number in cfg.to:
            if number in sent:
                continue
            form = {"To": number, "Body": body}
            if cfg.from_ is not None:
                form["From"] = cfg.from_
            else:
                form["MessagingServiceSid"] = cfg.messaging_service_sid or ""
            await self.client.request("twilio", "POST", url, form=form, basic_auth=auth)
            sent.append(number)
            self._progress.put(notification.key, sent=sent)
        self._progress.drop(notification.key)
