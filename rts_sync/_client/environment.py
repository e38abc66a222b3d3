"""An engine's view of its surroundings: local proxies, the cellular path, network type, sys stats.

The supervisor thread drives it: :meth:`Environment.run_once` on its timer (one timed Condition
wait in the supervisor, no thread or polling loop of its own), :meth:`Environment.routes` at
each connection attempt. The app's threads only assign ``proxies`` and
``cellular_enhancement`` (whole-object assignments, read at the next attempt).

Every ``stats_interval`` seconds (runtime parameter, default 2.0) while the engine exists it
samples :class:`~rts_sync.types.SysStats` and fires ``on_sys_stats``. The network type is read
once when the engine starts (``on_network_type_changed`` fires then) and again at each of those
ticks while the engine is logged in or connecting; ``on_network_type_changed`` fires when the
type changed, and when the type or the default route's interface changed while a session is
up, the I/O thread is told to close it with reason ``NETWORK_CHANGED`` (its socket most likely
runs over a path that is gone). Callbacks run on the dispatcher like every other callback.

Threading: ``run_once`` and ``routes`` run on the supervisor thread only.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Hashable, List, Optional, Tuple

from ..enums import LocalProxyError, LocalProxyState, LocalProxyType
from ..types import LocalProxyConfiguration
from . import netinfo
from .events import CONN_LANE
from .netinfo import CellularPath, NetworkSnapshot
from .proxy import select_proxy
from .sysstats import SysStatsSampler

if TYPE_CHECKING:
    from .core import EngineCore

__all__ = ["Environment", "Route"]

log = logging.getLogger(__name__)

#: (proxy or None, interface to bind to or None): one way to reach the server.
Route = Tuple[Optional[LocalProxyConfiguration], Optional[CellularPath]]
EmitFn = Callable[[Hashable, str, Tuple[Any, ...]], None]

#: Dispatcher lane of ``on_sys_stats`` (kept apart from connection events).
STATS_LANE = "sys"


class Environment:
    """Proxies, cellular path, network type and sys stats of one engine (module docstring).

    Threading: see the module docstring.
    """

    def __init__(self, emit: EmitFn, active: Callable[[], bool],
                 network_changed: Callable[[], None], interval: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic,
                 detect: Callable[[], NetworkSnapshot] = netinfo.detect_shared,
                 cellular: Callable[[], List[CellularPath]] = netinfo.cellular_interfaces,
                 sampler: Optional[SysStatsSampler] = None,
                 wants_stats: Callable[[], bool] = lambda: True) -> None:
        self._wants_stats = wants_stats
        self.proxies: Tuple[LocalProxyConfiguration, ...] = ()
        self.cellular_enhancement = False
        self._emit = emit
        self._active = active
        self._network_changed = network_changed
        self._interval = interval
        self._detect = detect
        self._cellular = cellular
        self._sampler = sampler or SysStatsSampler()  # the CPU reference point: engine start
        self._interval_used = interval()
        self._next_tick = clock() + self._interval_used
        self.network: Optional[NetworkSnapshot] = None

    @classmethod
    def for_engine(cls, core: EngineCore) -> Environment:
        """Wired to ``core``'s dispatcher, I/O thread and configuration."""
        io = core.io

        def emit(lane: Hashable, method: str, args: Tuple[Any, ...]) -> None:
            core.dispatcher.submit_many([core.emit.task(lane, method, args)])

        def wants_stats() -> bool:
            # Sampling costs most of an idle engine's CPU: only for a handler that listens.
            from ..handlers import RTSEventHandler

            method = getattr(type(core.handler), "on_sys_stats", None)
            return core.handler is not None and method is not RTSEventHandler.on_sys_stats

        return cls(emit, lambda: bool(io.session_active or io.logged_in or io.login_pending),
                   lambda: io.submit(io.network_changed), lambda: core.config.stats_interval,
                   wants_stats=wants_stats)

    # ------------------------------------------------------------------ the timer
    def run_once(self, now: float) -> float:
        """Do what is due at ``now``; seconds until something is due again."""
        if self.network is None:
            self._check_network(first=True)
        interval = self._interval()
        if interval != self._interval_used:  # changed at runtime: the next tick moves too
            self._next_tick += interval - self._interval_used
            self._interval_used = interval
        if now >= self._next_tick:
            self._next_tick += interval
            if self._next_tick <= now:  # fell behind (a long connect attempt): skip, no burst
                self._next_tick = now + interval
            try:
                if self._wants_stats():
                    self._emit(STATS_LANE, "on_sys_stats", (self._sampler.sample(),))
            except Exception:  # psutil refused (a sandbox, a platform without /proc): skip one
                log.exception("sampling system stats failed")
            if self._active():
                self._check_network(first=False)
        return max(self._next_tick - now, 0.0)

    def _check_network(self, first: bool) -> None:
        try:
            snap = self._detect()
        except Exception:  # a surprise in /proc or psutil must not stop the supervisor
            log.exception("network type detection failed")
            return
        old, self.network = self.network, snap
        if old is None or snap.type != old.type:
            log.info("network type %s (interface %s)", snap.type.name, snap.interface)
            self._emit(CONN_LANE, "on_network_type_changed", (snap.type,))
        if not first and old is not None and snap != old:
            log.info("network changed from %s/%s to %s/%s", old.type.name, old.interface,
                     snap.type.name, snap.interface)
            self._network_changed()

    # ------------------------------------------------------------------ connection attempts
    def routes(self) -> List[Route]:
        """The ways to try, in order: the primary path (through the selected proxy, if any),
        then, with cellular enhancement on, the same bound to a cellular interface that is not
        the default route's."""
        proxy = select_proxy(self.proxies)
        out: List[Route] = [(proxy, None)]
        if self.cellular_enhancement:
            default = self.network.interface if self.network is not None else None
            for path in self._cellular():
                if path.interface != default:
                    out.append((proxy, path))
                    break
        return out

    def on_proxy_state(self, kind: LocalProxyType, state: LocalProxyState,
                       error: LocalProxyError) -> None:
        log.info("local proxy %s: %s (%s)", kind.name, state.name, error.name)
        self._emit(CONN_LANE, "on_local_proxy_state_changed", (kind, state, error))
