"""The idle-cost workload: N clients logged in and idle in one fresh process.

It runs in a child process (``python -m rts_sync.bench.idle``) so that the memory and threads
left behind by the other workloads do not blur the per-client figures: the baseline is taken
after the imports and one warm-up client, then N clients connect, settle, and the process's CPU
time is measured over the window. The child prints one JSON object on stdout.

Threading: the child's main thread only; the clients run their own threads.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import psutil

from .common import BenchError, Progress

__all__ = ["measure_idle", "run_idle"]

#: Seconds between logging in and the start of the measurement (connect-time work settles).
SETTLE = 3.0


def measure_idle(n: int, seconds: float, warm: Callable[[], None],
                 start: Callable[[], List[Any]], stop: Callable[[List[Any]], None]) -> Dict[str, Any]:
    """Baseline, start ``n`` clients, settle, measure CPU over ``seconds``; per-client figures."""
    proc = psutil.Process()
    warm()
    gc.collect()
    time.sleep(0.5)
    rss0, threads0 = proc.memory_info().rss, proc.num_threads()
    clients = start()
    time.sleep(SETTLE)
    gc.collect()
    rss1, threads1 = proc.memory_info().rss, proc.num_threads()
    cpu0, wall0 = proc.cpu_times(), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = proc.cpu_times(), time.monotonic()
    rss2, threads2 = proc.memory_info().rss, proc.num_threads()
    stop(clients)
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    total_pct = 100.0 * cpu / (wall1 - wall0)
    return {"clients": n, "window_s": wall1 - wall0,
            "rss_kib_per_client": (rss1 - rss0) / 1024.0 / n,
            "rss_kib_per_client_end": (rss2 - rss0) / 1024.0 / n,
            "threads_per_client": (threads1 - threads0) / n,
            "threads_per_client_end": (threads2 - threads0) / n,
            "cpu_percent_total": total_pct, "cpu_percent_per_client": total_pct / n,
            "baseline_rss_mb": rss0 / 2**20}


def run_idle(stack: str, args: Sequence[str], seconds: float, progress: Progress) -> Dict[str, Any]:
    """Run the idle child for ``stack`` ("rts" or "mqtt") with its arguments; its JSON result."""
    cmd = [sys.executable, "-m", "rts_sync.bench.idle", stack, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    started = time.monotonic()
    limit = seconds + SETTLE + 120.0
    while proc.poll() is None:
        waited = time.monotonic() - started
        if waited > limit:
            proc.kill()
            proc.communicate()
            raise BenchError("the idle workload (%s) did not finish in %.0f s" % (stack, limit))
        progress.update(min(waited, seconds + SETTLE), seconds + SETTLE, " s")
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise BenchError("the idle workload (%s) failed: %s" % (
            stack, err.decode("utf-8", "replace").strip()[-1500:]))
    result: Dict[str, Any] = json.loads(out.decode("utf-8").strip().splitlines()[-1])
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rts_sync.bench.idle")
    parser.add_argument("stack", choices=["rts", "mqtt"])
    parser.add_argument("--url", default="")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--app-key", default="")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--keepalive", type=int, default=5)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    a = parser.parse_args(argv)
    if a.stack == "rts":
        from .rts_load import Target, idle_engines
        result = idle_engines(Target(a.url, a.app_id, a.app_key), a.clients, a.seconds)
    else:
        from .mqtt_load import MqttTarget, idle_clients
        result = idle_clients(MqttTarget(a.host, a.port, a.keepalive), a.clients, a.seconds)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
