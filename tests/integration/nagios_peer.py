"""A real Nagios 4 (Debian's ``nagios4``) for the Nagios tests and benchmark: its own main config
in a directory of the test's, run in the foreground, read through its ``status.dat``.

``NagiosConfig`` writes ``nagios.cfg`` and one objects file: a host, and services given as
(description, command line) with their check interval, retry interval and attempts in seconds
(``interval_length=1``). The external command file (``command_file``, for passive results) is
always enabled; ``nsca`` configs for Debian's ``nsca`` daemon can be added beside it with
``nsca_config``. ``nagios4 -v`` validates the config before the server starts.

Paths of the packages: ``NAGIOS_BIN`` (``/usr/sbin/nagios4``) and ``PLUGINS``
(``/usr/lib/nagios/plugins``, the ``monitoring-plugins`` package).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NAGIOS_BIN = "/usr/sbin/nagios4"
PLUGINS = "/usr/lib/nagios/plugins"
NSCA_BIN = "/usr/sbin/nsca"
SEND_NSCA_BIN = "/usr/sbin/send_nsca"
HOST = "monbridge-test"


@dataclass
class Service:
    description: str
    command_line: str  # as Nagios runs it ($USER1$ is PLUGINS)
    interval: float = 60.0
    retry_interval: float = 60.0
    max_check_attempts: int = 1
    timeout: int | None = None  # Nagios has one service_check_timeout for all: the largest given
    active: bool = True


@dataclass
class NagiosConfig:
    directory: Path
    services: Sequence[Service] = ()
    service_check_timeout: int = 60
    #: spread the first checks over this many seconds (Nagios' max_service_check_spread, in interval_length units)
    spread: int = 1
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def main(self) -> Path:
        return self.directory / "nagios.cfg"

    @property
    def status_file(self) -> Path:
        return self.directory / "status.dat"

    @property
    def command_file(self) -> Path:
        return self.directory / "rw" / "nagios.cmd"

    @property
    def log_file(self) -> Path:
        return self.directory / "nagios.log"

    def write(self) -> Path:
        d = self.directory
        for sub in ("rw", "spool", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        user = _user()
        objects = [
            "define timeperiod {\n  timeperiod_name 24x7\n  alias always\n" +
            "".join(f"  {day} 00:00-24:00\n" for day in ("sunday", "monday", "tuesday", "wednesday", "thursday",
                                                         "friday", "saturday")) + "}\n",
            "define contact {\n  contact_name nobody\n  service_notification_period 24x7\n"
            "  host_notification_period 24x7\n  service_notification_options n\n  host_notification_options n\n"
            "  service_notification_commands none\n  host_notification_commands none\n}\n",
            "define command {\n  command_name none\n  command_line /bin/true\n}\n",
            f"define command {{\n  command_name host_up\n  command_line {PLUGINS}/check_dummy 0 up\n}}\n",
            f"define host {{\n  host_name {HOST}\n  alias {HOST}\n  address 127.0.0.1\n  check_command host_up\n"
            "  max_check_attempts 1\n  check_interval 3600\n  check_period 24x7\n  notification_period 24x7\n"
            "  notifications_enabled 0\n  contacts nobody\n}\n",
        ]
        for i, s in enumerate(self.services):
            objects.append(f"define command {{\n  command_name cmd{i}\n  command_line {s.command_line}\n}}\n")
            objects.append(
                f"define service {{\n  host_name {HOST}\n  service_description {s.description}\n"
                f"  check_command cmd{i}\n  max_check_attempts {s.max_check_attempts}\n"
                f"  check_interval {s.interval:g}\n  retry_interval {s.retry_interval:g}\n"
                f"  active_checks_enabled {1 if s.active else 0}\n  passive_checks_enabled 1\n"
                "  check_freshness 0\n  check_period 24x7\n  notification_period 24x7\n"
                "  notifications_enabled 0\n  contacts nobody\n}\n")
        (d / "objects.cfg").write_text("".join(objects))
        timeout = max([self.service_check_timeout, *(s.timeout or 0 for s in self.services)])
        settings = {
            "log_file": d / "nagios.log",
            "cfg_file": d / "objects.cfg",
            "object_cache_file": d / "objects.cache",
            "precached_object_file": d / "objects.precache",
            "status_file": self.status_file,
            "status_update_interval": 1,
            "nagios_user": user,
            "nagios_group": user,
            "check_external_commands": 1,
            "command_file": self.command_file,
            "lock_file": d / "nagios.lock",
            "temp_file": d / "nagios.tmp",
            "temp_path": d / "tmp",
            "check_result_path": d / "spool",
            "query_socket": d / "rw" / "nagios.qh",
            "retain_state_information": 0,
            "state_retention_file": d / "retention.dat",
            "use_retained_program_state": 0,
            "use_retained_scheduling_info": 0,
            "interval_length": 1,
            "max_service_check_spread": self.spread,
            "max_host_check_spread": self.spread,
            "service_inter_check_delay_method": "s",
            "check_result_reaper_frequency": 1,
            "max_check_result_reaper_time": 5,
            "service_check_timeout": timeout,
            "service_check_timeout_state": "u",
            "enable_notifications": 0,
            "enable_flap_detection": 0,
            "execute_service_checks": 1,
            "accept_passive_service_checks": 1,
            "accept_passive_host_checks": 1,
            "process_performance_data": 1,
            "service_perfdata_file": d / "service-perfdata",
            "service_perfdata_file_template": "$SERVICEDESC$\\t$SERVICESTATE$\\t$SERVICEOUTPUT$\\t$SERVICEPERFDATA$",
            "service_perfdata_file_mode": "a",
            "use_syslog": 0,
            "log_passive_checks": 1,
            "enable_environment_macros": 0,
            "illegal_macro_output_chars": "`~$&|'\"<>",
            "date_format": "iso8601",
            **self.extra,
        }
        self.main.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return self.main


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def verify(config: NagiosConfig) -> str:
    """``nagios4 -v`` on the config: its report; AssertionError with the report when it finds errors."""
    out = subprocess.run([NAGIOS_BIN, "-v", str(config.main)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"nagios4 -v {config.main} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


class NagiosServer:
    """``nagios4 nagios.cfg`` in the foreground (its process group of its own, so stopping it ends
    its workers and their checks too)."""

    def __init__(self, config: NagiosConfig, env: Mapping[str, str] | None = None) -> None:
        self.config = config
        config.write()
        verify(config)
        self.output = (config.directory / "nagios.out").open("wb")
        self.proc = subprocess.Popen([NAGIOS_BIN, str(config.main)], stdout=self.output, stderr=subprocess.STDOUT,
                                     cwd=config.directory, env={**os.environ, **(env or {})}, start_new_session=True)

    def wait_running(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nagios4 exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.config.command_file.exists() and self.config.status_file.exists():
                return
            time.sleep(0.1)
        raise AssertionError(f"nagios4 did not come up within {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        parts = []
        for p in (self.config.log_file, self.config.directory / "nagios.out"):
            if p.exists():
                parts.append(p.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def status(self) -> dict[str, dict[str, str]]:
        """The ``servicestatus`` blocks of status.dat by service description (values as written)."""
        return {s["service_description"]: s for s in read_status(self.config.status_file, "servicestatus")}

    def wait_for(self, description: str, predicate, timeout: float = 60.0) -> dict[str, str]:
        """The service's status once ``predicate(status)`` holds (AssertionError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        last: dict[str, str] | None = None
        while time.monotonic() < deadline:
            last = self.status().get(description)
            if last is not None and predicate(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"service {description!r} never got there; last status {last}\n{self.log_text()}")

    def command(self, line: str) -> None:
        """Write one external command (``[time] NAME;args``) to the command file."""
        with open(self.config.command_file, "w") as f:
            f.write(f"[{int(time.time())}] {line}\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.output.close()


def read_status(path: Path, kind: str) -> list[dict[str, str]]:
    """The blocks of one kind (``servicestatus``, ``hoststatus``, ``programstatus``) of a status.dat."""
    try:
        text = path.read_text(errors="surrogateescape")
    except FileNotFoundError:
        return []
    out = []
    for m in re.finditer(r"^" + kind + r" \{\n(.*?)\n\t\}", text, re.S | re.M):
        block = {}
        for line in m.group(1).split("\n"):
            k, _, v = line.strip("\t").partition("=")
            block[k] = v
        out.append(block)
    return out


def unescape_long_output(text: str) -> str:
    """status.dat's long_plugin_output, its newlines and backslashes as Nagios escaped them."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)
