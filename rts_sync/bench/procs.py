"""The processes the bench starts and watches: rts-server, the mosquitto broker, and a sampler of
a process's CPU and memory.

Every process started here listens on a free loopback port and is stopped (SIGTERM, then SIGKILL)
when its context ends.

Threading: :class:`ProcSampler` samples on a thread of its own; everything else runs on the
caller's thread.
"""

from __future__ import annotations

import importlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import psutil

from .common import APP_ID, APP_KEY, BenchError, free_port

__all__ = ["ForeignLoad", "Mosquitto", "ProcSampler", "RtsServer", "find_mosquitto", "raise_fd_limit"]

_UVLOOP_LAUNCHER = (
    "import asyncio, sys, uvloop\n"
    "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
    "from rts_sync.server.__main__ import main\n"
    "sys.exit(main(sys.argv[1:]))\n")


def raise_fd_limit() -> int:
    """Raise this process's descriptor limit (inherited by the processes it starts) to the hard
    limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return int(hard if soft == resource.RLIM_INFINITY else soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)
    except (ValueError, OSError):
        return int(soft)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _tail(f: IO[bytes], limit: int = 2000) -> str:
    try:
        f.seek(0)
        return f.read().decode("utf-8", "replace")[-limit:].strip()
    except (OSError, ValueError):
        return ""


class RtsServer:
    """``rts-server`` in a child process on a free loopback port (``uvloop``: run it under
    uvloop's event loop, without changing the server)."""

    def __init__(self, uvloop: bool = False, host: str = "127.0.0.1",
                 limits: Optional[Dict[str, str]] = None) -> None:
        self.host = host
        self.port = free_port(host)
        self.uvloop = uvloop
        self.limits = {"max_connections_per_ip": "1000000", "max_sessions_per_app": "1000000"}
        self.limits.update(limits or {})
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def url(self) -> str:
        return "ws://%s:%d/rts" % (self.host, self.port)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> RtsServer:
        args = ["--app", "%s:%s" % (APP_ID, APP_KEY), "--host", self.host, "--port",
                str(self.port), "--log-level", "WARNING"]
        for name, value in self.limits.items():
            args += ["--limit", "%s=%s" % (name, value)]
        if self.uvloop:
            try:
                importlib.import_module("uvloop")
            except ImportError:
                raise BenchError("--server-uvloop needs uvloop (pip install uvloop)") from None
            cmd = [sys.executable, "-c", _UVLOOP_LAUNCHER, *args]
        else:
            cmd = [sys.executable, "-m", "rts_sync.server", *args]
        try:
            importlib.import_module("aiohttp")
        except ImportError:
            raise BenchError("starting rts-server needs aiohttp: pip install 'rts_sync[bench]' "
                             "(or give --url of a running server)") from None
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15.0
        health = "http://%s:%d/healthz" % (self.host, self.port)
        while True:
            if self.proc.poll() is not None:
                out = _tail(self._log)
                self.__exit__()
                raise BenchError("rts-server exited with code %s: %s" % (self.proc.returncode, out))
            try:
                with urllib.request.urlopen(health, timeout=1.0) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise BenchError("rts-server did not answer %s within 15 s" % health)
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        return _tail(self._log) if self._log is not None else ""


def find_mosquitto(path: Optional[str]) -> str:
    """The mosquitto executable: ``path``, else on PATH, else Debian's /usr/sbin/mosquitto.
    BenchError (with how to install it) when there is none."""
    if path:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
        raise BenchError("--compare mqtt: mosquitto not found at %s (Debian: apt-get install "
                         "mosquitto)" % path)
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if found is None:
        raise BenchError("--compare mqtt needs the mosquitto broker, which is not installed "
                         "(Debian: apt-get install mosquitto; or give --mosquitto PATH)")
    return found


class Mosquitto:
    """A mosquitto broker on a free loopback port with TCP_NODELAY, no persistence, and queues
    large enough that a benchmark burst is never dropped by the broker."""

    def __init__(self, exe: str, host: str = "127.0.0.1") -> None:
        self.exe = exe
        self.host = host
        self.port = free_port(host)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self._dir: Optional[tempfile.TemporaryDirectory[str]] = None
        self._log: Optional[IO[bytes]] = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Mosquitto:
        self._dir = tempfile.TemporaryDirectory(prefix="rts-bench-mqtt-")
        conf = os.path.join(self._dir.name, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d %s\nallow_anonymous true\nset_tcp_nodelay true\n"
                    "persistence false\nmax_queued_messages 1000000\nmax_inflight_messages 20\n"
                    "log_dest stderr\nlog_type error\n" % (self.port, self.host))
        os.chmod(self._dir.name, 0o755)
        os.chmod(conf, 0o644)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([self.exe, "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10.0
        while True:
            if self.proc.poll() is not None:
                out = _tail(self._log)
                self.__exit__()
                raise BenchError("mosquitto exited with code %s: %s" % (self.proc.returncode, out))
            try:
                socket.create_connection((self.host, self.port), timeout=1.0).close()
                return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise BenchError("mosquitto did not listen on port %d within 10 s" % self.port)
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class ProcSampler:
    """Samples a process's CPU time and RSS every ``interval`` seconds on a thread, so a workload
    can ask for the CPU% and memory of any time window afterwards."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        #: (wall time, cpu seconds user+system, rss bytes)
        self.samples: List[Tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rts-bench-sampler", daemon=True)

    def __enter__(self) -> ProcSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5.0)

    def sample(self) -> Tuple[float, float, int]:
        try:
            with self.proc.oneshot():
                t = self.proc.cpu_times()
                s = (time.time(), t.user + t.system, self.proc.memory_info().rss)
        except psutil.Error:
            return self.samples[-1] if self.samples else (time.time(), 0.0, 0)
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def window(self, start: float, end: float) -> Dict[str, Any]:
        """CPU% (100 = one core) between wall times ``start`` and ``end``, and the RSS at the
        end and its peak in the window (MB)."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        before = [s for s in self.samples if s[0] <= start]
        after = [s for s in self.samples if s[0] >= end]
        first = before[-1] if before else (inside[0] if inside else None)
        last = after[0] if after else (inside[-1] if inside else None)
        if first is None or last is None or last[0] <= first[0]:
            return {"cpu_percent": None, "rss_mb": None, "rss_peak_mb": None}
        peak = max([s[2] for s in inside] + [first[2], last[2]])
        return {"cpu_percent": 100.0 * (last[1] - first[1]) / (last[0] - first[0]),
                "rss_mb": last[2] / 2**20, "rss_peak_mb": peak / 2**20}


def versions(extra: Sequence[str] = ()) -> Dict[str, str]:
    """Versions of what is measured: Python, the packages involved, mosquitto."""
    out: Dict[str, str] = {"python": sys.version.split()[0]}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return out
    for pkg in ("rts_sync", "websocket-client", "cbor2", "aiohttp", "paho-mqtt", "uvloop",
                *extra):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def mosquitto_version(exe: str) -> str:
    try:
        res = subprocess.run([exe, "-h"], capture_output=True, timeout=5)
        first = (res.stdout or res.stderr).decode("utf-8", "replace").splitlines()
        return first[0].replace("mosquitto version", "").strip() if first else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> Dict[str, Any]:
    """nproc, CPU model, memory, kernel, Python: what the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "kernel": os.uname().release, "python": sys.version.split()[0],
            "implementation": sys.implementation.name}


class ForeignLoad:
    """How busy the machine was with work that is not this benchmark's: all CPUs' busy time
    minus this process tree's, as a percentage of all cores, between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self._t0 = self._sys0 = self._own0 = 0.0

    @staticmethod
    def _system_busy() -> float:
        # Interrupt time is left out: loopback traffic of the benchmark itself is processed
        # there without being charged to its processes.
        t = psutil.cpu_times()
        return float(sum(t) - t.idle - sum(getattr(t, f, 0.0) for f in ("iowait", "irq",
                                                                         "softirq")))

    @staticmethod
    def _own() -> float:
        me = psutil.Process()
        total = 0.0
        try:
            c = me.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
            for child in me.children(recursive=True):
                try:
                    cc = child.cpu_times()
                    total += cc.user + cc.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def start(self) -> None:
        self._t0, self._sys0, self._own0 = time.monotonic(), self._system_busy(), self._own()

    def stop(self) -> float:
        wall = time.monotonic() - self._t0
        if wall <= 0:
            return 0.0
        foreign = (self._system_busy() - self._sys0) - (self._own() - self._own0)
        return max(0.0, 100.0 * foreign / wall / (psutil.cpu_count() or 1))
