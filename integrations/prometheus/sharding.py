"""Which replica scrapes which target: ``hashmod`` of the target's address, as Prometheus shards.

A target belongs to shard ``shard_of(address, count)``; the same split in a Prometheus config is

    relabel_configs:
      - source_labels: [__address__]
        action: hashmod
        modulus: <count>
        target_label: __tmp_shard
      - source_labels: [__tmp_shard]
        action: keep
        regex: <index>

Each target's shard depends on its address alone, so adding or removing a target never moves
another one; changing the shard count does.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping

from integrations.prometheus.relabel import hashmod

__all__ = ["ShardConfigError", "shard_from_env", "shard_of", "target_address"]

INDEX_VAR = "MONBRIDGE_SHARD_INDEX"
COUNT_VAR = "MONBRIDGE_SHARD_COUNT"
_ORDINAL = re.compile(r".+-([0-9]+)\Z")


class ShardConfigError(ValueError):
    """The sharding environment variables are inconsistent or malformed."""


def target_address(target_url_or_address: str) -> str:
    """The ``__address__`` Prometheus would have for a target: ``host:port`` as written in the
    config; for a URL, its host and port (user info dropped)."""
    if "://" not in target_url_or_address:
        return target_url_or_address
    netloc = urllib.parse.urlsplit(target_url_or_address).netloc
    return netloc.rpartition("@")[2]


def shard_of(target_url_or_address: str, shard_count: int) -> int:
    """The shard (0 .. shard_count-1) that scrapes this target."""
    if isinstance(shard_count, bool) or not isinstance(shard_count, int) or shard_count < 1:
        raise ValueError("shard_count must be a positive integer")
    return hashmod(target_address(target_url_or_address), shard_count)


def _parse_int(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name].strip()
    if not raw.isascii() or not raw.isdigit():
        raise ShardConfigError(f"{name} must be a non-negative integer")
    return int(raw)


def shard_from_env(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``(index, count)`` of this replica, or None when sharding is not configured.

    ``MONBRIDGE_SHARD_INDEX`` and ``MONBRIDGE_SHARD_COUNT`` when both are set; with only the
    count, the index is the pod ordinal at the end of ``HOSTNAME`` (``<name>-<ordinal>``, as a
    StatefulSet names its pods). Empty variables count as unset. Raises ShardConfigError when
    the variables are malformed or inconsistent.
    """
    has_index = bool(environ.get(INDEX_VAR, "").strip())
    has_count = bool(environ.get(COUNT_VAR, "").strip())
    if not has_count:
        if has_index:
            raise ShardConfigError(f"{INDEX_VAR} is set but {COUNT_VAR} is not: set both, or neither to disable sharding")
        return None
    count = _parse_int(environ, COUNT_VAR)
    if count < 1:
        raise ShardConfigError(f"{COUNT_VAR} must be at least 1")
    if has_index:
        index = _parse_int(environ, INDEX_VAR)
        source = INDEX_VAR
    else:
        hostname = environ.get("HOSTNAME", "").strip()
        m = _ORDINAL.match(hostname)
        if not m:
            raise ShardConfigError(
                f"{COUNT_VAR} is set without {INDEX_VAR}, and HOSTNAME "
                f"{'is not set' if not hostname else 'does not end in -<ordinal>'}: set {INDEX_VAR}, or run as a "
                "StatefulSet pod (named <name>-<ordinal>)"
            )
        index = int(m.group(1))
        source = "the pod ordinal in HOSTNAME"
    if index >= count:
        raise ShardConfigError(f"shard index {index} (from {source}) is not below {COUNT_VAR}={count}")
    return index, count
