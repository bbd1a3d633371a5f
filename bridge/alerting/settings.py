"""The ``alerting:`` section of the config: where alert state and the outbox live."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlertingSettings", "default_state_dir"]


def default_state_dir() -> Path:
    """``$MONBRIDGE_STATE_DIR``, else ``$XDG_STATE_HOME/monbridge``, else ``~/.local/state/monbridge``."""
    env = os.environ.get("MONBRIDGE_STATE_DIR", "").strip()
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "monbridge"


class AlertingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    state_dir: Path | None = Field(default=None, description="alert store, silences and notification log (default: "
                                                     "$MONBRIDGE_STATE_DIR, $XDG_STATE_HOME/monbridge, ~/.local/state/monbridge)")
    outbox_dir: Path | None = Field(default=None, description="pending notifications (default: <state_dir>/outbox)")
    external_url: str = Field(default="", description="the URL notifications link back to (webhook externalURL)")
    import_interval: float = Field(default=15.0, gt=0,
                                   description="seconds between integrations' import_alerts/export_alerts rounds")

    def resolved_state_dir(self) -> Path:
        return self.state_dir if self.state_dir is not None else default_state_dir()

    def resolved_outbox_dir(self) -> Path:
        return self.outbox_dir if self.outbox_dir is not None else self.resolved_state_dir() / "outbox"
