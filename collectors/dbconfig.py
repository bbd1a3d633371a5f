"""The config models of the database collectors (``monitoring.metrics.postgresql``, ``.mysql``,
``.redis``), apart from the collectors: validating a config imports these, not the drivers.

A collector watches one target (``dsn`` with its ``password``/``password_file``/``tls`` beside it)
or many (``targets``). A password comes from the DSN, ``password`` (write ``${PG_PASSWORD}`` or
``${file:/run/secrets/pg}``: the config loader reads it and registers it as a secret) or
``password_file`` (read at every connection, so a rotated secret is picked up).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import ClassVar

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from bridge.api import CollectorConfig, PluginConfig

__all__ = ["DbCollectorConfig", "DbTarget", "DbTls", "MysqlConfig", "PostgresqlConfig", "RedisConfig"]


class DbTls(PluginConfig):
    """TLS towards the server. ``verify: false`` encrypts without checking the server's certificate."""

    ca_file: Path | None = Field(default=None, description="CA bundle the server's certificate is checked against")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM), for servers that ask for one")
    key_file: Path | None = Field(default=None, description="the client certificate's private key (PEM)")
    verify: bool = Field(default=True, description="check the server's certificate and host name")

    @model_validator(mode="after")
    def _pair(self) -> DbTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class DbTarget(PluginConfig):
    """One server: its DSN and the credentials and TLS settings that go with it."""

    schemes: ClassVar[tuple[str, ...]] = ()

    dsn: str = Field(
        validation_alias=AliasChoices("dsn", "url"),
        description="the server's URL, e.g. postgresql://monbridge@db:5432/postgres (a password in it is a secret)",
    )
    password: SecretStr | None = Field(default=None, description="the password (use ${VAR} or ${file:...})")
    password_file: Path | None = Field(default=None, description="a file holding the password, read at each connection")
    tls: DbTls | None = Field(default=None, description="connect with TLS (default: no TLS)")
    name: str | None = Field(default=None, max_length=200,
                             description="the target's name in logs and the db.instance attribute (default host:port)")

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        try:
            u = urllib.parse.urlsplit(v)
            u.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("not a URL (a bad port?)") from None
        if cls.schemes and u.scheme not in cls.schemes:
            raise ValueError(f"expected a URL starting {' or '.join(s + '://' for s in cls.schemes)}")
        if not u.hostname:
            raise ValueError("the URL names no host")
        return v

    @model_validator(mode="after")
    def _one_password(self) -> DbTarget:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self


class PostgresqlTarget(DbTarget):
    schemes: ClassVar[tuple[str, ...]] = ("postgresql", "postgres")


class MysqlTarget(DbTarget):
    schemes: ClassVar[tuple[str, ...]] = ("mysql", "mariadb")


class RedisTarget(DbTarget):
    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss")


class DbCollectorConfig(CollectorConfig):
    """One target (``dsn`` and the settings beside it) or several (``targets``), and the time bounds."""

    target_model: ClassVar[type[DbTarget]] = DbTarget

    dsn: str | None = Field(default=None, validation_alias=AliasChoices("dsn", "url"),
                            description="the one server watched (or use targets)")
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: DbTls | None = None
    targets: tuple[DbTarget, ...] = Field(default=(), description="several servers, each with its own settings")
    connect_timeout: float = Field(default=5.0, gt=0, description="seconds a connection (with TLS and login) may take")
    query_timeout: float = Field(
        default=5.0, gt=0,
        description="seconds one query may take; a slower one is cut, and the target reports up 0 for that collection",
    )

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str | None) -> str | None:
        """The one target's DSN, checked as its target model checks it."""
        return v if v is None else cls.target_model._dsn(v)

    @model_validator(mode="after")
    def _some_target(self) -> DbCollectorConfig:
        if self.dsn is None and not self.targets:
            raise ValueError("give dsn (one server) or targets (several)")
        if self.dsn is not None and self.targets:
            raise ValueError("give dsn or targets, not both")
        if self.dsn is None and (self.password or self.password_file or self.tls):
            raise ValueError("password, password_file and tls go with dsn; with targets, give them per target")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def all_targets(self) -> tuple[DbTarget, ...]:
        if self.dsn is None:
            return self.targets
        return (self.target_model.model_validate({"dsn": self.dsn, "password": self.password,
                                                  "password_file": self.password_file, "tls": self.tls}),)


class PostgresqlConfig(DbCollectorConfig):
    target_model: ClassVar[type[DbTarget]] = PostgresqlTarget
    targets: tuple[PostgresqlTarget, ...] = Field(default=(), description="several servers, each with its own settings")
    statements_limit: int = Field(default=20, ge=0, le=1000,
                                  description="pg_stat_statements: the top N statements by total time (0: none)")
    tables_limit: int = Field(default=200, ge=0, le=10000,
                              description="the largest N tables of the target's database reported (0: none)")


class MysqlConfig(DbCollectorConfig):
    target_model: ClassVar[type[DbTarget]] = MysqlTarget
    targets: tuple[MysqlTarget, ...] = Field(default=(), description="several servers, each with its own settings")
    schemas_limit: int = Field(default=200, ge=0, le=10000, description="the largest N schemas reported (0: none)")


class RedisConfig(DbCollectorConfig):
    target_model: ClassVar[type[DbTarget]] = RedisTarget
    targets: tuple[RedisTarget, ...] = Field(default=(), description="several servers, each with its own settings")
    databases_limit: int = Field(default=64, ge=0, le=10000,
                                 description="the first N databases holding keys reported (lowest numbers first)")
