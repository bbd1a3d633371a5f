#!/usr/bin/env python3
"""OTLP push of 100k gauges: monbridge against a plain OpenTelemetry SDK app, CPU per push and RSS.

    python benchmarks/bench_otlp_push.py [--series 100000] [--families 100] [--interval 10] [--pushes 4]
    python benchmarks/bench_otlp_push.py --quick        # 20k series, 3 s interval: well under a minute

Three processes, as a user would run them:

* a receiver: OTLP/HTTP on 127.0.0.1 (``http.server``), which decodes every request with
  ``opentelemetry-proto`` and counts its data points (its CPU is not measured);
* **monbridge**: a Runtime (the CLI's ``run`` without the argument parsing) with a third-party
  collector plugin reporting ``--series`` gauges (``--families`` families, three attributes a
  series) with fresh values every round, and the OTLP integration pushing http/protobuf to the
  receiver; collector and push on the same ``--interval``;
* **sdk app**: ``MeterProvider`` + ``PeriodicExportingMetricReader`` + ``OTLPMetricExporter``
  (http/protobuf, same receiver, same interval), a View raising the cardinality limit above
  ``--series``, one observable gauge per family whose callback reports the same points with fresh
  values every collection.

CPU per push is end to end, from the plugin's data to bytes on the wire: the process' user +
system CPU (psutil) over ``--pushes`` intervals after a warm-up, divided by the pushes the
receiver got in that window (each must carry all ``--series`` points, checked). RSS is
monbridge's with the OTLP integration and without it (the same plugin, no push), after the same
warm-up; the difference is what OTLP push costs in memory, also per series.

Goals: monbridge ≥ 5× less CPU per push than the SDK app; OTLP on adds ≤ 10 % RSS.
Exit status 1 when a push lacks points (the comparison would be unfair), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # the installed (or PYTHONPATH's) bridge wins


def series_attributes(i: int) -> dict[str, str]:
    return {"series": f"s{i:06d}", "host": f"host-{i % 50}", "zone": "eu-west-1"}


# ---------------------------------------------------------------------------- the receiver


def run_receiver(stats_path: str) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )

    ok = ExportMetricsServiceResponse().SerializeToString()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:  # noqa: N802
            try:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            except OSError:  # the sender was stopped mid-request
                return
            req = ExportMetricsServiceRequest.FromString(body)
            points = 0
            bench = 0
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        n = len(getattr(m, m.WhichOneof("data")).data_points)
                        points += n
                        if m.name.startswith("bench.gauge"):
                            bench += n
            line = json.dumps({"t": time.time(), "bytes": len(body), "points": points, "bench": bench})
            with lock, open(stats_path, "a") as f:  # one line a request; the parent truncates between runs
                f.write(line + "\n")
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(ok)))
                self.end_headers()
                self.wfile.write(ok)
            except OSError:  # the sender was stopped while waiting for the answer
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# ---------------------------------------------------------------------------- monbridge


def run_monbridge(endpoint: str, series: int, families: int, interval: float, otlp: bool) -> None:
    from bridge import CollectorConfig, Metric, MetricCollectorPlugin, MetricKind, PluginMetadata, PluginType
    from bridge.config import parse_config
    from bridge.registry import PluginRegistry
    from bridge.runtime import Runtime

    class BenchConfig(CollectorConfig):
        series: int = 100_000
        families: int = 100

    class BenchGauges(MetricCollectorPlugin):
        """A third-party plugin: fresh values for every gauge each round."""

        config_model = BenchConfig

        def metadata(self) -> PluginMetadata:
            return PluginMetadata("monitoring.metrics.benchgauges", "bench gauges", "1.0", "bench", "gauges",
                                  PluginType.METRIC_COLLECTOR)

        async def initialize(self, config: Mapping[str, Any]) -> None:
            cfg = self.parse_config(config)
            assert isinstance(cfg, BenchConfig)
            self.n, self.f, self.round = cfg.series, cfg.families, 0

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def shutdown(self) -> None:
            pass

        async def collect_metrics(self) -> Sequence[Metric]:
            self.round += 1
            r, f = self.round, self.f
            gauge = MetricKind.GAUGE
            return [Metric(f"bench.gauge{i % f}", gauge, i * 0.5 + r, "1", "a bench gauge", series_attributes(i))
                    for fam in range(f) for i in range(fam, self.n, f)]

    reg = PluginRegistry().discover()
    reg.register_plugin("monitoring.metrics.benchgauges", BenchGauges)
    cardinality = series // families + 10
    text = (f"server: {{listen: \"127.0.0.1:0\"}}\npipeline: {{cardinality_limit: {cardinality}}}\nplugins:\n"
            f"  - plugin_id: monitoring.metrics.benchgauges\n"
            f"    config: {{collection_interval: {interval}, series: {series}, families: {families}}}\n")
    if otlp:
        text += (f"  - plugin_id: monitoring.integration.otlp\n"
                 f"    config: {{endpoint: \"{endpoint}\", interval: {interval}, timeout: {interval}}}\n")
    rt = Runtime(parse_config(text, "bench.yaml", reg, env={}), reg)
    asyncio.run(rt.run())


# ---------------------------------------------------------------------------- the SDK app


def run_sdk(endpoint: str, series: int, families: int, interval: float) -> None:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.metrics.view import View
    from opentelemetry.sdk.resources import Resource

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint + "/v1/metrics"),
                                           export_interval_millis=interval * 1000)
    provider = MeterProvider(resource=Resource.create({"service.name": "sdk-app"}), metric_readers=[reader],
                             views=[View(instrument_name="*", aggregation_cardinality_limit=series + 10)])
    meter = provider.get_meter("bench")
    rounds = [0] * families

    def callback(_o: CallbackOptions, fam: int) -> list[Observation]:
        rounds[fam] += 1
        r = rounds[fam]
        return [Observation(i * 0.5 + r, series_attributes(i)) for i in range(fam, series, families)]

    for fam in range(families):
        meter.create_observable_gauge(f"bench.gauge{fam}", callbacks=[lambda o, fam=fam: callback(o, fam)], unit="1",
                                      description="a bench gauge")
    threading.Event().wait()


# ---------------------------------------------------------------------------- the encoders alone


def compare_encoders(series: int, families: int, repeat: int = 3) -> None:
    """CPU of one request body for ``series`` gauges: ``integrations.otlp_wire`` (first push, and
    the following ones, when each series' attribute bytes are kept) against building the
    ``opentelemetry-proto`` messages (upb) from the same families and serializing them; the
    decoded outputs must be equal."""
    import gc

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from bridge import Metric, MetricKind
    from bridge.pipeline import Pipeline
    from integrations.otlp_wire import OtlpEncoder

    p = Pipeline(cardinality_limit=series)
    p.record("bench", [Metric(f"bench.gauge{i % families}", MetricKind.GAUGE, i * 0.5, "1", "a bench gauge",
                              series_attributes(i)) for i in range(series)])
    fams = [(f, list(f.series.values())) for f in p.families()]

    def proto() -> bytes:
        req = ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        rm.resource.attributes.extend(common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=str(v)))
                                      for k, v in p.resource.attributes.items())
        sm = rm.scope_metrics.add()
        sm.scope.name, sm.scope.version = "monbridge", "0.1.0"
        for f, ss in fams:
            m = sm.metrics.add(name=f.name, description=f.description, unit=f.unit)
            m.gauge.data_points.extend(metrics_pb2.NumberDataPoint(
                attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                            for k, v in s.attributes.items()], time_unix_nano=s.time_ns, as_double=s.value)
                for s in ss)
        return req.SerializeToString()

    def cpu(fn: Any) -> tuple[float, Any]:
        gc.collect()
        t = time.process_time()
        out = fn()
        return time.process_time() - t, out

    enc = OtlpEncoder(max_request_bytes=1 << 30)
    cold, ours = cpu(lambda: enc.encode(fams, p.resource))
    warm = min(cpu(lambda: enc.encode(fams, p.resource))[0] for _ in range(repeat))
    upb, theirs = min((cpu(proto) for _ in range(repeat)), key=lambda x: x[0])
    mine, ref = ExportMetricsServiceRequest.FromString(ours[0]), ExportMetricsServiceRequest.FromString(theirs)
    same = mine.resource_metrics[0].scope_metrics[0].metrics == ref.resource_metrics[0].scope_metrics[0].metrics
    print(f"encoders, one request of {series} gauges: opentelemetry-proto (upb) {upb:.3f} s; otlp_wire {cold:.3f} s "
          f"on the first push, {warm:.3f} s after ({upb / warm:.0f}× less); outputs {'equal' if same else 'DIFFER'}")
    if not same:
        sys.exit(1)


# ---------------------------------------------------------------------------- the parent


def receiver_log(path: Path) -> list[dict[str, Any]]:
    """The requests the receiver logged so far (a line being written is left for the next read)."""
    try:
        lines = path.read_text().split("\n")
    except OSError:
        return []
    return [json.loads(line) for line in lines[:-1]]


def measure(name: str, cmd: list[str], stats: Path, args: argparse.Namespace, count_pushes: bool) -> dict[str, Any]:
    """Run ``cmd`` and measure it after the warm-up: RSS (the largest sample), and with
    ``count_pushes`` the CPU between the arrivals of ``--pushes`` + 1 consecutive pushes."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        p = psutil.Process(proc.pid)
        time.sleep(args.warmup)
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: {proc.stderr.read() if proc.stderr else ''}")
        seen = len(receiver_log(stats))
        marks: list[float] = []  # CPU seconds when a push's first request arrived
        bursts: list[list[dict[str, Any]]] = []
        rss: list[int] = []
        give_up = time.monotonic() + (args.pushes + 3) * args.interval * 3
        while time.monotonic() < give_up:
            time.sleep(0.1)
            rss.append(p.memory_info().rss)
            if not count_pushes:
                if len(rss) >= args.pushes * args.interval * 10:
                    break
                continue
            cpu = sum(p.cpu_times()[:2])
            log = receiver_log(stats)
            for r in log[seen:]:
                # A push may be split into several requests: it is whole when all its points are in.
                if not bursts or sum(x["bench"] for x in bursts[-1]) >= args.series:
                    marks.append(cpu)
                    bursts.append([])
                bursts[-1].append(r)
            seen = len(log)
            if len(marks) > args.pushes + 1:
                break
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rss.sort()
    out: dict[str, Any] = {"rss": rss[len(rss) // 2], "peak": rss[-1]}
    if count_pushes:
        bursts = bursts[: args.pushes + 1]
        out["pushes"] = max(len(marks[: args.pushes + 1]) - 1, 0)
        out["cpu"] = marks[min(len(marks), args.pushes + 1) - 1] - marks[0] if marks else 0.0
        out["points"] = [sum(r["bench"] for r in b) for b in bursts]
        out["bytes"] = [sum(r["bytes"] for r in b) for b in bursts]
        out["requests"] = [len(b) for b in bursts]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--families", type=int, default=100)
    ap.add_argument("--interval", type=float, default=10.0, help="collection and push interval, seconds")
    ap.add_argument("--pushes", type=int, default=4, help="measured intervals per side")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default: 2 intervals + 5)")
    ap.add_argument("--quick", action="store_true", help="20k series, 3 s interval, 3 pushes")
    ap.add_argument("--encoders-only", action="store_true", help="only compare the encoders (in this process)")
    ap.add_argument("--role", choices=["receiver", "monbridge", "monbridge-no-otlp", "sdk"], help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--stats", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.series, args.interval, args.pushes = 20_000, 3.0, 3
    if args.role == "receiver":
        run_receiver(args.stats)
        return
    if args.role in ("monbridge", "monbridge-no-otlp"):
        run_monbridge(args.endpoint, args.series, args.families, args.interval, args.role == "monbridge")
        return
    if args.role == "sdk":
        run_sdk(args.endpoint, args.series, args.families, args.interval)
        return
    if args.warmup is None:
        args.warmup = 2 * args.interval + 5

    import bridge

    if args.encoders_only:
        compare_encoders(args.series, args.families)
        return

    stats = Path(f"/tmp/bench_otlp_push.{os.getpid()}.json")
    receiver = subprocess.Popen([sys.executable, __file__, "--role", "receiver", "--stats", str(stats)],
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout is not None
    endpoint = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    common = ["--series", str(args.series), "--families", str(args.families), "--interval", str(args.interval),
              "--endpoint", endpoint]
    print(f"bench_otlp_push: {args.series} gauges in {args.families} families, push every {args.interval:g} s, "
          f"{args.pushes} pushes measured after {args.warmup:g} s; bridge from {Path(bridge.__file__).parent}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    compare_encoders(args.series, args.families)
    try:
        results = {}
        for name, role in (("monbridge", "monbridge"), ("sdk app", "sdk")):
            stats.write_text("")
            results[name] = measure(name, [sys.executable, __file__, "--role", role, *common], stats, args, True)
        stats.write_text("")
        off = measure("monbridge without OTLP", [sys.executable, __file__, "--role", "monbridge-no-otlp", *common],
                      stats, args, False)
    finally:
        receiver.terminate()
        receiver.wait()
        stats.unlink(missing_ok=True)

    bad = False
    for name, r in results.items():
        if not r["pushes"]:
            print(f"{name}: no push arrived in the measured window")
            bad = True
            continue
        complete = all(n == args.series for n in r["points"][:-1])  # the last one may be cut by the stop
        bad |= not complete
        per = r["cpu"] / r["pushes"]
        r["per_push"] = per
        print(f"{name:10s} {per:7.3f} s CPU per push ({r['cpu']:.2f} s over {r['pushes']} pushes; "
              f"{r['requests'][0]} request(s), {r['bytes'][0] / 1e6:.1f} MB a push; points a push "
              f"{r['points']}{'' if complete else ' INCOMPLETE'}); RSS {r['rss'] / 2**20:.0f} MiB, "
              f"peak {r['peak'] / 2**20:.0f} MiB")
    if "per_push" in results["monbridge"] and "per_push" in results["sdk app"]:
        ratio = results["sdk app"]["per_push"] / results["monbridge"]["per_push"]
        print(f"monbridge vs sdk app: {ratio:.1f}× less CPU per push (goal ≥ 5×): {'met' if ratio >= 5 else 'NOT met'}")
    on, off_rss = results["monbridge"]["rss"], off["rss"]
    extra = (on - off_rss) / off_rss * 100
    peak = (results["monbridge"]["peak"] - off["peak"]) / off["peak"] * 100
    print(f"monbridge RSS (median of the samples): OTLP on {on / 2**20:.0f} MiB, off {off_rss / 2**20:.0f} MiB: "
          f"{extra:+.1f} % ({(on - off_rss) / args.series:+.0f} B per series; goal ≤ 10 %): "
          f"{'met' if extra <= 10 else 'NOT met'}; peaks {results['monbridge']['peak'] / 2**20:.0f} and "
          f"{off['peak'] / 2**20:.0f} MiB ({peak:+.1f} %)")
    if bad:
        print("a push lacked points: the comparison is not fair")
        sys.exit(1)


if __name__ == "__main__":
    main()
