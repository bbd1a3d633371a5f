"""Plugin lifecycle states and the transitions allowed between them.

registered → initialized → running → stopped → shut down, as in the plugin specification;
``failed`` is where a plugin waits for its restart (back to initialized).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

__all__ = ["IllegalTransition", "Lifecycle", "PluginState"]


class PluginState(enum.StrEnum):
    REGISTERED = "registered"
    INITIALIZED = "initialized"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    SHUT_DOWN = "shut_down"


_ALLOWED: dict[PluginState, frozenset[PluginState]] = {
    PluginState.REGISTERED: frozenset({PluginState.INITIALIZED, PluginState.FAILED, PluginState.SHUT_DOWN}),
    PluginState.INITIALIZED: frozenset({PluginState.RUNNING, PluginState.FAILED, PluginState.SHUT_DOWN}),
    PluginState.RUNNING: frozenset({PluginState.STOPPED, PluginState.FAILED}),
    PluginState.STOPPED: frozenset({PluginState.RUNNING, PluginState.SHUT_DOWN}),
    PluginState.FAILED: frozenset({PluginState.INITIALIZED, PluginState.SHUT_DOWN}),
    PluginState.SHUT_DOWN: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


class Lifecycle:
    """The state of one plugin; ``to()`` refuses a transition the lifecycle does not allow."""

    __slots__ = ("plugin_id", "state", "on_change")

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self.state = PluginState.REGISTERED
        #: Called after every transition (the supervisor's: parts that use running plugins take them up).
        self.on_change: Callable[[], None] | None = None

    def can(self, new: PluginState) -> bool:
        return new in _ALLOWED[self.state]

    def to(self, new: PluginState) -> None:
        if new not in _ALLOWED[self.state]:
            allowed = ", ".join(sorted(s.value for s in _ALLOWED[self.state])) or "none"
            raise IllegalTransition(
                f"plugin {self.plugin_id}: cannot go from {self.state.value} to {new.value} (allowed: {allowed})"
            )
        self.state = new
        if self.on_change is not None:
            self.on_change()
