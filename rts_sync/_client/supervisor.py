"""The supervisor thread: opens connections and keeps the heartbeat.

It makes every connection attempt (a fresh socket each, through :class:`Connector`) and hands
the connected socket to the I/O thread; while a session is up it sends a heartbeat every
``heartbeat_interval`` and declares the link dead when nothing at all arrived for
``heartbeat_timeout``, independently of how slow user callbacks are (they run elsewhere).
It also runs the engine's :class:`~.environment.Environment` timer (sys stats, network type)
and asks it, at every attempt, which routes to try (proxy, then the cellular path).
It waits on one Condition with the exact time to its next deadline (the heartbeat's or the
environment's), never a polling loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from ..errors import TransportError
from .config import RuntimeConfig
from .transport import Connector

if TYPE_CHECKING:
    from .environment import Environment
    from .io_thread import IOThread

__all__ = ["Backoff", "HeartbeatPolicy", "Supervisor"]

log = logging.getLogger(__name__)
hb_log = logging.getLogger(__name__ + ".heartbeat")


class Backoff:
    """Capped exponential backoff with full jitter: attempt n waits U(0, min(cap, base * 2**n)).

    Threading: stateless apart from its settings; ``rng`` is injected for tests.
    """

    def __init__(self, base: float, cap: float, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng

    def delay(self, attempt: int) -> float:
        return float(self.rng() * min(self.cap, self.base * (2.0 ** min(attempt, 32))))


class HeartbeatPolicy:
    """Pure heartbeat timing: what to do at ``now`` and when to look again.

    Threading: stateless apart from its settings; safe anywhere.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout

    def check(self, now: float, last_rx: float, last_ping: float) -> Tuple[bool, bool, float]:
        """(send a ping now, link is dead, seconds until the next check)."""
        if now - last_rx >= self.timeout:
            return False, True, self.interval
        ping = now - last_ping >= self.interval
        next_ping = (now if ping else last_ping) + self.interval
        wait = min(next_ping, last_rx + self.timeout) - now
        return ping, False, max(wait, 0.0)


class Supervisor:
    """Connection attempts and heartbeat for one engine (see the module docstring).

    Threading: its own thread ``rts-supervisor-<id>``; other threads use ``request_connect``,
    ``session_changed`` and ``stop``.
    """

    def __init__(self, name: str, io: IOThread, urls: Callable[[], List[str]],
                 heartbeat: Callable[[], HeartbeatPolicy],
                 connect_timeout: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic,
                 env: Optional[Environment] = None,
                 config: Optional[Callable[[], RuntimeConfig]] = None) -> None:
        self._io = io
        self._config: Callable[[], RuntimeConfig] = config or RuntimeConfig
        self.env = env
        self._urls = urls
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._want_connect = False
        self._stopping = False
        self._last_ping = 0.0
        #: Reconnect state: attempts since the last stable connection, when to try next.
        self._attempt = 0
        self._next_try: Optional[float] = None
        self._connected_at: Optional[float] = None
        self.connector = Connector(lambda: self._config().tls_ca_file)
        self._thread = threading.Thread(target=self._run, name="rts-supervisor-%s" % name,
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_connect(self) -> None:
        with self._cond:
            self._want_connect = True
            self._cond.notify()

    def session_changed(self) -> None:
        """The I/O thread started or ended a session: recompute the heartbeat deadline."""
        with self._cond:
            self._last_ping = self._clock()
            self._cond.notify()

    def request_reconnect(self, immediately: bool = False) -> None:
        """Connect again after the backoff delay of the next attempt (I/O thread calls this
        after a drop and after each failed attempt). The attempt count starts again once a
        connection lasted ``stable_after`` seconds."""
        cfg = self._config()
        with self._cond:
            now = self._clock()
            if self._connected_at is not None and now - self._connected_at >= cfg.stable_after:
                self._attempt = 0
            self._connected_at = None
            backoff = Backoff(cfg.reconnect_backoff_base, cfg.reconnect_backoff_cap)
            delay = 0.0 if immediately else backoff.delay(self._attempt)
            self._attempt += 1
            log.info("reconnecting in %.2fs (attempt %d)", delay, self._attempt)
            self._next_try = now + delay
            self._cond.notify()

    @property
    def attempts(self) -> int:
        """Reconnect attempts since the last stable connection."""
        return self._attempt

    @property
    def next_attempt_at(self) -> Optional[float]:
        """When the next reconnect attempt is due (the injected clock's time), if one is."""
        return self._next_try

    def reconnected(self) -> None:
        """A session is up again: it counts as stable after ``stable_after`` seconds."""
        with self._cond:
            self._connected_at = self._clock()

    def wake(self) -> None:
        """Recompute the deadlines now (runtime parameters changed)."""
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.connector.abort()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("supervisor thread did not stop within %gs", timeout)

    def run_once(self, now: float) -> Optional[float]:
        """One heartbeat step at ``now``; returns seconds until the next one (None: idle)."""
        io = self._io
        if not io.session_active or io.paused:
            return None
        policy = self._heartbeat()
        ping, dead, wait = policy.check(now, io.last_rx, self._last_ping)
        if dead:
            hb_log.info("no frame from the server for %.1fs: link is dead", now - io.last_rx)
            io.submit(io.heartbeat_timeout)
            return None
        if ping:
            self._last_ping = now
            hb_log.debug("ping")
            io.submit(io.send_ping)
        return wait

    def _env_step(self, wait: Optional[float]) -> Optional[float]:
        if self.env is None:
            return wait
        env_wait = self.env.run_once(self._clock())
        return env_wait if wait is None else min(wait, env_wait)

    def _run(self) -> None:
        wait = self._env_step(None)
        while True:
            with self._cond:
                if self._next_try is not None:  # a reconnect is due at _next_try
                    until = max(self._next_try - self._clock(), 0.0)
                    wait = until if wait is None else min(wait, until)
                if not self._want_connect and not self._stopping and wait != 0.0:
                    self._cond.wait(wait)
                if self._stopping:
                    return
                if self._next_try is not None and self._clock() >= self._next_try:
                    self._next_try = None
                    self._want_connect = True
                want = self._want_connect
                self._want_connect = False
            if want:
                self._connect()
            wait = self._env_step(self.run_once(self._clock()))

    def _connect(self) -> None:
        last: Optional[TransportError] = None
        env = self.env
        for url in self._urls():
            for proxy, path in env.routes() if env is not None else [(None, None)]:
                try:
                    sock = self.connector.connect(url, self._connect_timeout(), proxy, path,
                                                  env.on_proxy_state if env else None)
                except TransportError as exc:
                    log.info("connecting to %s%s failed: %s", url,
                             " via %s" % path.interface if path else "", exc)
                    last = exc
                    self._env_step(None)  # keep the stats ticking between long attempts
                    continue
                except Exception as exc:  # a bug of ours: fail this attempt, keep the thread
                    log.exception("connecting to %s failed unexpectedly", url)
                    last = TransportError("internal error while connecting: %r" % exc)
                    continue
                log.info("connected to %s%s", url, " via %s" % path.interface if path else "")
                self._io.submit(self._io.attach, sock, url)
                return
        self._io.submit(self._io.connect_failed, last or TransportError("no server_url to try"))
