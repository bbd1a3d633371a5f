"""``monitoring.alerts.email``: alert groups as email over SMTP (aiosmtplib), text and HTML.

STARTTLS (``starttls: true``) or implicit TLS (``tls: true``, port 465), optional login. The
message's ``Message-ID`` is derived from the notification's dedup key, so a repeat caused by a
crash between delivery and its bookkeeping is recognisable as the same message.

Config::

    smtp: "smtp.example.org:587"
    from: "monbridge@example.org"
    to: ["oncall@example.org"]
    starttls: true
    username: monbridge
    password: "${SMTP_PASSWORD}"     # secret
    ca_file: /etc/ssl/smtp-ca.pem    # to verify a server with its own CA
"""

from __future__ import annotations

import html
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.api import AlertState, PluginConfig, PluginMetadata, PluginType
from bridge.helpers import parse_listen
from bridge.notifiers import (
    DeliveryError,
    Notification,
    Notifier,
    NotifierConfig,
    PermanentDeliveryError,
    rfc3339,
)

__all__ = ["EmailConfig", "EmailNotifier", "render_email"]

PLUGIN_ID = "monitoring.alerts.email"


class EmailConfig(NotifierConfig):
    smtp: str = Field(description="HOST:PORT of the SMTP server")
    from_: str = Field(alias="from", description="the sender address")
    to: list[str] = Field(min_length=1, description="recipient addresses")
    starttls: bool = Field(default=True, description="upgrade the connection with STARTTLS (required when true)")
    tls: bool = Field(default=False, description="implicit TLS from the first byte (SMTPS, port 465)")
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = Field(default=None, description="PEM CA bundle to verify the server (default: system CAs)")
    subject_prefix: str = ""

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, v: str) -> str:
        parse_listen(v)
        return v

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for a in v:
            if "@" not in a:
                raise ValueError(f"{a!r} is not an email address")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> EmailConfig:
        if self.tls and self.starttls:
            raise ValueError("tls (implicit TLS) and starttls exclude each other; set one")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


def render_email(n: Notification, cfg: EmailConfig) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"{cfg.subject_prefix}{n.title()}"
    msg["From"] = cfg.from_
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = formatdate(n.created_at or None, usegmt=True)
    msg["Message-ID"] = f"<{n.key}@monbridge>"
    msg["X-Monbridge-Group-Key"] = n.group_key
    lines = [n.title(), ""]
    rows = []
    for a in n.alerts:
        state = "RESOLVED" if a.state is AlertState.RESOLVED else a.state.value.upper()
        labels = ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))
        lines += [f"[{state}] {a.name} ({a.severity}) since {rfc3339(a.starts_at)}", f"  labels: {labels}"]
        lines += [f"  {k}: {v}" for k, v in sorted(a.annotations.items())]
        lines.append("")
        notes = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in sorted(a.annotations.items()))
        rows.append(f"<tr><td>{state}</td><td>{html.escape(a.name)}</td><td>{html.escape(a.severity)}</td>"
                    f"<td>{rfc3339(a.starts_at)}</td><td>{html.escape(labels)}</td><td><ul>{notes}</ul></td></tr>")
    if n.external_url:
        lines.append(f"Source: {n.external_url}")
    msg.set_content("\n".join(lines))
    msg.add_alternative(
        f"<html><body><h2>{html.escape(n.title())}</h2><table border=\"1\" cellpadding=\"4\">"
        "<tr><th>State</th><th>Alert</th><th>Severity</th><th>Since</th><th>Labels</th><th>Annotations</th></tr>"
        + "".join(rows) + "</table></body></html>", subtype="html")
    return msg


class EmailNotifier(Notifier):
    config_model: ClassVar[type[PluginConfig]] = EmailConfig
    plugin_id = PLUGIN_ID

    def metadata(self) -> PluginMetadata:
        return PluginMetadata(PLUGIN_ID, "Email", "0.1.0", "monbridge", "alert groups as email over SMTP",
                              PluginType.ALERT_PROCESSOR)

    async def preview(self, notification: Notification) -> list[str]:
        """The message ``send`` would deliver and where (``bridge.api.NotificationPreviewHook``)."""
        cfg: EmailConfig = self.config
        how = "TLS" if cfg.tls else "STARTTLS" if cfg.starttls else "plain"
        login = f", login {cfg.username}" if cfg.username else ""
        msg = render_email(notification, cfg)
        text = msg.get_body(("plain",))
        return [f"would send over SMTP to {cfg.smtp} ({how}{login}): {len(msg.as_bytes())} bytes",
                *(f"  {k}: {v}" for k, v in msg.items() if k.lower() != "content-type"),
                "", *(f"  {line}" for line in (text.get_content() if text is not None else "").splitlines())]

    async def send(self, notification: Notification) -> None:
        import aiosmtplib

        cfg: EmailConfig = self.config
        host, port = parse_listen(cfg.smtp)
        ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        try:
            await aiosmtplib.send(
                render_email(notification, cfg), hostname=host, port=port, use_tls=cfg.tls,
                start_tls=cfg.starttls, tls_context=ctx if (cfg.tls or cfg.starttls) else None,
                username=cfg.username, password=cfg.password.get_secret_value() if cfg.password else None,
                timeout=cfg.timeout,
            )
        except aiosmtplib.SMTPAuthenticationError as e:
            raise PermanentDeliveryError(f"SMTP {cfg.smtp}: authentication failed: {e.code}") from None
        except aiosmtplib.SMTPResponseException as e:
            err = f"SMTP {cfg.smtp}: {e.code} {e.message}"
            raise (PermanentDeliveryError(err) if 500 <= e.code < 600 else DeliveryError(err)) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
            raise DeliveryError(f"SMTP {cfg.smtp}: {type(e).__name__}: {e}") from None
