"""Start-up cost of the ``monbridge`` command: ``--version`` and ``validate``, against ``promtool check config``.

Each command runs as a fresh process, as a user would run it; the figure is the best wall time
of ``--repeat`` runs (after one untimed run that fills the bytecode cache, as an installed
package has it), with ``promtool check config`` on the equivalent Prometheus config timed in the
same run, alternating with monbridge so both see the same machine load.

    python benchmarks/bench_startup.py [--repeat 15] [--config FILE] [--promtool promtool]

Without ``--config`` it validates a typical agent config (host metrics, a Prometheus scrape
target, OTLP push, a webhook notifier) and promtool the same scrape config. Goals: ``--version``
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

MONBRIDGE_CONFIG = """\
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
  - plugin_id: monitoring.integration.otlp
    config: {endpoint: "http://127.0.0.1:4318"}
  - plugin_id: monitoring.alerts.webhook
    config: {url: "http://127.0.0.1:5001/hook"}
"""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ["127.0.0.1:9100"]
"""


def best_wall(cmd: list[str], env: dict[str, str], cwd: Path, repeat: int, expect: int = 0) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - t0
        if proc.returncode != expect:
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode(errors='replace')[:500]}")
        best = min(best, elapsed)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--config", help="monbridge config to validate (default: a typical agent config)")
    ap.add_argument("--promtool", default=shutil.which("promtool") or "promtool")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        config = Path(args.config) if args.config else work / "monbridge.yaml"
        if not args.config:
            config.write_text(MONBRIDGE_CONFIG)
        prom = work / "prometheus.yml"
        prom.write_text(PROMETHEUS_CONFIG)
        env = dict(os.environ)
        # Bytecode cached as an installed package has it (pip compiles on install), in a
        # directory of this run: the checkout is left alone.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        mb = [sys.executable, "-m", "bridge.cli"]
        # Run from the temporary directory: the installed bridge, or the one on PYTHONPATH, is measured.
        where = subprocess.run([sys.executable, "-c", "import bridge, os; print(os.path.dirname(bridge.__file__))"],
                               env=env, cwd=work, capture_output=True, text=True, check=True).stdout.strip()
        print(f"monbridge from {where}; python {sys.version.split()[0]}; best of {args.repeat} runs, wall time")
        cases = [
            ("monbridge --version", mb + ["--version"], GOAL_VERSION_S),
            ("monbridge validate", mb + ["validate", "--config", str(config)], GOAL_VALIDATE_S),
        ]
        promtool = [args.promtool, "check", "config", str(prom)]
        for _, cmd, _goal in cases:  # fill the bytecode cache
            best_wall(cmd, env, work, 1)
        best_wall(promtool, env, work, 1)
        results = []
        for name, cmd, goal in cases:
            # Alternate with promtool, so a change of load affects both sides alike.
            mine, theirs = float("inf"), float("inf")
            for _ in range(args.repeat):
                mine = min(mine, best_wall(cmd, env, work, 1))
                theirs = min(theirs, best_wall(promtool, env, work, 1))
            results.append((name, mine, theirs, goal))
        print(f"{'':24} {'best s':>8} {'promtool s':>11} {'ratio':>7}   goal")
        for name, mine, theirs, goal in results:
            ok = "met" if mine <= goal else "NOT met"
            print(f"{name:24} {mine:8.3f} {theirs:11.3f} {mine / theirs:6.1f}×   ≤ {goal:.2f} s ({ok})")


if __name__ == "__main__":
    main()
