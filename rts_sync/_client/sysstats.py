"""System statistics for ``on_sys_stats``: a sampler over psutil, with the units of reference §3.9.

=====================  ==========================================================  =======
field                  source                                                      unit
=====================  ==========================================================  =======
cpu_cores              ``psutil.cpu_count()`` (logical CPUs)                       count
cpu_app_usage          this process's CPU time since the previous sample, over     0..1
                       wall time times ``cpu_cores``
cpu_total_usage        busy share of all CPUs since the previous sample (from      0..1
                       ``psutil.cpu_times()``: everything but idle and iowait)
memory_usage           this process's resident set size                            MB
full_memory            ``virtual_memory().total``                                  MB
total_memory_usage     ``total - available`` (memory in use, system-wide)          MB
free_memory            ``virtual_memory().available`` (allocatable without swap)   MB
memory_ratio           ``memory_usage / full_memory``                              percent
total_memory_ratio     ``total_memory_usage / full_memory``                        percent
=====================  ==========================================================  =======

MB means 2**20 bytes. The CPU figures are deltas between samples; the sampler takes its
reference point when it is created (at engine start), so the first sample is already a real
measurement over the time since then. Each sampler keeps its own reference points (it does not
use ``psutil.cpu_percent()``'s module-wide state), so several engines do not disturb each other.

Threading: a sampler is used by one thread at a time (the engine's supervisor thread).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Tuple

import psutil

from ..types import SysStats

__all__ = ["SysStatsSampler"]

_MB = 1024 * 1024


def _cpu_busy_total() -> Tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    t = psutil.cpu_times()
    # On Linux guest time is already counted in user/nice (psutil's cpu_percent does the same).
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


class SysStatsSampler:
    """Produces :class:`~rts_sync.types.SysStats` on demand (see the module docstring).

    Threading: not thread-safe; one thread samples.
    """

    def __init__(self, process: Optional[psutil.Process] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._proc = process or psutil.Process()
        self._clock = clock
        self._cores = psutil.cpu_count() or 1
        self._last_wall = clock()
        self._last_app = self._app_cpu()
        self._last_busy, self._last_total = _cpu_busy_total()

    def _app_cpu(self) -> float:
        t = self._proc.cpu_times()
        return float(t.user + t.system)

    def sample(self) -> SysStats:
        """One measurement; CPU usages cover the time since the previous one (or creation)."""
        now = self._clock()
        app = self._app_cpu()
        busy, total = _cpu_busy_total()
        wall = now - self._last_wall
        app_usage = (app - self._last_app) / (wall * self._cores) if wall > 0 else 0.0
        total_delta = total - self._last_total
        total_usage = (busy - self._last_busy) / total_delta if total_delta > 0 else 0.0
        self._last_wall, self._last_app = now, app
        self._last_busy, self._last_total = busy, total

        vm = psutil.virtual_memory()
        rss = self._proc.memory_info().rss
        full = vm.total
        used = max(full - vm.available, 0)
        return SysStats(
            cpu_cores=self._cores,
            cpu_app_usage=_fraction(app_usage),
            cpu_total_usage=_fraction(total_usage),
            memory_usage=rss / _MB,
            full_memory=full // _MB,
            total_memory_usage=used // _MB,
            free_memory=vm.available // _MB,
            memory_ratio=100.0 * rss / full if full else 0.0,
            total_memory_ratio=100.0 * used / full if full else 0.0,
        )


def _fraction(value: float) -> float:
    return min(max(value, 0.0), 1.0)
