"""Fixtures and rules shared by every test.

* ``free_port()`` returns a TCP port on 127.0.0.1 that was free a moment ago.
* ``require_binary(name)`` returns the path of an outside program the test needs
  (``prometheus``, ``promtool``). Missing, it skips the test on a developer's machine with an
  install hint, and fails it when the environment variable ``CI`` is set: tests marked
  ``integration`` never silently skip in CI.
* With ``CI`` set, a session in which any test was skipped (for any reason) exits with status 1
  and lists the skipped tests.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable

import pytest

INSTALL_HINTS = {
    "prometheus": "apt-get install prometheus (or run .ci/test, which installs it)",
    "promtool": "apt-get install prometheus (or run .ci/test, which installs it)",
    "prometheus-node-exporter": "apt-get install prometheus-node-exporter (or run .ci/test, which installs it)",
    "prometheus-pushgateway": "apt-get install prometheus-pushgateway (or run .ci/test, which installs it)",
    "prometheus-alertmanager": "apt-get install prometheus-alertmanager (or run .ci/test, which installs it)",
    "nagios4": "apt-get install nagios4 (or run .ci/test, which installs it)",
    "check_dummy": "apt-get install monitoring-plugins (or run .ci/test, which installs it)",
    "nsca": "apt-get install nsca (or run .ci/test, which installs it)",
    "send_nsca": "apt-get install nsca (or run .ci/test, which installs it)",
    "chromium": "apt-get install chromium (or run .ci/test, which installs it)",
    "chromedriver": "apt-get install chromium-driver (or run .ci/test, which installs it)",
    "podman": "apt-get install podman buildah runc netavark iptables (or run .ci/test, which installs them)",
    "runc": "apt-get install runc (or run .ci/test, which installs it)",
    "debootstrap": "apt-get install debootstrap (or run .ci/test, which installs it)",
}
#: Where Debian installs programs that are not on a user's PATH: daemons, Nagios plugins.
PROGRAM_DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/nagios/plugins")


def in_ci() -> bool:
    """True when the environment variable CI is set to anything but an explicit no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        path = next((f"{d}/{name}" for d in PROGRAM_DIRS if os.access(f"{d}/{name}", os.X_OK)), None)
    if path is not None:
        return path
    hint = INSTALL_HINTS.get(name, f"install {name!r} and put it on PATH")
    message = f"{name} not found on PATH: {hint}"
    if in_ci():
        pytest.fail(f"{message} (CI is set: integration tests must not be skipped)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def free_port() -> Callable[[], int]:
    """``free_port()`` -> a port on 127.0.0.1 that was free when asked (call it once per server)."""
    return _free_port


@pytest.fixture
def require_binary() -> Callable[[str], str]:
    """``require_binary(name)`` -> the program's path; skips (fails in CI) when it is missing."""
    return _require_binary


# --------------------------------------------------------------------------- no skips in CI


class _NoSkipsInCI:
    """Records every skip (collection or test, xfail excepted); with CI set, a skip fails the run."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def _record(self, report: pytest.TestReport | pytest.CollectReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        if isinstance(longrepr, tuple) and len(longrepr) == 3:
            reason = str(longrepr[2]).removeprefix("Skipped: ")
        else:
            reason = str(longrepr)
        self.skipped.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if in_ci() and self.skipped and exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not (in_ci() and self.skipped):
            return
        tr = terminalreporter
        tr.section("skipped tests fail the run in CI", sep="=", red=True, bold=True)
        tr.line(f"CI is set and {len(self.skipped)} test(s) were skipped, so the run fails:", red=True)
        for nodeid, reason in self.skipped:
            tr.line(f"SKIPPED {nodeid}: {reason}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_NoSkipsInCI(), "monbridge-no-skips-in-ci")
