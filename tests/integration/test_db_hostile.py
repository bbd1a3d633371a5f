"""The database collectors against hostile servers, in a running agent (``bridge.cli run``): the
PostgreSQL, MySQL and Redis collectors each watch one loopback server per hostile mode
(tests/integration/hostile_tcp.py: never answers, answers garbage, drips a reply byte by byte,
closes halfway through a reply), and the Redis collector also a real Redis that stalls
(``DEBUG SLEEP``) after its first collection. Each collection ends within the collector's own
bounds (``connect_timeout``, ``query_timeout``: never cut by the supervisor's timeout), each
hostile target reports ``up 0`` (``<system>_up_ratio``) with its reason logged, the stalled
query is cut and counted in ``redis_collector_errors_total``; meanwhile ``/metrics`` keeps answering, the textfile
collector keeps its schedule, no plugin is restarted, and the password never reaches the log."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis
from conftest import wait_until
from hostile_tcp import MODES, HostileTcp
from liveness import STEADY, Liveness, sample, steady_collector, total

from tests.integration.dbservers import SUPERUSER_PASSWORD, Redis, ServerFailed, ServerMissing

pytestmark = pytest.mark.integration

SYSTEMS = {"postgresql": "postgresql://monbridge@127.0.0.1:{port}/postgres",
           "mysql": "mysql://monbridge@127.0.0.1:{port}/",
           "redis": "redis://127.0.0.1:{port}/0"}
PASSWORD = "hostile-db-pw-5b1"
#: The collectors' bounds: a collection may take connect_timeout or query_timeout at most (plus
#: closing a broken connection), far below the supervisor's timeout.
BOUNDS = {"collection_interval": 1, "timeout": 8, "connect_timeout": 1, "query_timeout": 1}
WATCH_S = 8.0
#: asyncpg's protocol is compiled code run by the event loop's read callback: on some hostile bytes
#: it spins there and holds the whole agent. The PostgreSQL collector's guard (collectors.pgguard)
#: refuses those frames first, so every collector runs here where it runs by default, in the
#: agent's process: the test shows the agent is not held. (A collector named here runs in a worker.)
IN_A_WORKER: set[str] = set()


@pytest.fixture
def stalling_redis():
    try:
        server = Redis()
    except (ServerMissing, ServerFailed) as e:
        pytest.fail(str(e), pytrace=False)
    yield server
    server.stop()


def _stall(server: Redis, until: threading.Event) -> None:
    """Keep ``server`` asleep (DEBUG SLEEP, 2 s at a time) until ``until`` is set."""
    client = redis.Redis(host="127.0.0.1", port=server.port, password=SUPERUSER_PASSWORD, socket_timeout=30)
    try:
        while not until.is_set():
            client.execute_command("DEBUG", "SLEEP", "2")
    finally:
        client.close()


def test_hostile_database_servers_stay_their_targets_problem(run_monbridge, tmp_path, stalling_redis):
    peers = {(system, mode): HostileTcp(mode, system) for system in SYSTEMS for mode in MODES}
    try:
        plugins = [steady_collector(tmp_path)]
        for system, dsn in SYSTEMS.items():
            targets = [{"dsn": dsn.format(port=peers[system, mode].port), "password": PASSWORD} for mode in MODES]
            if system == "redis":
                targets.append({"dsn": stalling_redis.url(), "password": SUPERUSER_PASSWORD})
            entry: dict[str, Any] = {"plugin_id": f"monitoring.metrics.{system}", "config": {**BOUNDS, "targets": targets}}
            if system in IN_A_WORKER:
                entry.update(isolation="process", grants={"hosts": ["127.0.0.1"]})
            plugins.append(entry)
        mb = run_monbridge({"plugins": plugins})
        real = f'server_port="{stalling_redis.port}"'
        wait_until(lambda: sample(mb.get("/metrics")[2].decode(), "redis_up_ratio", real) == 1.0,
                   what="the real Redis up before it stalls")

        stop = threading.Event()
        staller = threading.Thread(target=_stall, args=(stalling_redis, stop), daemon=True)
        with Liveness(mb) as watch:
            staller.start()
            time.sleep(WATCH_S)
        stop.set()
        staller.join(timeout=10)
        watch.check()
        text = watch.last_text

        for (system, mode), peer in peers.items():
            assert peer.connections >= 2, f"{system} {mode}: the collector tried {peer.connections} times"
            where = f'server_port="{peer.port}"'
            assert sample(text, f"{system}_up_ratio", where) == 0.0, f"{system} {mode}: not down"
        # The stalled real Redis: down, its query cut at query_timeout and counted.
        assert sample(text, "redis_up_ratio", real) == 0.0
        assert total(text, "redis_collector_errors_total", real) >= 1

        status, _, body = mb.get("/api/v1/plugins")
        assert status == 200
        st = {p["plugin_id"]: p for p in json.loads(body)["data"]}
        for system in SYSTEMS:
            p = st[f"monitoring.metrics.{system}"]
            assert p["state"] == "running" and p["runs"] >= 3, p
            if system not in IN_A_WORKER:
                # every collection ended by the collector's own bounds, none cut by the supervisor
                assert p["restarts"] == 0 and p["timeouts"] == 0 and p["errors"] == 0, p
        assert st[STEADY]["restarts"] == 0 and st[STEADY]["errors"] == 0

        log = mb.log_text()
        for (system, _mode), peer in peers.items():
            assert f"{system} 127.0.0.1:{peer.port}: down: " in log, f"{system} on port {peer.port}: no reason logged"
        assert f"redis 127.0.0.1:{stalling_redis.port}: down: " in log
        assert "query_timeout" in log
        assert PASSWORD not in log and SUPERUSER_PASSWORD not in log
        assert "Traceback" not in log
        assert mb.proc.poll() is None
    finally:
        for peer in peers.values():
            peer.close()
