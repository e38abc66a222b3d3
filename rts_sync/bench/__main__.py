"""``rts-bench`` / ``python -m rts_sync.bench``: measure rts_sync, optionally side by side with
paho-mqtt through mosquitto (``--compare mqtt``).

Examples::

    rts-bench --quick                          # a smoke run of every workload (seconds)
    rts-bench --compare mqtt --repeat 3 --json results.json --plot results.png
    rts-bench --url ws://10.0.0.5:8970/rts --app APP_ID:APP_KEY --workloads p2p,rtt

Without ``--url`` it starts ``rts-server`` in a child process on a free loopback port and stops
it afterwards. Exit codes: 0 done, 2 bad arguments or a missing prerequisite (one line on stderr,
no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib
import json
import os
import sys
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .._version import __version__
from . import mqtt_load, rts_load
from .capacity import run_capacity, run_raw_rtt
from .common import APP_ID, APP_KEY, BenchError, Progress, Sizes
from .idle import run_idle
from .procs import (
    ForeignLoad,
    Mosquitto,
    RtsServer,
    find_mosquitto,
    machine,
    mosquitto_version,
    raise_fd_limit,
    versions,
)
from .report import build_rows, median_of, plot, render_table

__all__ = ["main"]

_PROG = "rts-bench"
WORKLOADS = ("p2p", "rtt", "fanout", "idle", "capacity")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=_PROG, description="Benchmark rts_sync (SDK and server), optionally side by side "
        "with paho-mqtt through a mosquitto broker. Loopback only unless --url says otherwise.",
        epilog="Workloads: p2p (one-way throughput, 64-byte messages, reliable and unreliable, "
        "lost/duplicated/reordered counted), rtt (sequential echoes), fanout (one sender, N room "
        "members), idle (N logged-in idle engines in a fresh process), capacity (M raw "
        "connections held with heartbeats, logins/s and messages/s the server sustains, its CPU "
        "and RSS). See docs/performance.md.")
    p.add_argument("--url", help="ws:// URL of a running rts-server (default: start one on a "
                   "free loopback port and stop it afterwards)")
    p.add_argument("--app", metavar="APP_ID:APP_KEY",
                   help="the app to log in with on --url (default: the bench's own app)")
    p.add_argument("--server-pid", type=int,
                   help="pid of the --url server, for its CPU and RSS in the capacity workload")
    p.add_argument("--server-uvloop", action="store_true",
                   help="run the server this tool starts under uvloop (pip install uvloop)")
    p.add_argument("--compare", choices=["mqtt"],
                   help="also run every workload with paho-mqtt through mosquitto, and ratios")
    p.add_argument("--mosquitto", metavar="PATH", help="the mosquitto executable "
                   "(default: on PATH, or /usr/sbin/mosquitto)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of: %s (default: all)" % ",".join(WORKLOADS))
    p.add_argument("--quick", action="store_true",
                   help="a smoke run with tiny sizes (seconds); figures are not meaningful")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each workload N times and report medians (default 1)")
    p.add_argument("--json", metavar="FILE", help="write every result (and every run) as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write a PNG chart (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr")
    g = p.add_argument_group("sizes (defaults: the full run; --quick makes them tiny)")
    g.add_argument("--messages", type=int, help="p2p: messages per run (20000)")
    g.add_argument("--echoes", type=int, help="rtt: measured echoes (5000)")
    g.add_argument("--warmup", type=int, help="rtt: echoes before measuring (500)")
    g.add_argument("--members", help="fanout: comma-separated room sizes (20,100)")
    g.add_argument("--fanout-deliveries", type=int,
                   help="fanout: deliveries in the burst (40000; messages = this / members)")
    g.add_argument("--latency-rounds", type=int,
                   help="fanout: one-at-a-time broadcasts timed one way (200)")
    g.add_argument("--idle-engines", type=int, help="idle: engines / clients (100)")
    g.add_argument("--idle-seconds", type=float, help="idle: CPU window in seconds (30)")
    g.add_argument("--connections", type=int, help="capacity: connections held (10000)")
    g.add_argument("--concurrency", type=int, help="capacity: logins in flight (200)")
    g.add_argument("--hold", type=float, help="capacity: seconds holding them idle (10)")
    g.add_argument("--pairs", type=int, help="capacity: sender/receiver pairs pumping (500)")
    g.add_argument("--pump-seconds", type=float, help="capacity: seconds per pump mode (5)")
    g.add_argument("--window", type=int, help="capacity: messages in flight per pair (32)")
    g.add_argument("--timeout", type=float, help="seconds one workload run may take (120)")
    p.add_argument("--version", action="version", version="%(prog)s " + __version__)
    return p


def _sizes(a: argparse.Namespace) -> Sizes:
    s = Sizes.quick() if a.quick else Sizes()
    for attr, name in (("messages", "p2p_messages"), ("echoes", "rtt_echoes"),
                       ("warmup", "rtt_warmup"), ("fanout_deliveries", "fanout_deliveries"),
                       ("latency_rounds", "fanout_latency_rounds"),
                       ("idle_engines", "idle_engines"), ("idle_seconds", "idle_seconds"),
                       ("connections", "capacity_connections"),
                       ("concurrency", "capacity_concurrency"), ("hold", "capacity_hold"),
                       ("pairs", "capacity_pairs"), ("pump_seconds", "capacity_seconds"),
                       ("window", "capacity_window"), ("timeout", "timeout")):
        v = getattr(a, attr)
        if v is not None:
            if v < 0 or (v == 0 and attr not in ("warmup", "hold", "pairs", "pump_seconds")):
                raise BenchError("--%s must be positive" % attr.replace("_", "-"))
            setattr(s, name, v)
    if a.members:
        try:
            s.fanout_members = tuple(int(x) for x in a.members.split(",") if x.strip())
        except ValueError:
            raise BenchError("--members takes comma-separated integers, got %r" % a.members) from None
        if not s.fanout_members or min(s.fanout_members) < 1:
            raise BenchError("--members needs at least one room size >= 1")
    return s


def _workloads(text: str) -> List[str]:
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in chosen if w not in WORKLOADS]
    if bad or not chosen:
        raise BenchError("--workloads: unknown %s (choose from %s)"
                         % (", ".join(bad) or "(none given)", ",".join(WORKLOADS)))
    return [w for w in WORKLOADS if w in chosen]


Step = Tuple[str, str, Tuple[str, ...], Callable[[Progress], Dict[str, Any]]]


def _steps(workloads: Sequence[str], sizes: Sizes, target: rts_load.Target,
           mqtt: Optional[mqtt_load.MqttTarget], server_pid: Optional[int],
           fresh_rts: Optional[Callable[[], RtsServer]],
           fresh_mqtt: Optional[Callable[[], Mosquitto]]) -> List[Step]:
    """(stack, title, result path, function) for one repeat, rts_sync then paho for each."""
    steps: List[Step] = []
    for w in workloads:
        if w == "p2p":
            steps += _p2p_steps(sizes, target, mqtt)
        elif w == "rtt":
            steps += _rtt_steps(sizes, target, mqtt)
        elif w == "fanout":
            for m in sizes.fanout_members:
                steps += _fanout_steps(sizes, m, target, mqtt)
        elif w == "idle":
            steps += _idle_steps(sizes, target, mqtt)
        elif w == "capacity":
            steps += _capacity_steps(sizes, target, mqtt, server_pid, fresh_rts, fresh_mqtt)
    return steps


def _p2p_steps(sizes: Sizes, target: rts_load.Target,
               mqtt: Optional[mqtt_load.MqttTarget]) -> List[Step]:
    n, t = sizes.p2p_messages, sizes.timeout
    steps: List[Step] = [
        ("rts", "p2p reliable, %d msgs" % n, ("p2p", "reliable"),
         lambda pr: rts_load.p2p(target, n, True, pr, t)),
        ("rts", "p2p unreliable, %d msgs" % n, ("p2p", "unreliable"),
         lambda pr: rts_load.p2p(target, n, False, pr, t))]
    if mqtt:
        for q in (1, 0):
            steps.append(("mqtt", "p2p QoS %d, %d msgs" % (q, n), ("p2p", "qos%d" % q),
                          functools.partial(mqtt_load.p2p, mqtt, n, q, timeout=t)))
    return steps


def _rtt_steps(sizes: Sizes, target: rts_load.Target,
               mqtt: Optional[mqtt_load.MqttTarget]) -> List[Step]:
    n, wu, t = sizes.rtt_echoes, sizes.rtt_warmup, sizes.timeout
    steps: List[Step] = []
    for rel in (True, False):
        name = "reliable" if rel else "unreliable"
        steps.append(("rts", "rtt %s, %d echoes" % (name, n), ("rtt", name),
                      functools.partial(rts_load.rtt, target, n, wu, rel, timeout=t)))
    if mqtt:
        for q in (1, 0):
            steps.append(("mqtt", "rtt QoS %d, %d echoes" % (q, n), ("rtt", "qos%d" % q),
                          functools.partial(mqtt_load.rtt, mqtt, n, wu, q, timeout=t)))
    url = urllib.parse.urlsplit(target.url)
    if url.scheme == "ws":
        host, port = url.hostname or "127.0.0.1", url.port or 80
        steps.append(("rts", "rtt, raw clients: the server alone", ("rtt", "raw"),
                      lambda pr: run_raw_rtt("rts", host, port, url.path or "/rts", n, wu,
                                             (target.app_id, target.app_key), t)))
    if mqtt:
        steps.append(("mqtt", "rtt, raw clients: the broker alone", ("rtt", "raw"),
                      lambda pr: run_raw_rtt("mqtt", mqtt.host, mqtt.port, "", n, wu, (), t)))
    return steps


def _fanout_steps(sizes: Sizes, m: int, target: rts_load.Target,
                  mqtt: Optional[mqtt_load.MqttTarget]) -> List[Step]:
    d, rounds, t = sizes.fanout_deliveries, sizes.fanout_latency_rounds, sizes.timeout
    steps: List[Step] = [("rts", "fan-out to %d members" % m, ("fanout", str(m), "room"),
                          lambda pr: rts_load.fanout(target, m, d, rounds, pr, t))]
    if mqtt:
        for q in (1, 0):
            steps.append(("mqtt", "fan-out to %d subscribers, QoS %d" % (m, q),
                          ("fanout", str(m), "qos%d" % q),
                          functools.partial(mqtt_load.fanout, mqtt, m, d, rounds, q, timeout=t)))
    return steps


def _idle_steps(sizes: Sizes, target: rts_load.Target,
                mqtt: Optional[mqtt_load.MqttTarget]) -> List[Step]:
    n, secs = sizes.idle_engines, sizes.idle_seconds
    args = ["--url", target.url, "--app-id", target.app_id, "--app-key", target.app_key,
            "--clients", str(n), "--seconds", str(secs)]
    steps: List[Step] = [("rts", "idle: %d engines, %g s" % (n, secs), ("idle",),
                          lambda pr: run_idle("rts", args, secs, pr))]
    if mqtt:
        margs = ["--host", mqtt.host, "--port", str(mqtt.port), "--keepalive",
                 str(mqtt.keepalive), "--clients", str(n), "--seconds", str(secs)]
        steps.append(("mqtt", "idle: %d paho clients, %g s" % (n, secs), ("idle",),
                      lambda pr: run_idle("mqtt", margs, secs, pr)))
    return steps


def _capacity_steps(sizes: Sizes, target: rts_load.Target, mqtt: Optional[mqtt_load.MqttTarget],
                    server_pid: Optional[int], fresh_rts: Optional[Callable[[], RtsServer]],
                    fresh_mqtt: Optional[Callable[[], Mosquitto]]) -> List[Step]:
    """Capacity runs against a fresh server process each (when this tool starts the servers),
    so that the memory per connection is measured from a clean baseline."""
    c = sizes.capacity_connections
    url = urllib.parse.urlsplit(target.url)
    if url.scheme != "ws":
        raise BenchError("the capacity workload's raw clients speak ws:// only; leave it out "
                         "(--workloads) for %s" % target.url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path or "/rts"
    app = (target.app_id, target.app_key)

    def rts_run(pr: Progress) -> Dict[str, Any]:
        if fresh_rts is None:
            return run_capacity("rts", host, port, path, server_pid, sizes, pr, app)
        with fresh_rts() as srv:
            return run_capacity("rts", srv.host, srv.port, "/rts", srv.pid, sizes, pr, app)

    def mqtt_run(pr: Progress) -> Dict[str, Any]:
        assert fresh_mqtt is not None
        with fresh_mqtt() as broker:
            return run_capacity("mqtt", broker.host, broker.port, "", broker.pid, sizes, pr)

    steps: List[Step] = [("rts", "capacity: %d raw connections" % c, ("capacity",), rts_run)]
    if mqtt:
        steps.append(("mqtt", "capacity: %d raw MQTT connections" % c, ("capacity",), mqtt_run))
    return steps


def _summary(res: Dict[str, Any]) -> str:
    if "msgs_per_s" in res:
        return "%.0f msg/s, lost/dup/reordered %s/%s/%s" % (
            res["msgs_per_s"], res.get("lost"), res.get("duplicated"), res.get("reordered"))
    if "p50_ms" in res.get("reliable", {}):
        return "reliable p50 %.3f ms, p99 %.3f ms; unreliable p50 %.3f ms, p99 %.3f ms" % (
            res["reliable"]["p50_ms"], res["reliable"]["p99_ms"], res["unreliable"]["p50_ms"],
            res["unreliable"]["p99_ms"])
    if "p50_ms" in res:
        return "p50 %.3f ms, p99 %.3f ms, max %.2f ms, lost %d" % (
            res["p50_ms"], res["p99_ms"], res["max_ms"], res.get("lost", 0))
    if "deliveries_per_s" in res:
        return "%.0f deliveries/s, one-way p99 %s ms, lost %s" % (
            res["deliveries_per_s"], "%.2f" % res["one_way"]["p99_ms"]
            if res["one_way"].get("n") else "-", res.get("lost"))
    if "rss_kib_per_client" in res:
        return "%.1f KiB, %.2f threads, %.4f%% CPU per client" % (
            res["rss_kib_per_client"], res["threads_per_client"], res["cpu_percent_per_client"])
    if "logins_per_s" in res:
        srv = res.get("server", {})
        return "%d held, %.0f logins/s, server %s MB" % (
            res["connections"], res["logins_per_s"],
            "%.0f" % srv["hold"]["rss_mb"] if srv.get("hold", {}).get("rss_mb") else "?")
    return ""


def _put(tree: Dict[str, Any], path: Sequence[str], value: Any) -> None:
    for p in path[:-1]:
        tree = tree.setdefault(p, {})
    tree[path[-1]] = value


def _medians(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    m = median_of(runs)
    return m if isinstance(m, dict) else {}


@contextlib.contextmanager
def _maybe(ctx: Any) -> Iterator[Any]:
    if ctx is None:
        yield None
    else:
        with ctx as v:
            yield v


def run(a: argparse.Namespace) -> int:
    sizes = _sizes(a)
    workloads = _workloads(a.workloads)
    if a.repeat < 1:
        raise BenchError("--repeat must be at least 1")
    compare = a.compare == "mqtt"
    mosq_exe = None
    if compare:
        mqtt_load.paho()  # a clear error now rather than after the rts_sync runs
        mosq_exe = find_mosquitto(a.mosquitto)
    if a.plot:
        try:
            importlib.import_module("matplotlib")
        except ImportError:
            raise BenchError("--plot needs matplotlib, which is not installed: pip install "
                             "matplotlib (or leave --plot out: the table and --json do not need "
                             "it)") from None
    if a.url and a.server_uvloop:
        raise BenchError("--server-uvloop applies to the server rts-bench starts, not to --url")
    app_id, app_key = APP_ID, APP_KEY
    if a.app:
        app_id, sep, app_key = a.app.partition(":")
        if not sep or not app_id or not app_key:
            raise BenchError("--app takes APP_ID:APP_KEY")
    elif a.url:
        raise BenchError("--url needs --app APP_ID:APP_KEY (an app that server serves)")
    if "capacity" in workloads:
        limit = raise_fd_limit()
        need = sizes.capacity_connections + 200
        if limit < need:
            raise BenchError("the capacity workload needs about %d file descriptors per process "
                             "and the limit is %d: raise it (ulimit -n) or lower --connections"
                             % (need, limit))
    progress = Progress(0, enabled=not a.no_progress)
    started = time.time()
    server = None if a.url else RtsServer(uvloop=a.server_uvloop)
    broker = Mosquitto(mosq_exe) if compare and mosq_exe else None
    runs: Dict[str, List[Dict[str, Any]]] = {"rts": [], "mqtt": []}
    #: CPU% (of all cores) used by other work on the machine during each step.
    load: List[Tuple[str, str, float]] = []
    foreign = ForeignLoad()
    with _maybe(server), _maybe(broker):
        url = a.url or (server.url if server else "")
        target = rts_load.Target(url, app_id, app_key)
        mqtt = mqtt_load.MqttTarget(broker.host, broker.port) if broker else None
        server_pid = server.pid if server else a.server_pid
        fresh_rts = None if a.url else functools.partial(RtsServer, uvloop=a.server_uvloop)
        fresh_mqtt = functools.partial(Mosquitto, mosq_exe) if broker and mosq_exe else None
        steps = _steps(workloads, sizes, target, mqtt, server_pid, fresh_rts, fresh_mqtt)
        progress.total_steps = len(steps) * a.repeat
        for r in range(a.repeat):
            this: Dict[str, Dict[str, Any]] = {"rts": {}, "mqtt": {}}
            for stack, title, path, fn in steps:
                foreign.start()
                progress.step("%s%s: %s" % ("run %d/%d, " % (r + 1, a.repeat) if a.repeat > 1
                                            else "", "rts_sync" if stack == "rts"
                                            else "paho/mosquitto", title))
                res = fn(progress)
                load.append((title, stack, round(foreign.stop(), 1)))
                progress.done(_summary(res) + ("; other work on the machine: %.0f%% CPU"
                                               % load[-1][2] if load[-1][2] >= 10 else ""))
                _put(this[stack], path, res)
            runs["rts"].append(this["rts"])
            if compare:
                runs["mqtt"].append(this["mqtt"])
    results = {"rts": _medians(runs["rts"]), "mqtt": _medians(runs["mqtt"]) if compare else {}}
    rows = build_rows(results["rts"], results["mqtt"])
    out = sys.stdout
    out.write("\nrts-bench %s: %s, medians of %d run(s)%s\n" % (
        __version__, ", ".join(workloads), a.repeat,
        " (QUICK: tiny sizes, figures not meaningful)" if a.quick else ""))
    m = machine()
    out.write("machine: %s cores, %s, Python %s; server: %s%s\n\n" % (
        m["nproc"], m["cpu_model"] or "?", m["python"], url if a.url else "rts-server (child)",
        " under uvloop" if a.server_uvloop else ""))
    busiest = max((x[2] for x in load), default=0.0)
    if busiest >= 10:
        out.write("note: other work on the machine used up to %.0f%% of its CPU during a step: "
                  "these figures are noisy (see foreign_cpu_percent in --json)\n\n" % busiest)
    out.write(render_table(rows, compare) + "\n")
    out.flush()
    if a.json:
        doc = {"tool": _PROG, "version": __version__,
               "started": datetime.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
               "seconds": time.time() - started, "machine": m,
               "versions": dict(versions(), **({"mosquitto": mosquitto_version(mosq_exe)}
                                               if mosq_exe else {})),
               "args": {k: v for k, v in vars(a).items()}, "sizes": sizes.as_dict(),
               "workloads": workloads, "repeat": a.repeat, "quick": a.quick,
               "server": {"url": url, "started_here": server is not None,
                          "uvloop": bool(a.server_uvloop)},
               "compare": a.compare, "results": results, "runs": runs, "rows": rows,
               "foreign_cpu_percent": load}
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, a.json)
        progress.note("results written to %s" % a.json)
    if a.plot:
        plot(a.plot, results["rts"], results["mqtt"])
        progress.note("chart written to %s" % a.plot)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark; returns the process exit code."""
    parser = _parser()
    try:
        a = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return run(a)
    except BenchError as exc:
        sys.stderr.write("\n%s: error: %s\n" % (_PROG, exc))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\n%s: interrupted\n" % _PROG)
        return 130


if __name__ == "__main__":
    sys.exit(main())
