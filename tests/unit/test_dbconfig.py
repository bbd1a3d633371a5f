"""The database collectors' configs (collectors/dbconfig.py), targets (collectors/db.py) and tables."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.api import PluginError
from collectors.db import Target, client_tls_context
from collectors.dbconfig import DbTls, MysqlConfig, PostgresqlConfig, RedisConfig
from collectors.mysql import MYSQL_METRICS
from collectors.postgresql import POSTGRESQL_METRICS
from collectors.redis import REDIS_METRICS

README = Path(__file__).resolve().parents[2] / "README.md"


def _error(model: Any, config: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as e:
        model.model_validate(config)
    return str(e.value)


def test_one_dsn_with_its_password_is_one_target() -> None:
    cfg = PostgresqlConfig.model_validate({"dsn": "postgresql://monbridge@db:5432/postgres", "password": "pw"})
    (target,) = cfg.all_targets()
    assert target.dsn == "postgresql://monbridge@db:5432/postgres"
    assert target.password is not None and target.password.get_secret_value() == "pw"


def test_several_targets_and_redis_url() -> None:
    cfg = RedisConfig.model_validate({"targets": [{"url": "redis://a:6379/0"}, {"dsn": "rediss://b/1", "name": "b"}]})
    assert [t.dsn for t in cfg.all_targets()] == ["redis://a:6379/0", "rediss://b/1"]
    assert RedisConfig.model_validate({"url": "redis://cache:6379/0"}).all_targets()[0].dsn == "redis://cache:6379/0"


@pytest.mark.parametrize(("model", "config", "message"), [
    (PostgresqlConfig, {}, "give dsn (one server) or targets (several)"),
    (PostgresqlConfig, {"dsn": "postgresql://a/b", "targets": [{"dsn": "postgresql://c/d"}]}, "give dsn or targets, not both"),
    (PostgresqlConfig, {"targets": [{"dsn": "postgresql://c/d"}], "password": "x"}, "give them per target"),
    (PostgresqlConfig, {"dsn": "mysql://a/"}, "expected a URL starting postgresql:// or postgres://"),
    (MysqlConfig, {"targets": [{"dsn": "redis://a/"}]}, "targets.0.dsn"),
    (RedisConfig, {"url": "redis:///0"}, "the URL names no host"),
    (MysqlConfig, {"dsn": "mysql://a:99999999/"}, "not a URL (a bad port?)"),
    (MysqlConfig, {"dsn": "mysql://a/", "password": "x", "password_file": "/f"}, "give password or password_file"),
    (MysqlConfig, {"dsn": "mysql://a/", "tls": {"cert_file": "/c.pem"}}, "cert_file and key_file go together"),
    (RedisConfig, {"url": "redis://a/", "query_timeout": 0}, "query_timeout"),
])
def test_bad_configs_say_what_is_wrong(model: Any, config: dict[str, Any], message: str) -> None:
    assert message in _error(model, config)


def test_a_password_in_a_bad_dsn_is_not_quoted() -> None:
    text = _error(MysqlConfig, {"dsn": "postgresql://u:hunter2-secret@a/"})
    assert "hunter2-secret" not in text and "dsn" in text


def test_the_target_hides_its_password(tmp_path: Path) -> None:
    cfg = MysqlConfig.model_validate({"dsn": "mysql://mon%40itor:p%2Fw@db/app"})
    t = Target(cfg.all_targets()[0], "")
    assert (t.user, t.host, t.port, t.database, t.password()) == ("mon@itor", "db", None, "app", "p/w")
    assert "p/w" not in t.name and t.secrets() == ["p/w"]
    # password_file: read at each connection; an unreadable one names its config path
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    t = Target(MysqlConfig.model_validate({"targets": [{"dsn": "mysql://db:3307/", "password_file": str(secret)}]})
               .all_targets()[0], "targets[0]")
    assert t.password() == "from-file" and t.name == "db:3307"
    secret.write_text("rotated")
    assert t.password() == "rotated" and t.secrets() == ["rotated"]  # masked in what the collector logs
    secret.unlink()
    with pytest.raises(PluginError, match=r"targets\[0\]\.password_file .*pw: No such file"):
        t.password()


def test_tls_files_that_cannot_be_loaded_name_the_config_path(tmp_path: Path) -> None:
    assert client_tls_context(None, "") is None
    with pytest.raises(PluginError, match=r"^tls: FileNotFoundError"):  # the one dsn's
        client_tls_context(DbTls(ca_file=tmp_path / "missing.pem"), "")
    with pytest.raises(PluginError, match=r"targets\[2\]\.tls: FileNotFoundError"):
        client_tls_context(DbTls(ca_file=tmp_path / "missing.pem"), "targets[2]")
    ctx = client_tls_context(DbTls(verify=False), "")
    assert ctx is not None and not ctx.check_hostname


@pytest.mark.parametrize(("table", "prefix"), [(POSTGRESQL_METRICS, "postgresql."), (MYSQL_METRICS, "mysql."),
                                               (REDIS_METRICS, "redis.")])
def test_tables_have_unique_prefixed_names_each_in_the_readme(table: Any, prefix: str) -> None:
    names = [spec.name for spec in table]
    assert len(names) == len(set(names))
    assert all(n.startswith(prefix) for n in names)
    mapped = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", README.read_text(), re.MULTILINE))
    assert {*names, prefix + "up", prefix + "collector.errors"} <= mapped, "README's mapping table lacks a metric"
