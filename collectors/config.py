"""The config models of the built-in collectors (``monitoring.metrics.system`` and
``monitoring.metrics.process``), apart from the collectors: validating a config imports these,
not psutil and the collectors' code (``bridge.registry.BUILTIN_PLUGINS`` names them).
"""

from __future__ import annotations

import fnmatch
import os

from pydantic import Field, model_validator

from bridge.api import CollectorConfig, PluginConfig

__all__ = [
    "ROOTFS_ENV",
    "DeviceFilter",
    "FilesystemTypeFilter",
    "GlobFilter",
    "InterfaceFilter",
    "MountpointFilter",
    "ProcessConfig",
    "ProcessMatch",
    "SystemConfig",
    "default_procfs_path",
    "default_rootfs_path",
]

# --------------------------------------------------------------------------- monitoring.metrics.system

class GlobFilter(PluginConfig):
    """A name passes if it matches an ``include`` glob (or ``include`` is empty) and no ``exclude`` glob.

    Globs are ``fnmatch`` patterns matched case-sensitively.
    """

    include: tuple[str, ...] = Field(default=(), description="globs a name must match one of; empty: every name")
    exclude: tuple[str, ...] = Field(default=(), description="globs that drop a name even if it is included")

    def allows(self, name: str) -> bool:
        if self.include and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)


class DeviceFilter(GlobFilter):
    """Disk devices for ``system.disk.*``, by kernel name (``sda``, ``nvme0n1``, ``loop0``)."""

    exclude: tuple[str, ...] = Field(
        default=("loop*", "ram*", "zram*", "fd*"),
        description="device globs left out; giving it replaces the defaults",
    )


class MountpointFilter(GlobFilter):
    """Mount points for ``system.filesystem.*``."""

    exclude: tuple[str, ...] = Field(
        default=(
            "/proc",
            "/proc/*",
            "/sys",
            "/sys/*",
            "/dev",
            "/dev/*",
            "/run/*",
            "/var/lib/docker/*",
            "/var/lib/containers/*",
            "/var/lib/kubelet/pods/*",
            "/snap/*",
        ),
        description="mount point globs left out; giving it replaces the defaults",
    )


class FilesystemTypeFilter(GlobFilter):
    """Filesystem types for ``system.filesystem.*``; the defaults leave out virtual filesystems."""

    exclude: tuple[str, ...] = Field(
        default=(
            "autofs",
            "binfmt_misc",
            "bpf",
            "cgroup",
            "cgroup2",
            "configfs",
            "debugfs",
            "devpts",
            "devtmpfs",
            "efivarfs",
            "fuse.lxcfs",
            "fusectl",
            "hugetlbfs",
            "mqueue",
            "nsfs",
            "overlay",
            "proc",
            "procfs",
            "pstore",
            "ramfs",
            "rpc_pipefs",
            "securityfs",
            "selinuxfs",
            "squashfs",
            "sysfs",
            "tmpfs",
            "tracefs",
        ),
        description="filesystem type globs left out; giving it replaces the defaults",
    )


class InterfaceFilter(GlobFilter):
    """Network interfaces for ``system.network.*``."""

    exclude: tuple[str, ...] = Field(
        default=("lo", "veth*"),
        description="interface globs left out; giving it replaces the defaults",
    )


def default_procfs_path() -> str:
    """``$PROCFS_PATH`` if set (a node agent mounts the host's /proc at e.g. /host/proc), else /proc."""
    return os.environ.get("PROCFS_PATH") or "/proc"



ROOTFS_ENV = "MONBRIDGE_ROOTFS"


def default_rootfs_path() -> str:
    """``$MONBRIDGE_ROOTFS`` if set (a node agent mounts the host's / at e.g. /host/root), else /."""
    return os.environ.get(ROOTFS_ENV) or "/"


class SystemConfig(CollectorConfig):
    devices: DeviceFilter = Field(default=DeviceFilter(), description="disks reported by system.disk.*")
    mountpoints: MountpointFilter = Field(
        default=MountpointFilter(), description="mount points reported by system.filesystem.*"
    )
    filesystem_types: FilesystemTypeFilter = Field(
        default=FilesystemTypeFilter(), description="filesystem types reported by system.filesystem.*"
    )
    interfaces: InterfaceFilter = Field(
        default=InterfaceFilter(), description="network interfaces reported by system.network.*"
    )
    procfs_path: str = Field(
        default_factory=default_procfs_path,
        min_length=1,
        description="where /proc is mounted (default: $PROCFS_PATH, else /proc)",
    )
    rootfs_path: str = Field(
        default_factory=default_rootfs_path,
        min_length=1,
        description=(
            "where the host's / is mounted (default: $MONBRIDGE_ROOTFS, else /). When it or procfs_path is"
            " not the default, system.filesystem.* covers the mounts of <procfs_path>/1/mounts (the host's"
            " init process), stat'ed at <rootfs_path>/<mount point> and reported under the host's mount point"
        ),
    )
    filesystem_timeout: float = Field(
        default=2.0,
        gt=0,
        description="seconds one mount's statfs may take; a mount that hangs (dead NFS) is skipped until it answers",
    )


# --------------------------------------------------------------------------- monitoring.metrics.process


class ProcessMatch(PluginConfig):
    """A process matches if every field given here matches (``fnmatch`` globs, case-sensitive)."""

    name: str | None = Field(default=None, description="glob on the executable name, e.g. 'python*'")
    cmdline: str | None = Field(default=None, description="glob on the command line, arguments joined by spaces")
    user: str | None = Field(default=None, description="glob on the owner's user name")

    @model_validator(mode="after")
    def _not_empty(self) -> ProcessMatch:
        if self.name is None and self.cmdline is None and self.user is None:
            raise ValueError("a match entry needs at least one of name, cmdline, user")
        return self


class ProcessConfig(CollectorConfig):
    match: tuple[ProcessMatch, ...] = Field(
        default=(),
        description="processes to report: those matching any entry; empty: every process (up to max_processes)",
    )
    max_processes: int = Field(default=500, ge=1, description="most processes reported per collection (lowest pids first)")
    procfs_path: str = Field(
        default_factory=default_procfs_path,
        min_length=1,
        description="where /proc is mounted (default: $PROCFS_PATH, else /proc)",
    )
