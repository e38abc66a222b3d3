"""The supervisor thread: opens connections and keeps the heartbeat.

It makes every connection attempt (a fresh socket each, through :class:`Connector`) and hands
the connected socket to the I/O thread; while a session is up it sends a heartbeat every
``heartbeat_interval`` and declares the link dead when nothing at all arrived for
``heartbeat_timeout``, independently of how slow user callbacks are (they run elsewhere).
It waits on one Condition with the exact time to its next deadline, so an idle engine
without a session never wakes up.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

from ..errors import TransportError
from .transport import Connector

if TYPE_CHECKING:
    from .io_thread import IOThread

__all__ = ["HeartbeatPolicy", "Supervisor"]

log = logging.getLogger(__name__)
hb_log = logging.getLogger(__name__ + ".heartbeat")


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._io = io
        self._urls = urls
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._want_connect = False
        self._stopping = False
        self._last_ping = 0.0
        self.connector = Connector()
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

    def _run(self) -> None:
        wait: Optional[float] = None
        while True:
            with self._cond:
                if not self._want_connect and not self._stopping:
                    self._cond.wait(wait)
                if self._stopping:
                    return
                want = self._want_connect
                self._want_connect = False
            if want:
                self._connect()
            wait = self.run_once(self._clock())

    def _connect(self) -> None:
        last: Optional[TransportError] = None
        for url in self._urls():
            try:
                sock = self.connector.connect(url, self._connect_timeout())
            except TransportError as exc:
                log.info("connecting to %s failed: %s", url, exc)
                last = exc
                continue
            log.info("connected to %s", url)
            self._io.submit(self._io.attach, sock, url)
            return
        self._io.submit(self._io.connect_failed, last or TransportError("no server_url to try"))
