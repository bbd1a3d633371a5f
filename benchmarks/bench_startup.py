"""Start-up cost of the ``monbridge`` command: ``--version`` and ``validate``, against ``promtool check config``.

Each command runs as a fresh process, as a user would run it; the figure is the best wall time
of ``--repeat`` runs (after one untimed run that fills the bytecode cache, as an installed
package has it), with ``promtool check config`` on the equivalent Prometheus config timed in the
same run, alternating with monbridge so that both see the same machine load. The least CPU time
(user + system) of those runs is shown beside it: on a shared machine it varies less with the
load than the wall time.

    python benchmarks/bench_startup.py [--repeat 15] [--config FILE] [--promtool promtool] [--baseline DIR]

It validates two configs: the embedded default's (host metrics on ``/metrics``) and a typical
agent's (host metrics, a Prometheus scrape target with metric relabelling, remote write, OTLP push
and both OTLP receivers, a webhook notifier; ``--config`` replaces it); promtool checks a config
scraping the same target with the same relabelling and remote write. A last row times what any such
command costs before it does anything (click, PyYAML and pydantic imported, one model built). ``--baseline DIR`` also times
the ``bridge`` of another checkout (an older commit, say) in the same run. Goals: ``--version``
≤ 0.15 s, ``validate`` ≤ 0.25 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_VERSION_S = 0.15
GOAL_VALIDATE_S = 0.25

HOST_METRICS_CONFIG = """\
plugins:
  - plugin_id: monitoring.metrics.system
    config: {collection_interval: 15}
"""

AGENT_CONFIG = """\
server:
  listen: "127.0.0.1:9464"
plugins:
  - plugin_id: monitoring.metrics.system
    config: {collection_interval: 15}
  - plugin_id: monitoring.integration.prometheus
    config:
      scrape:
        interval: 15
        targets:
          - {job: node, url: "http://127.0.0.1:9100/metrics"}
        metric_relabel_configs:
          - {source_labels: [__name__], regex: "go_(gc|memstats)_.*", action: drop}
          - {regex: "pod_template_hash", action: labeldrop}
      remote_write:
        - {url: "http://127.0.0.1:9090/api/v1/write", queue: {max_samples_per_send: 1000}}
  - plugin_id: monitoring.integration.otlp
    config:
      endpoint: "http://127.0.0.1:4318"
      receive: {grpc: {listen: "127.0.0.1:4317"}, http: {listen: "127.0.0.1:14318"}}
  - plugin_id: monitoring.alerts.webhook
    config: {url: "http://127.0.0.1:5001/hook"}
"""

#: What any ``validate`` built on click, PyYAML and pydantic costs before it does anything: the
#: three imported, one document parsed, one model built and validated (a reference, no goal).
LIBRARIES_ALONE = """\
import click, yaml
from pydantic import BaseModel
class M(BaseModel):
    x: int = 1
M.model_validate(yaml.load("x: 2", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:9100"]
    metric_relabel_configs:
      - {source_labels: [__name__], regex: "go_(gc|memstats)_.*", action: drop}
      - {regex: "pod_template_hash", action: labeldrop}
remote_write:
  - url: "http://127.0.0.1:9090/api/v1/write"
    queue_config: {max_samples_per_send: 1000}
"""


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """The wall time of one run of ``cmd`` and the CPU time (user + system) it used."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {err.decode(errors='replace')[:500]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def bridge_env(base: dict[str, str], tree: str | None) -> dict[str, str]:
    env = dict(base)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, base.get("PYTHONPATH")]))
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--config", help="the agent config to validate (default: a typical one)")
    ap.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    ap.add_argument("--baseline", help="a checkout whose bridge is timed too, for comparison")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        host = work / "host-metrics.yaml"
        host.write_text(HOST_METRICS_CONFIG)
        config = Path(args.config).resolve() if args.config else work / "agent.yaml"
        if not args.config:
            config.write_text(AGENT_CONFIG)
        prom = work / "prometheus.yml"
        prom.write_text(PROMETHEUS_CONFIG)
        base = dict(os.environ)
        # Bytecode cached as an installed package has it (pip compiles on install), in a
        # directory of this run: the checkouts are left alone.
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        # Run from the temporary directory: the installed bridge, or the one on PYTHONPATH, is measured.
        trees = {"": bridge_env(base, None)}
        if args.baseline:
            trees["baseline "] = bridge_env(base, str(Path(args.baseline).resolve()))
        for label, env in trees.items():
            where = subprocess.run([sys.executable, "-c", "import bridge, os; print(os.path.dirname(bridge.__file__))"],
                                   env=env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
            print(f"{label or 'measured '}monbridge from {where}")
        print(f"python {sys.version.split()[0]}; best of {args.repeat} runs, wall time")
        mb = [sys.executable, "-m", "bridge.cli"]
        cases = [
            ("--version", mb + ["--version"], GOAL_VERSION_S),
            ("validate (host metrics)", mb + ["validate", "--config", str(host)], GOAL_VALIDATE_S),
            ("validate (agent)" if not args.config else f"validate {config.name}",
             mb + ["validate", "--config", str(config)], GOAL_VALIDATE_S),
            ("click+yaml+pydantic alone", [sys.executable, "-c", LIBRARIES_ALONE], None),
        ]
        promtool = [args.promtool, "check", "config", str(prom)]
        for env in trees.values():  # fill the bytecode caches
            for _, cmd, _goal in cases:
                timed(cmd, env, work)
        timed(promtool, base, work)
        rows = []
        inf = float("inf")
        for name, cmd, goal in cases:
            sides = trees if goal is not None else {"": base}  # the reference does not import bridge
            best = {label: [inf, inf] for label in sides}
            theirs = [inf, inf]
            for _ in range(args.repeat):  # alternating, so a change of load affects every side alike
                for label, env in sides.items():
                    best[label] = [min(b, t) for b, t in zip(best[label], timed(cmd, env, work), strict=True)]
                theirs = [min(b, t) for b, t in zip(theirs, timed(promtool, base, work), strict=True)]
            for label in sides:
                rows.append((f"{label}{name}", *best[label], *theirs, goal))
        print(f"{'':34} {'wall s':>7} {'cpu s':>7} {'promtool wall':>14} {'ratio':>7}   goal (wall)")
        for name, mine, mine_cpu, theirs, _theirs_cpu, goal in rows:
            verdict = "(reference)" if goal is None else f"≤ {goal:.2f} s ({'met' if mine <= goal else 'NOT met'})"
            print(f"{name:34} {mine:7.3f} {mine_cpu:7.3f} {theirs:14.3f} {mine / theirs:6.1f}×   {verdict}")


if __name__ == "__main__":
    main()
