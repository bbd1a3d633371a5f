"""Sharding: hashmod of the address, complete and disjoint splits, stable as targets come and go."""

from __future__ import annotations

import pytest

from integrations.prometheus.relabel import RelabelConfig, Relabeler, hashmod
from integrations.prometheus.sharding import ShardConfigError, shard_from_env, shard_of

TARGETS = [f"10.0.{i // 250}.{i % 250}:9100" for i in range(200)]


def test_shard_is_prometheus_hashmod_of_address():
    relabeler = Relabeler([RelabelConfig(source_labels=["__address__"], action="hashmod", modulus=3, target_label="s")])
    for target in TARGETS[:50]:
        out = relabeler.apply({"__address__": target})
        assert out is not None and shard_of(target, 3) == int(out["s"]) == hashmod(target, 3)


def test_url_uses_host_and_port():
    assert shard_of("http://10.0.0.1:9100/metrics", 7) == shard_of("10.0.0.1:9100", 7)
    assert shard_of("https://user:pw@[::1]:9100/m?x=1", 5) == shard_of("[::1]:9100", 5)
    assert shard_of("http://node/metrics", 5) == hashmod("node", 5)


@pytest.mark.parametrize("count", [2, 3])
def test_split_is_complete_disjoint_and_balanced(count):
    shards = [[t for t in TARGETS if shard_of(t, count) == i] for i in range(count)]
    assert sorted(t for shard in shards for t in shard) == sorted(TARGETS)  # complete, and no target twice
    assert all(len(shard) > len(TARGETS) / count / 2 for shard in shards)  # every shard gets a fair part


@pytest.mark.parametrize("count", [2, 3])
def test_adding_a_target_moves_no_other(count):
    before = {t: shard_of(t, count) for t in TARGETS}
    grown = [*TARGETS, "new-host:9100", "10.9.9.9:9100"]
    after = {t: shard_of(t, count) for t in grown}
    assert {t: after[t] for t in TARGETS} == before
    assert all(0 <= after[t] < count for t in grown)


def test_single_shard_and_invalid_counts():
    assert {shard_of(t, 1) for t in TARGETS} == {0}
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError):
            shard_of("a:1", bad)  # type: ignore[arg-type]


def test_env_explicit():
    assert shard_from_env({"MONBRIDGE_SHARD_INDEX": "1", "MONBRIDGE_SHARD_COUNT": "3", "HOSTNAME": "mb-2"}) == (1, 3)
    assert shard_from_env({"MONBRIDGE_SHARD_INDEX": " 0 ", "MONBRIDGE_SHARD_COUNT": "1"}) == (0, 1)


def test_env_statefulset_ordinal():
    assert shard_from_env({"MONBRIDGE_SHARD_COUNT": "3", "HOSTNAME": "monbridge-shard-2"}) == (2, 3)
    assert shard_from_env({"MONBRIDGE_SHARD_COUNT": "12", "HOSTNAME": "mb-10"}) == (10, 12)


def test_env_unset_is_none():
    assert shard_from_env({}) is None
    assert shard_from_env({"HOSTNAME": "mb-1"}) is None
    assert shard_from_env({"MONBRIDGE_SHARD_COUNT": "", "MONBRIDGE_SHARD_INDEX": ""}) is None


@pytest.mark.parametrize(("env", "message"), [
    ({"MONBRIDGE_SHARD_INDEX": "1"}, "MONBRIDGE_SHARD_INDEX is set but MONBRIDGE_SHARD_COUNT is not"),
    ({"MONBRIDGE_SHARD_COUNT": "three"}, "MONBRIDGE_SHARD_COUNT must be a non-negative integer"),
    ({"MONBRIDGE_SHARD_COUNT": "0", "MONBRIDGE_SHARD_INDEX": "0"}, "MONBRIDGE_SHARD_COUNT must be at least 1"),
    ({"MONBRIDGE_SHARD_COUNT": "2", "MONBRIDGE_SHARD_INDEX": "-1"}, "MONBRIDGE_SHARD_INDEX must be a non-negative integer"),
    ({"MONBRIDGE_SHARD_COUNT": "2", "MONBRIDGE_SHARD_INDEX": "2"}, "shard index 2 (from MONBRIDGE_SHARD_INDEX) is not below"),
    ({"MONBRIDGE_SHARD_COUNT": "2"}, "HOSTNAME is not set"),
    ({"MONBRIDGE_SHARD_COUNT": "2", "HOSTNAME": "monbridge"}, "HOSTNAME does not end in -<ordinal>"),
    ({"MONBRIDGE_SHARD_COUNT": "2", "HOSTNAME": "mb-5"}, "shard index 5 (from the pod ordinal in HOSTNAME) is not below"),
])
def test_env_errors(env, message):
    with pytest.raises(ShardConfigError) as e:
        shard_from_env(env)
    assert message in str(e.value)
