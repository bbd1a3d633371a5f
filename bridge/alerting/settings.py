"""The ``alerting:`` section of the config, and the state directory its alert state lives in.

Alert state (the alert store, silences, notification log, ticket state and the outbox) belongs
to the config that produced it. An agent whose config uses no alerting (no ``alerting:``
section, no alert processor plugin) keeps alerts in memory only: it writes no state and
restores none. One that does uses ``alerting.state_dir``, else ``$MONBRIDGE_STATE_DIR``, else
a directory of its own config file under ``$XDG_STATE_HOME/monbridge`` (``~/.local/state``
without it), named after the file and a hash of its absolute path. The directory is locked
while an agent uses it (``StateDirLock``): a second agent on it refuses to start.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AlertingSettings", "LOCK_FILE", "StateDirInUse", "StateDirLock", "config_state_dir", "state_home"]

#: The lock file in a state directory; it holds the pid of the agent using the directory.
LOCK_FILE = "monbridge.lock"


def state_home() -> Path:
    """``$XDG_STATE_HOME/monbridge``, else ``~/.local/state/monbridge``."""
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "monbridge"


def config_state_dir(config_source: str | None) -> Path:
    """The state directory of the config file ``config_source`` (None: the embedded config) when
    neither ``alerting.state_dir`` nor ``$MONBRIDGE_STATE_DIR`` names one: ``<stem>-<hash of the
    file's absolute path>`` under ``state_home()``, so each config file has its own."""
    env = os.environ.get("MONBRIDGE_STATE_DIR", "").strip()
    if env:
        return Path(env)
    if config_source is None:
        return state_home() / "default"
    path = os.path.abspath(config_source)
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(path).stem)[:40] or "config"
    return state_home() / f"{stem}-{digest}"


class StateDirInUse(OSError):
    """Another process holds the lock of a state directory."""


class StateDirLock:
    """An exclusive ``flock`` on ``<directory>/monbridge.lock``, held until ``release()`` (or the
    process ends: the kernel drops it, so a crash never leaves a stale lock)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None

    @classmethod
    def acquire(cls, directory: Path) -> StateDirLock:
        """Create ``directory`` if needed and lock it; raise StateDirInUse naming the directory
        and the holder's pid when another process has it, OSError when it cannot be created."""
        lock = cls(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise StateDirInUse(f"the alert state directory {directory} is in use by another monbridge "
                                f"(pid {holder}, lock file {path}); give each agent its own alerting.state_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        lock._fd = fd
        return lock

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class AlertingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    state_dir: Path | None = Field(default=None, description="alert store, silences and notification log (default: "
                                                     "$MONBRIDGE_STATE_DIR, else a directory of this config file "
                                                     "under $XDG_STATE_HOME/monbridge or ~/.local/state/monbridge)")
    outbox_dir: Path | None = Field(default=None, description="pending notifications (default: <state_dir>/outbox)")
    external_url: str = Field(default="", description="the URL notifications link back to (webhook externalURL)")
    import_interval: float = Field(default=15.0, gt=0,
                                   description="seconds between integrations' import_alerts/export_alerts rounds")

    def resolved_outbox_dir(self) -> Path | None:
        """Where pending notifications are kept; None (memory only) without a state directory."""
        if self.outbox_dir is not None:
            return self.outbox_dir
        return self.state_dir / "outbox" if self.state_dir is not None else None
