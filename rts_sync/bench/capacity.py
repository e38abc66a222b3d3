"""The server-capacity workload: raw clients in a child process (:mod:`.rawclient`) against the
server, whose CPU and memory this process samples (psutil on the server's pid).

Threading: the caller's thread plus one :class:`~rts_sync.bench.procs.ProcSampler` thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple, cast

from .common import BenchError, Progress, Sizes
from .procs import ProcSampler

__all__ = ["run_capacity", "run_raw_rtt"]


def run_capacity(stack: str, host: str, port: int, path: str, server_pid: Optional[int],
                 sizes: Sizes, progress: Progress, app: Sequence[str] = ()) -> Dict[str, Any]:
    """Run the raw-client child for ``stack`` ("rts" or "mqtt"); its result plus the server's
    CPU% and memory in each phase (when ``server_pid`` is known)."""
    cmd = [sys.executable, "-m", "rts_sync.bench.rawclient", stack, "--host", host,
           "--port", str(port), "--path", path,
           "--connections", str(sizes.capacity_connections),
           "--concurrency", str(sizes.capacity_concurrency),
           "--hold", str(sizes.capacity_hold), "--pairs", str(sizes.capacity_pairs),
           "--window", str(sizes.capacity_window), "--seconds", str(sizes.capacity_seconds)]
    if app:
        cmd += ["--app-id", app[0], "--app-key", app[1]]
    sampler = ProcSampler(server_pid, 0.2) if server_pid else None
    phases: Dict[str, float] = {}
    result: Optional[Dict[str, Any]] = None
    limit = (sizes.capacity_connections / 200.0 + sizes.capacity_hold
             + 2 * sizes.capacity_seconds + 120.0)
    if sampler is not None:
        sampler.__enter__()
        time.sleep(0.5)
    base = sampler.sample() if sampler is not None else None
    errfile = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile,
                            stdin=subprocess.DEVNULL, text=True)
    client = ProcSampler(proc.pid, 0.2)
    client.__enter__()
    watchdog = threading.Timer(limit, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        out = cast(IO[str], proc.stdout)
        for line in out:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "phase" in msg:
                phases[msg["phase"]] = msg["t"]
                progress.note("%s: %s%s" % (stack, msg["phase"],
                                            " (%d connections)" % msg["ok"] if "ok" in msg else ""))
            elif "result" in msg:
                result = msg["result"]
        proc.wait(30)
    finally:
        watchdog.cancel()
        client.__exit__()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if sampler is not None:
            time.sleep(0.3)
            sampler.__exit__()
    errfile.seek(0)
    err = errfile.read().decode("utf-8", "replace")
    errfile.close()
    if proc.returncode == -9 and result is None:
        raise BenchError("the capacity workload (%s) did not finish in %.0f s" % (stack, limit))
    if proc.returncode != 0 or result is None:
        raise BenchError("the capacity workload (%s) failed (exit %s): %s"
                         % (stack, proc.returncode, err.strip()[-1500:]))
    if sampler is not None and base is not None:
        result["server"] = _server_figures(sampler, base, phases, result)
    # The load generator's own CPU: near 100 (one core) means the clients, not the server,
    # set the message rate.
    result["client_cpu_percent"] = {name: client.window(phases[a], phases[b])["cpu_percent"]
                                    for name, a, b in _WINDOWS if a in phases and b in phases}
    return result


_WINDOWS: List[Tuple[str, str, str]] = [
    ("login", "login_start", "login_end"), ("hold", "login_end", "hold_end"),
    ("reliable", "reliable_start", "reliable_end"),
    ("unreliable", "unreliable_start", "unreliable_end")]


def _server_figures(sampler: ProcSampler, base: tuple[float, float, int],
                    phases: Dict[str, float], result: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"baseline_rss_mb": base[2] / 2**20}
    for name, a, b in _WINDOWS:
        if a in phases and b in phases:
            out[name] = sampler.window(phases[a], phases[b])
    hold = out.get("hold")
    conns = result.get("connections", 0)
    if hold and hold.get("rss_mb") is not None and conns:
        out["rss_kib_per_connection"] = (hold["rss_mb"] - out["baseline_rss_mb"]) * 1024.0 / conns
    peaks = [w["rss_peak_mb"] for w in out.values()
             if isinstance(w, dict) and w.get("rss_peak_mb") is not None]
    out["rss_peak_mb"] = max(peaks) if peaks else None
    return out


def run_raw_rtt(stack: str, host: str, port: int, path: str, echoes: int, warmup: int,
                app: Sequence[str] = (), timeout: float = 120.0) -> Dict[str, Any]:
    """Sequential echoes between two raw clients (:mod:`.rawclient`, no SDK threads) through
    the server or broker: its own share of the round trip, reliable / QoS 1 and unreliable /
    QoS 0."""
    cmd = [sys.executable, "-m", "rts_sync.bench.rawclient", stack, "--host", host,
           "--port", str(port), "--path", path, "--echoes", str(echoes), "--warmup", str(warmup)]
    if app:
        cmd += ["--app-id", app[0], "--app-key", app[1]]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError("the raw RTT run (%s) did not finish in %.0f s" % (stack, timeout)) from None
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        raise BenchError("the raw RTT run (%s) failed (exit %s): %s"
                         % (stack, res.returncode, res.stderr.strip()[-1500:]))
    result: Dict[str, Any] = json.loads(lines[-1])["result"]
    return result
