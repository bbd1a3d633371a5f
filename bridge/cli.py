"""The ``monbridge`` command: run, validate, plugins, test.

Only click is imported up front: each command imports what it needs (``--version`` loads
nothing more, ``validate`` neither the runtime nor the alert engine), and the ``alerts``
commands are imported when named.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from bridge import __version__

if TYPE_CHECKING:
    from bridge.config import LoadedConfig

EXIT_CONFIG = 2

_CONFIG_HELP = "YAML or JSON config file (default: the embedded config: system metrics on /metrics at 127.0.0.1:9464)"


def _registry() -> Any:
    from bridge.registry import PluginRegistry

    return PluginRegistry().discover()


def _load_or_exit(path: str | None, registry: Any, listen: str | None = None) -> LoadedConfig:
    from bridge.config import ConfigError, load_config, parse_listen

    try:
        loaded = load_config(path, registry)
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(EXIT_CONFIG)
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as e:
            click.echo(f"error: --listen {listen!r}: {e}", err=True)
            sys.exit(EXIT_CONFIG)
        server = loaded.model.server.model_copy(update={"listen": listen})
        loaded.model = loaded.model.model_copy(update={"server": server})
    return loaded


class _Commands(click.Group):
    """The commands, those of other modules imported only when named (or listed by ``--help``)."""

    lazy = {"alerts": ("bridge.alerting.cli", "alerts"), "plugin": ("bridge.plugincli", "plugin")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module, attr = self.lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


_Commands.lazy["check"] = ("integrations.nagios.check", "check")  # monbridge as a Nagios plugin
_Commands.lazy["grafana"] = ("integrations.grafana.cli", "grafana")  # Grafana dashboards


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="monbridge")
def main() -> None:
    """monbridge: collect, convert and forward metrics and alerts.

    \b
    Quick start:
      monbridge run                       host metrics on http://127.0.0.1:9464/metrics
      monbridge test                      run each plugin once and print what it did
      monbridge validate --config F       check a config file (exit 2 when invalid)
      monbridge plugins                   installed plugins by type
      monbridge config default            print the embedded default config
    """


@main.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@click.option("--listen", help="HOST:PORT for the HTTP server, overriding server.listen")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text is logfmt (key=value); json is one object per line")
@click.option("--shard-index", type=click.IntRange(min=0), envvar="MONBRIDGE_SHARD_INDEX",
              help="this replica's shard (0-based) when scraping is split across replicas "
                   "[env MONBRIDGE_SHARD_INDEX; default: the pod ordinal at the end of HOSTNAME]")
@click.option("--shard-count", type=click.IntRange(min=1), envvar="MONBRIDGE_SHARD_COUNT",
              help="how many replicas share the scrape targets (each scrapes the targets whose address "
                   "hashes, as Prometheus' hashmod, to its shard) [env MONBRIDGE_SHARD_COUNT]")
def run(config_path: str | None, listen: str | None, log_level: str, log_format: str,
        shard_index: int | None, shard_count: int | None) -> None:
    """Run monbridge until SIGTERM or SIGINT; SIGHUP (or POST /-/reload) reloads the config.

    An invalid config exits with status 2 and says where the problem is; on reload it is
    refused and the running config stays.
    """
    import asyncio
    import logging

    from bridge.config import load_config
    from bridge.logs import setup_logging
    from bridge.runtime import Runtime

    if shard_index is not None and shard_count is None:
        raise click.UsageError("--shard-index needs --shard-count")
    if shard_count is not None:
        if shard_index is not None and shard_index >= shard_count:
            raise click.UsageError(f"--shard-index {shard_index} must be below --shard-count {shard_count}")
        # The Prometheus plugin reads its shard from the environment (a StatefulSet pod without
        # --shard-index takes its ordinal from HOSTNAME).
        os.environ["MONBRIDGE_SHARD_COUNT"] = str(shard_count)
        if shard_index is not None:
            os.environ["MONBRIDGE_SHARD_INDEX"] = str(shard_index)
    setup_logging(log_level, log_format)
    registry = _registry()
    loaded = _load_or_exit(config_path, registry, listen)

    def reload_config() -> LoadedConfig:
        new = load_config(config_path, registry)
        if listen is not None:
            new.model = new.model.model_copy(
                update={"server": new.model.server.model_copy(update={"listen": listen})})
        return new

    async def main_async() -> None:
        rt = Runtime(loaded, registry, reload_config=reload_config)
        await rt.run()

    # Not asyncio.run: on leaving, it joins the default executor's threads, and one blocked in a
    # hung backend's socket (an export cannot be interrupted) would hold the process past the
    # 5 s a graceful stop promises. Every plugin has been shut down when main_async returns.
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main_async())
    except OSError as e:
        logging.getLogger("monbridge").error("cannot start: %s", e)
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@contextlib.contextmanager
def _without_pydantic_plugins() -> Iterator[None]:
    """Models built in this block look for no pydantic plugin (observers of validation, such as
    tracers): looking reads every installed distribution's metadata, a third of what checking a
    config costs, and the module that looks (``pydantic.plugin._loader``) imports
    ``importlib.metadata`` (email, zipfile, csv, socket...), another sixth: here pydantic finds a
    stand-in for it that names no plugin. Nothing is cached meanwhile, so models built later look
    as usual (with the real module); a value the user gave ``PYDANTIC_DISABLE_PLUGINS`` is kept."""
    name = "PYDANTIC_DISABLE_PLUGINS"
    if name in os.environ:
        yield
        return
    loader = "pydantic.plugin._loader"
    stand_in = None
    if loader not in sys.modules:
        import types

        stand_in = types.ModuleType(loader, "No pydantic plugins (monbridge validate)")
        stand_in.get_plugins = tuple  # type: ignore[attr-defined]  # get_plugins() -> () : none
        sys.modules[loader] = stand_in
    os.environ[name] = "__all__"
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if stand_in is not None and sys.modules.get(loader) is stand_in:
            del sys.modules[loader]


@main.command()
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), required=True,
              help="YAML or JSON config file to check")
def validate(config_path: str) -> None:
    """Check a config file: syntax, variables, every plugin's config. Exit 2 when invalid."""
    with _without_pydantic_plugins():
        loaded = _load_or_exit(config_path, _registry())
    n = len(loaded.enabled_plugins)
    click.echo(f"{config_path}: valid ({n} enabled plugin{'s' if n != 1 else ''}, "
               f"listen {loaded.model.server.listen})")


