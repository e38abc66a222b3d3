"""Shared pieces of rts-bench: sizes, payloads, statistics, progress, errors.

Threading: everything here is plain data or used from the bench's main thread, except
:class:`Counter` and :class:`SeqChecker`, which receiver callbacks update from their threads.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

__all__ = ["APP_ID", "APP_KEY", "PAYLOAD_SIZE", "BenchError", "Progress", "SeqChecker", "Sizes",
           "free_port", "make_payload", "parse_payload", "percentiles", "wait_until"]

#: The app the bench's own server serves (app ids are exactly 24 characters).
APP_ID = "rtsbench0000000000000001"
APP_KEY = "rts-bench-app-key"
#: Every message of the throughput, latency and fan-out workloads is this many bytes.
PAYLOAD_SIZE = 64
_PAD = "x" * PAYLOAD_SIZE


class BenchError(Exception):
    """A problem the user can fix (missing broker or package, server not reachable): printed as
    one line, no traceback."""


@dataclass
class Sizes:
    """How much each workload does; every loop is bounded by these counts and by ``timeout``."""

    p2p_messages: int = 20000
    rtt_echoes: int = 5000
    rtt_warmup: int = 500
    fanout_members: Sequence[int] = (20, 100)
    #: Deliveries per burst (each member gets deliveries / members messages).
    fanout_deliveries: int = 40000
    #: Sequential (unloaded) broadcasts whose one-way latencies give the fan-out percentiles.
    fanout_latency_rounds: int = 200
    idle_engines: int = 100
    idle_seconds: float = 30.0
    capacity_connections: int = 10000
    capacity_concurrency: int = 200
    capacity_hold: float = 10.0
    capacity_pairs: int = 500
    capacity_seconds: float = 5.0
    capacity_window: int = 32
    #: Seconds a single workload may take before it gives up (what was measured is kept).
    timeout: float = 120.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(p2p_messages=1000, rtt_echoes=100, rtt_warmup=20, fanout_members=(5,),
                   fanout_deliveries=500, fanout_latency_rounds=20, idle_engines=3,
                   idle_seconds=2.0, capacity_connections=100, capacity_concurrency=50,
                   capacity_hold=1.0, capacity_pairs=2, capacity_seconds=1.0, timeout=20.0)

    def as_dict(self) -> Dict[str, Any]:
        d = dict(self.__dict__)
        d["fanout_members"] = list(self.fanout_members)
        return d


def make_payload(seq: int) -> str:
    """A 64-character text: the sequence number and the send time (perf_counter_ns)."""
    head = "%010d %020d " % (seq, time.perf_counter_ns())
    return head + _PAD[len(head):]


def parse_payload(payload: Any) -> tuple[int, int]:
    """(seq, send time in ns) of :func:`make_payload`'s text (or its UTF-8 bytes)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = payload.decode("ascii")
    return int(payload[:10]), int(payload[11:31])


def percentiles(samples_ns: Sequence[int]) -> Dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds (nearest-rank), and the sample count."""
    if not samples_ns:
        return {"n": 0}
    s = sorted(samples_ns)

    def rank(p: float) -> float:
        return s[max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))] / 1e6

    return {"n": len(s), "p50_ms": rank(50), "p90_ms": rank(90), "p99_ms": rank(99),
            "max_ms": s[-1] / 1e6, "mean_ms": sum(s) / len(s) / 1e6}


class SeqChecker:
    """Counts what one receiver got from one sender: unique, lost, duplicated, reordered.

    Threading: ``take`` is called from one callback thread at a time (one peer's or room's
    events are ordered); the readers wait on ``done``.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = bytearray(expected)
        self.received = 0
        self.unique = 0
        self.duplicated = 0
        self.reordered = 0
        self.highest = -1
        self.last_ns = 0
        self.latencies_ns: List[int] = []
        self.record_latency = False
        self.done = threading.Event()

    def take(self, seq: int, sent_ns: int) -> None:
        now = time.perf_counter_ns()
        self.received += 1
        self.last_ns = now
        if self.record_latency:
            self.latencies_ns.append(now - sent_ns)
        if 0 <= seq < self.expected:
            if self.seen[seq]:
                self.duplicated += 1
            else:
                self.seen[seq] = 1
                self.unique += 1
        if seq < self.highest:
            self.reordered += 1
        else:
            self.highest = seq
        if self.unique >= self.expected:
            self.done.set()

    def summary(self) -> Dict[str, int]:
        return {"sent": self.expected, "received": self.received,
                "lost": self.expected - self.unique, "duplicated": self.duplicated,
                "reordered": self.reordered}


def wait_until(done: Callable[[], bool], progress: Callable[[], int], deadline: float,
               quiet: float = 2.0, tick: Optional[Callable[[], None]] = None) -> bool:
    """Wait until ``done()``; give up at ``deadline`` (a perf_counter time) or when
    ``progress()`` has not changed for ``quiet`` seconds. True if done."""
    last, last_change = progress(), time.perf_counter()
    while not done():
        now = time.perf_counter()
        if now >= deadline:
            return False
        cur = progress()
        if cur != last:
            last, last_change = cur, now
        elif now - last_change >= quiet:
            return False
        if tick is not None:
            tick()
        time.sleep(0.02)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Progress:
    """Progress on stderr: one line per step, and a live counter on a terminal."""

    total_steps: int
    enabled: bool = True
    step_no: int = 0
    _name: str = ""
    _tty: bool = field(default_factory=lambda: sys.stderr.isatty())
    _last: float = 0.0
    _started: float = 0.0
    _open: bool = False

    def step(self, name: str) -> None:
        self.step_no += 1
        self._name = name
        self._started = time.perf_counter()
        if self.enabled:
            self._finish_line()
            sys.stderr.write("[%d/%d] %s ..." % (self.step_no, self.total_steps, name)
                             + ("" if self._tty else "\n"))
            sys.stderr.flush()
            self._open = self._tty

    def update(self, done: float, total: float, unit: str = "") -> None:
        """A live ``done/total`` on a terminal, at most 10 times a second."""
        now = time.perf_counter()
        if not (self.enabled and self._tty) or now - self._last < 0.1:
            return
        self._last = now
        width = 24
        filled = int(width * min(1.0, done / total)) if total else 0
        sys.stderr.write("\r[%d/%d] %s [%s%s] %d/%d%s  " % (
            self.step_no, self.total_steps, self._name, "#" * filled, "." * (width - filled),
            done, total, unit))
        sys.stderr.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self._finish_line()
            sys.stderr.write("  %s\n" % text)
            sys.stderr.flush()

    def done(self, summary: str = "") -> None:
        if self.enabled:
            took = time.perf_counter() - self._started
            if self._tty:
                sys.stderr.write("\r[%d/%d] %s: %s (%.1f s)%s\n" % (
                    self.step_no, self.total_steps, self._name, summary, took, " " * 20))
            else:
                sys.stderr.write("  -> %s (%.1f s)\n" % (summary, took))
            sys.stderr.flush()
            self._open = False

    def _finish_line(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            self._open = False


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false", "no")
