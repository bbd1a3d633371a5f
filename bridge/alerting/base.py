"""``BaseProcessor``: an ``AlertProcessorPlugin`` whose hooks do nothing until a subclass says
otherwise: it passes alerts on unchanged and keeps its parsed config and the engine's context
(``AlertContext``, what the engine hands the ``attach`` hook)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bridge.api import Alert, AlertProcessorPlugin, PluginConfig
from bridge.delivery import REAL_CLOCK, Clock

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource

    from bridge.alerting.engine import AlertEngine
    from bridge.pipeline import Pipeline

__all__ = ["AlertContext", "BaseProcessor"]


@dataclass
class AlertContext:
    """What the engine offers a processor's ``attach`` hook (``bridge.api.AlertContextHook``)."""

    engine: AlertEngine
    pipeline: Pipeline | None
    resource: Resource


class BaseProcessor(AlertProcessorPlugin):
    def __init__(self) -> None:
        self.config: Any = None
        self.ctx: AlertContext | None = None

    async def initialize(self, config: Mapping[str, Any]) -> None:
        self.config = config if isinstance(config, PluginConfig) else self.parse_config(config)
        await self.setup()

    async def setup(self) -> None:
        """Prepare after the config is parsed (clients, files)."""

    def attach(self, ctx: AlertContext) -> None:
        """Called once by the engine with its context (the engine, the pipeline, the resource)."""
        self.ctx = ctx

    @property
    def timing(self) -> Clock:
        """The clock of the engine attached (its timers, waits and time), else the real one."""
        return self.ctx.engine.timing if self.ctx is not None else REAL_CLOCK

    async def process_alert(self, alert: Alert) -> Alert:
        return alert

    async def handle_acknowledgment(self, alert_id: str) -> None:
        return None

    async def handle_resolution(self, alert_id: str) -> None:
        return None

    async def shutdown(self) -> None:
        return None