@main.command()
def plugins() -> None:
    """List installed plugins by type: id, version, distribution (the package that installed it), description."""
    from bridge.api import PluginType

    registry = _registry()
    for ptype in PluginType:
        ids = registry.get_plugin_ids_by_type(ptype)
        click.echo(f"{ptype.value} ({ptype.entry_point_group}):")
        if not ids:
            click.echo("  (none)")
        for pid in ids:
            entry = registry.entry(pid)
            dist = entry.distribution or "(registered in-process)"
            try:
                meta = entry.get().metadata()
                click.echo(f"  {pid:<36} {meta.version:<10} {dist:<28} {meta.description}")
            except Exception as e:  # noqa: BLE001 - a broken plugin is listed, not fatal
                click.echo(f"  {pid:<36} {'?':<10} {dist:<28} failed to load: {type(e).__name__}: {e}")


@main.group(name="config")
def config_cmd() -> None:
    """The config: print the embedded default (a start for your own)."""


@config_cmd.command(name="default")
def config_default() -> None:
    """Print the embedded default config, the one `monbridge run` uses without --config
    (with OTEL_EXPORTER_OTLP_ENDPOINT set, including its OTLP push)."""
    from bridge.config import default_config_text

    click.echo(default_config_text(), nl=False)


@main.command(name="test")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), help=_CONFIG_HELP)
@click.option("--plugin", "plugin_ids", multiple=True,
              help="only this plugin (repeatable); it need not be enabled in the config")
@click.option("--send", is_flag=True,
              help="integrations export their batch and notifiers send their notification (default: only shown)")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
              show_default=True)
def test_cmd(config_path: str | None, plugin_ids: tuple[str, ...], send: bool, log_level: str) -> None:
    """Run each plugin once and print what it did, then exit (like telegraf --test).

    \b
    collector         collects once; prints the metrics
    integration       runs one import round (series per target, errors with their line), then
                      shows each export sink's destination and payload for one round's batch
                      (the config's enabled collectors and the import); --send exports it
    alert processor   is given a sample alert: passed on, changed or suppressed; a notifier
                      shows the request or message it would send (secrets hidden); --send sends it

    Exit status 1 when a plugin's round failed (a target down, an export or send refused).
    """
    import asyncio

    from bridge.config import PluginEntry
    from bridge.logs import setup_logging
    from bridge.plugintest import run as run_tests

    setup_logging(log_level, "text")
    registry = _registry()
    loaded = _load_or_exit(config_path, registry)
    entries = {p.plugin_id: p for p in loaded.model.plugins}
    wanted = list(plugin_ids) or [p.plugin_id for p in loaded.enabled_plugins]
    for pid in wanted:
        if pid in entries:
            continue
        try:
            cls = registry.entry(pid).plugin_class()
        except LookupError as e:
            click.echo(f"error: --plugin: {e}", err=True)
            sys.exit(EXIT_CONFIG)
        entries[pid] = PluginEntry(plugin_id=pid)
        try:
            loaded.plugin_configs[pid] = cls.config_model.model_validate({})
        except ValueError as e:  # pydantic's ValidationError: a setting without a default
            missing = ", ".join(".".join(map(str, x["loc"])) for x in getattr(e, "errors", list)())
            click.echo(f"error: --plugin {pid}: not in the config, and its config has settings without a default "
                       f"({missing or e}): give it an entry in --config's plugins", err=True)
            sys.exit(EXIT_CONFIG)
        loaded.raw_plugin_configs[pid] = {}

    failed = asyncio.run(run_tests(registry, loaded, wanted, send, click.echo, lambda s: click.echo(s, err=True)))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
