"""A fault-injecting TCP proxy for tests: put it between a client and a server, then cut, refuse,
blackhole, stall, delay or throttle the connections through it (usable in your own tests too)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import selectors
import socket
import struct
import threading
import time
from types import TracebackType
from typing import Any, Callable, ClassVar, Deque, List, Optional, Set, Tuple, Type, cast

__all__ = ["FaultProxy"]

log = logging.getLogger(__name__)

_CHUNK = 65536
_COMMAND_TIMEOUT = 5.0  # how long a fault method waits for the proxy thread to apply it
_ABORT_LINGER = struct.pack("ii", 1, 0)
_WAKE, _LISTEN, _HOLE = object(), object(), object()  # selector key data of the non-connections
_R, _W = selectors.EVENT_READ, selectors.EVENT_WRITE
_IN_PROGRESS = (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN)


def _close(sock: socket.socket, abort: bool) -> None:
    """Close ``sock``; ``abort``: with a reset (SO_LINGER 0), so that its peer notices at once."""
    if abort:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT_LINGER)
        except OSError:
            pass
    sock.close()


def _prepare(sock: socket.socket) -> socket.socket:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class _Flow:
    """One direction of a connection: bytes read from ``src``, waiting to be written to ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, now: float) -> None:
        self.src, self.dst = src, dst
        self.chunks: Deque[Tuple[float, memoryview]] = collections.deque()  # (release time, data)
        self.size = 0  #: bytes buffered
        self.eof = False  #: src sent its FIN
        self.shut = False  #: ... and it went on to dst, after every buffered byte
        self.blocked = False  #: dst's send buffer is full: wait until it is writable
        self.tokens, self.stamp = 0.0, now  #: the throttle's token bucket
        self.wake_at: Optional[float] = None  #: when a delayed or throttled chunk may go

    def wants_read(self, limit: int) -> bool:
        return not self.eof and self.size < limit

    def read(self, now: float, delay: float, limit: int) -> None:
        data = self.src.recv(min(_CHUNK, limit - self.size))
        if not data:
            self.eof = True
        else:
            self.chunks.append((now + delay, memoryview(data)))
            self.size += len(data)

    def pump(self, now: float, rate: Optional[int]) -> int:
        """Write to dst what may go now, in order; return the bytes written. Raises OSError."""
        sent, self.wake_at = 0, None
        while self.chunks and not self.blocked:
            release, data = self.chunks[0]
            if release > now:
                self.wake_at = release
                break
            n = len(data)
            if rate is not None:
                burst = max(1, rate // 10)
                self.tokens = min(float(burst), self.tokens + (now - self.stamp) * rate)
                self.stamp = now
                if self.tokens < min(burst, n):
                    self.wake_at = now + (min(burst, n) - self.tokens) / rate
                    break
                n = min(n, int(self.tokens))
            try:
                k = self.dst.send(data[:n])
            except BlockingIOError:
                k = 0
            if rate is not None:
                self.tokens -= k
            sent, self.size = sent + k, self.size - k
            if k == len(data):
                self.chunks.popleft()
            else:
                self.chunks[0] = (release, data[k:])
            self.blocked = k < n
        if not self.chunks and self.eof and not self.shut:
            self.dst.shutdown(socket.SHUT_WR)
            self.shut = True
        return sent


@dataclasses.dataclass(frozen=True)
class _Faults:
    refuse: bool = False
    blackhole: bool = False
    stall_up: bool = False
    stall_down: bool = False
    delay: float = 0.0
    rate: Optional[int] = None


class _Conn:
    """A proxied connection: the client's socket, the upstream socket and the two flows."""

    def __init__(self, client: socket.socket, upstream: socket.socket, now: float) -> None:
        self.client, self.upstream = client, upstream
        self.connected = self.closed = False
        self.up, self.down = _Flow(client, upstream, now), _Flow(upstream, client, now)
        self.masks = {client: 0, upstream: 0}


class FaultProxy:
    """A TCP proxy from ``listen_host:listen_port`` (port 0: any free port; ``.host`` and ``.port``
    say where it listens once started) to ``target_host:target_port``, injecting faults on demand.

    Faults: :meth:`cut` (reset every current connection), :meth:`refuse` and :meth:`blackhole` (new
    connections fail or hang), :meth:`stall` (one direction stops: a half-open link),
    :meth:`delay` (latency), :meth:`throttle` (bandwidth); :meth:`reset` turns them all off. Each
    direction of a connection buffers at most ``BUFFER_SIZE`` bytes: when the far side does not
    drain, the near side is not read (backpressure). A connection whose upstream connect fails
    is reset. Counters: ``connections_total`` (every accepted connection, refused ones too),
    :attr:`active_connections`, ``bytes_up`` (written to the target) and ``bytes_down``
    (written to clients). Usage::

        with FaultProxy(server.host, server.port) as proxy:
            client.connect(proxy.url())
            proxy.cut()

    Threading: thread-safe; every method may be called from any thread (faults before
    :meth:`start` too). One daemon thread, ``rts-fault-proxy-<port>``, owns every socket and the
    fault state; a fault method hands it a command, wakes it and waits (bounded) until it has
    applied it, so the fault is in force when the method returns. It runs no user code.
    """

    #: Bytes buffered per direction per connection before the sending side is no longer read.
    BUFFER_SIZE: ClassVar[int] = 256 * 1024

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.host, self.port = listen_host, listen_port
        self._lock = threading.Lock()  # guards _cmds, _running, _stopped and the wake socket
        self._cmds: List[Tuple[Callable[[], None], threading.Event]] = []
        self._running = self._stopped = False
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._sel: Optional[selectors.BaseSelector] = None
        self._listener: Optional[socket.socket] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._target: Tuple[int, int, int, Any] = (0, 0, 0, None)
        # Written by the proxy thread only (by the caller before start()):
        self._conns: List[_Conn] = []
        self._holes: Set[socket.socket] = set()  # blackholed client sockets
        self._faults = _Faults()
        self.connections_total = self.bytes_up = self.bytes_down = 0

    @property
    def active_connections(self) -> int:
        """Connections open now (proxied or blackholed)."""
        return len(self._conns) + len(self._holes)

    def url(self, path: str = "/rts", scheme: str = "ws") -> str:
        """A URL to the proxy, e.g. ``ws://127.0.0.1:PORT/rts``."""
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d%s" % (scheme, host, self.port, path)

    def start(self) -> FaultProxy:
        """Listen and start the proxy thread; return self. Raises OSError if it cannot listen (or
        resolve the target) and RuntimeError if already started or stopped."""
        family, type_, proto, _, addr = socket.getaddrinfo(
            self.target_host, self.target_port, type=socket.SOCK_STREAM)[0]
        with self._lock, contextlib.ExitStack() as stack:
            if self._thread is not None or self._stopped:
                raise RuntimeError("FaultProxy already started or stopped")
            self._target = (family, type_, proto, addr)
            self._listener = stack.enter_context(socket.create_server(
                (self.host, self.port), family=socket.AF_INET6 if ":" in self.host else socket.AF_INET))
            self._wake_r, self._wake_w = (stack.enter_context(s) for s in socket.socketpair())
            self._sel = stack.enter_context(selectors.DefaultSelector())
            for sock, data in ((self._listener, _LISTEN), (self._wake_r, _WAKE)):
                sock.setblocking(False)
                self._sel.register(sock, _R, data)
            self._wake_w.setblocking(False)
            self.port = int(self._listener.getsockname()[1])
            thread = threading.Thread(target=self._run, name="rts-fault-proxy-%d" % self.port,
                                      daemon=True)
            thread.start()
            self._thread, self._running = thread, True
            stack.pop_all()  # started: the proxy thread closes them
        log.debug("fault proxy %d -> %s:%d started", self.port, self.target_host, self.target_port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close every connection and socket and join the proxy thread, waiting at most about
        ``timeout`` seconds (a warning is logged if it is still alive). Idempotent."""
        with self._lock:
            if self._stopped or self._thread is None:
                self._stopped = True
                return
            if self._thread is threading.current_thread():
                raise RuntimeError("stop() called from the proxy thread")
            self._stopped = True
            self._stopping.set()
            self._wake()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("fault proxy thread %s still alive %.1f s after stop()", self._thread.name,
                        timeout)

    def __enter__(self) -> FaultProxy:
        return self if self._thread is not None else self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def cut(self) -> None:
        """Reset every current connection, on both sides; new connections are still accepted."""
        self._call(self._cut)

    def refuse(self, on: bool) -> None:
        """While on, new connections are accepted and reset at once (the client sees them fail)."""
        self._update(refuse=bool(on))

    def blackhole(self, on: bool) -> None:
        """While on, new connections are accepted but never forwarded: what the client sends is
        dropped, it gets nothing back, until it closes them or :meth:`cut` / :meth:`stop`."""
        self._update(blackhole=bool(on))

    def stall(self, direction: str, on: bool) -> None:
        """While on, stop forwarding ``"up"`` (client to target) or ``"down"`` (target to
        client) on every connection: the data stays buffered (bounded) and goes on when off."""
        if direction not in ("up", "down"):
            raise ValueError("direction must be 'up' or 'down', not %r" % (direction,))
        self._update(**{"stall_" + direction: bool(on)})

    def delay(self, seconds: float) -> None:
        """Hold each chunk read from now on ``seconds`` before forwarding it (both directions, in
        order). 0: off."""
        if not seconds >= 0:
            raise ValueError("delay must be >= 0, not %r" % (seconds,))
        self._update(delay=float(seconds))

    def throttle(self, bytes_per_second: Optional[int]) -> None:
        """Forward at most ``bytes_per_second`` per direction per connection, in bursts of a tenth
        of a second's worth (None: unlimited)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bytes_per_second must be > 0 or None, not %r" % (bytes_per_second,))
        self._update(rate=bytes_per_second)

    def reset(self) -> None:
        """Turn every fault off (blackholed connections stay as they are)."""
        self._update(**dataclasses.asdict(_Faults()))

    # ------------------------------------------------------------------ commands
    def _wake(self) -> None:
        """Wake the proxy thread (with self._lock held, so the socket is not closed meanwhile)."""
        if self._running and self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full: a wake-up is pending anyway
                pass

    def _update(self, **changes: Any) -> None:
        def apply() -> None:
            self._faults = dataclasses.replace(self._faults, **changes)
        self._call(apply)

    def _call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the proxy thread (here if it does not run) and wait until it ran."""
        done = threading.Event()
        with self._lock:
            if not self._running:
                fn()
                return
            self._cmds.append((fn, done))
            self._wake()
        if not done.wait(_COMMAND_TIMEOUT):
            log.warning("fault proxy %d: a command was not applied within %.1f s", self.port,
                        _COMMAND_TIMEOUT)

    def _run_commands(self) -> None:
        with self._lock:
            cmds, self._cmds = self._cmds, []
        for fn, done in cmds:
            try:
                fn()
            finally:
                done.set()

    def _cut(self) -> None:
        for conn in list(self._conns):
            self._end(conn, abort=True)
        for sock in list(self._holes):
            self._end_hole(sock, abort=True)

    # ------------------------------------------------------------------ the proxy thread
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._step()
        except Exception:
            log.exception("fault proxy %d failed", self.port)
        finally:
            self._cut()
            assert self._sel is not None and self._listener is not None
            self._sel.close()
            self._listener.close()
            with self._lock:
                self._running = False
                for sock in (self._wake_r, self._wake_w):
                    if sock is not None:
                        sock.close()
            self._run_commands()  # any queued meanwhile; later ones run in their caller
            log.debug("fault proxy %d stopped", self.port)

    def _step(self) -> None:
        assert self._sel is not None and self._wake_r is not None
        now = time.monotonic()
        wakes = [f.wake_at for c in self._conns for f in (c.up, c.down) if f.wake_at is not None]
        events = self._sel.select(max(0.0, min(wakes) - now) if wakes else None)
        self._run_commands()  # first: a fault applies to what happened after it was set
        now = time.monotonic()
        for key, mask in events:
            sock = cast(socket.socket, key.fileobj)
            if key.data is _WAKE:
                try:
                    while sock.recv(4096):
                        pass
                except OSError:  # BlockingIOError: drained
                    pass
            elif key.data is _LISTEN:
                self._accept(now)
            elif key.data is _HOLE:
                self._hole_read(sock)
            else:
                self._on_event(key.data, sock, mask, now)
        for conn in list(self._conns):
            self._service(conn, now)

    def _accept(self, now: float) -> None:
        assert self._listener is not None and self._sel is not None
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except OSError:  # BlockingIOError: none left; others (EMFILE...): try again later
                return
            self.connections_total += 1
            if self._faults.refuse:
                _close(sock, abort=True)
                continue
            _prepare(sock)
            if self._faults.blackhole:
                self._holes.add(sock)
                self._sel.register(sock, _R, _HOLE)
                continue
            family, type_, proto, addr = self._target
            try:
                upstream = _prepare(socket.socket(family, type_, proto))
            except OSError as exc:  # EMFILE...
                log.debug("fault proxy %d: no upstream socket: %r", self.port, exc)
                _close(sock, abort=True)
                continue
            conn = _Conn(sock, upstream, now)
            self._conns.append(conn)
            rc = upstream.connect_ex(addr)
            if rc not in _IN_PROGRESS:
                log.debug("fault proxy %d: connect to target failed: %s", self.port, os.strerror(rc))
                self._end(conn, abort=True)
                continue
            conn.connected = rc == 0
            self._interest(conn)

    def _hole_read(self, sock: socket.socket) -> None:
        if sock in self._holes:
            try:
                if not sock.recv(_CHUNK):  # what it sends is dropped
                    self._end_hole(sock, abort=False)
            except BlockingIOError:
                pass
            except OSError:
                self._end_hole(sock, abort=True)

    def _end_hole(self, sock: socket.socket, abort: bool) -> None:
        assert self._sel is not None
        self._holes.remove(sock)
        self._sel.unregister(sock)
        _close(sock, abort)

    def _on_event(self, conn: _Conn, sock: socket.socket, mask: int, now: float) -> None:
        if conn.closed:
            return
        try:
            if sock is conn.upstream and not conn.connected:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                conn.connected = True
                return
            if mask & _W:
                (conn.up if sock is conn.upstream else conn.down).blocked = False
            if mask & _R:
                flow = conn.up if sock is conn.client else conn.down
                if flow.wants_read(self.BUFFER_SIZE):
                    flow.read(now, self._faults.delay, self.BUFFER_SIZE)
        except BlockingIOError:
            pass
        except OSError as exc:
            log.debug("fault proxy %d: connection failed: %r", self.port, exc)
            self._end(conn, abort=True)

    def _service(self, conn: _Conn, now: float) -> None:
        """Forward what may go, end a connection both sides have ended, update interest."""
        faults = self._faults
        try:
            if faults.stall_up or not conn.connected:
                conn.up.wake_at = None
            else:
                self.bytes_up += conn.up.pump(now, faults.rate)
            if faults.stall_down:
                conn.down.wake_at = None
            else:
                self.bytes_down += conn.down.pump(now, faults.rate)
            if conn.up.shut and conn.down.shut:
                self._end(conn, abort=False)
            else:
                self._interest(conn)
        except OSError as exc:
            log.debug("fault proxy %d: connection failed: %r", self.port, exc)
            self._end(conn, abort=True)

    def _interest(self, conn: _Conn) -> None:
        limit = self.BUFFER_SIZE
        client = (_R if conn.up.wants_read(limit) else 0) | (_W if conn.down.blocked else 0)
        if conn.connected:
            upstream = (_R if conn.down.wants_read(limit) else 0) | (_W if conn.up.blocked else 0)
        else:
            upstream = _W
        self._set_mask(conn, conn.client, client)
        self._set_mask(conn, conn.upstream, upstream)

    def _set_mask(self, conn: _Conn, sock: socket.socket, mask: int) -> None:
        assert self._sel is not None
        current = conn.masks[sock]
        if mask != current:
            if current == 0:
                self._sel.register(sock, mask, conn)
            elif mask == 0:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, conn)
            conn.masks[sock] = mask

    def _end(self, conn: _Conn, abort: bool) -> None:
        if not conn.closed:
            conn.closed = True
            self._conns.remove(conn)
            for sock in (conn.client, conn.upstream):
                self._set_mask(conn, sock, 0)
                _close(sock, abort)
