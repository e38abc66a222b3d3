"""The I/O thread: it owns the socket and the protocol Connection.

Other threads hand it work with :meth:`IOThread.submit` (a deque plus one wake-up byte on a
socketpair, written only when the thread is asleep). A message send is the exception: while
the I/O thread waits in select() with nothing queued, the sending thread takes the I/O state lock
and writes the message itself (:meth:`IOThread.send_now`); the I/O thread holds that lock at all
other times, so the state is still touched by one thread at a time. It waits in ``selectors``
on the socket and the wake-up socket, never on a timer it does not need: the only timeout it
sets is the earliest request or send deadline. Everything it reads becomes dispatcher tasks
handed over in one batch per read, followed by one cumulative ACK; everything queued for writing
goes out in one ``send``.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Hashable, List, Optional, Tuple

from ..enums import ConnectionState, ConnectionStateChangeReason, LoginErrorCode
from ..enums import UserMessageSendResult as R
from ..errors import (
    ClientClosed,
    ConnectionLost,
    ProtocolError,
    ProxyError,
    RemoteProtocolError,
    RequestTimeout,
    RTSError,
    TransportError,
)
from ..protocol import (
    Acked,
    Close,
    CloseCode,
    Connection,
    ConnectionPhase,
    Deliver,
    DeliverKind,
    Notice,
    NoticeKind,
    Ping,
    Response,
    Result,
    Role,
    Welcome,
)
from .dispatcher import Task
from .events import CONN_LANE
from .messaging import Login, Messaging
from .operations import Operation, SendOperation
from .reconnect import Reconnect
from .room_ops import RoomOps, RoomState
from .states import allowed
from .wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, WsParser, encode_frame

if TYPE_CHECKING:
    from .core import EngineCore

__all__ = ["IOThread"]

log = logging.getLogger(__name__)
TRACE = 5

Reason = ConnectionStateChangeReason
Tasks = List[Tuple[Hashable, Task]]
#: on_response(code, result, tasks) / on_fail(error, tasks)
ResponseFn = Callable[[int, Any, Tasks], None]
FailFn = Callable[[RTSError, Tasks], None]

_READ = selectors.EVENT_READ
_RECV_SIZE = 65536
_WRITE = selectors.EVENT_WRITE


class IOThread(Messaging, RoomOps, Reconnect):
    """Socket reads and writes, protocol state, pending operations (see the module docstring).

    Threading: runs on ``rts-io-<id>``; ``submit`` and ``send_now`` are the only methods other
    threads call, apart from reading the plain attributes ``session_active``, ``paused``,
    ``last_rx`` and ``logged_in``.
    """

    def __init__(self, core: EngineCore, name: str) -> None:
        self.core = core
        self._cmds: Deque[Tuple[Callable[..., None], Tuple[Any, ...]]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sleeping = False
        self._stopping = False
        self._finished = False
        #: The I/O state lock: the I/O thread holds it except while it waits in select(), so
        #: that a sending thread may take it and write a message itself (see send_now).
        self._lock = threading.Lock()
        #: While the I/O thread waits: until when (None: no timeout); 0.0 while it is busy.
        self._select_until: Optional[float] = 0.0
        self._sel: Optional[selectors.BaseSelector] = None
        self._thread = threading.Thread(target=self._run, name="rts-io-%s" % name, daemon=True)
        # Session state, owned by the I/O thread.
        self.sock: Optional[socket.socket] = None
        self.conn: Optional[Connection] = None
        self._parser: Optional[WsParser] = None
        self._out = bytearray()
        self._interest = 0
        self._url = ""
        self.session_active = False
        self.paused = False
        self.last_rx = 0.0
        self.logged_in = False
        self.uid = ""
        self.state = ConnectionState.DISCONNECTED
        self._login: Optional[Login] = None
        self._logout_op: Optional[Operation] = None
        self._kicked = False
        #: When the WELCOME of the current socket is due (None once it came): a server that
        #: never finishes the handshake cannot keep a login or reconnect waiting for ever.
        self._handshake_deadline: Optional[float] = None
        self._requests: Dict[int, Tuple[float, ResponseFn, FailFn]] = {}
        #: seq -> (deadline, operation, room id or None for a peer message)
        self._sends: Dict[int, Tuple[float, SendOperation, Optional[str]]] = {}
        self.rooms: Dict[str, RoomState] = {}
        self._init_reconnect()

    # ------------------------------------------------------------------ cross-thread API
    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O thread, soon. Never blocks."""
        self._cmds.append((fn, args))
        if self._sleeping:
            self._sleeping = False
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # already has a wake-up byte pending, or closing

    def send_now(self, op: SendOperation, kind: int, target: str, config: int, payload: Any,
                 room: Optional[str] = None) -> None:
        """``submit(self.send, ...)``, but done on the calling thread when the I/O thread is
        idle in select() and nothing is queued before it: the message is sequenced, registered
        and written to the socket here, saving the hand-over to the I/O thread (a wake-up and a
        thread switch per message on the latency path). Whatever cannot be finished here (a
        partial write, a socket error, a deadline earlier than the I/O thread's wake-up) is left
        to the I/O thread, which is woken for it. Never blocks on the network."""
        lock = self._lock
        if self._cmds or not self._sleeping or not lock.acquire(False):
            self.submit(self.send, op, kind, target, config, payload, room)
            return
        try:
            if self._cmds or self._finished or self._stopping:
                self.submit(self.send, op, kind, target, config, payload, room)
                return
            self.send(op, kind, target, config, payload, room)
            wake = False
            if self._out and self.sock is not None and self.conn is not None:
                ack = self.conn.ack()
                if ack is not None:
                    self._write(ack)
                try:
                    n = self.sock.send(self._out)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    n = 0  # the I/O thread meets the error again and handles it
                del self._out[:n]
                wake = bool(self._out)
            if self._sends:
                until = self._select_until
                if until is None or next(iter(self._sends.values()))[0] < until:
                    wake = True  # the first send deadline is before the I/O thread's wake-up
            if wake:
                self._wake_now()
        finally:
            lock.release()

    def _wake_now(self) -> None:
        self._sleeping = False
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already has a wake-up byte pending, or closing

    @property
    def login_pending(self) -> bool:
        return self._login is not None

    @property
    def backlog(self) -> int:
        """Commands not yet taken plus sends awaiting their result (approximate)."""
        return len(self._cmds) + len(self._sends)

    def stop(self, timeout: float = 2.0) -> None:
        self._stopping = True
        self.submit(lambda: None)
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("I/O thread did not stop within %gs", timeout)
        self._wake_r.close()
        self._wake_w.close()

    # ------------------------------------------------------------------ the loop
    def _run(self) -> None:
        sel = self._sel = selectors.DefaultSelector()
        sel.register(self._wake_r, _READ)
        lock = self._lock
        lock.acquire()  # held all the time except while waiting in select()
        try:
            while not self._stopping:
                self._sleeping = True
                if self._cmds:
                    self._sleeping = False
                else:
                    timeout = self._next_timeout()
                    self._select_until = None if timeout is None else time.monotonic() + timeout
                    lock.release()
                    try:
                        events = sel.select(timeout)
                    finally:
                        lock.acquire()
                    self._select_until = 0.0
                    for key, mask in events:
                        if key.fileobj is self._wake_r:
                            self._drain_wake()
                        else:
                            if mask & _READ:
                                self._on_readable()
                            if mask & _WRITE and self.sock is not None:
                                self._flush()
                    self._sleeping = False
                self._run_commands()
                self._expire(time.monotonic())
                if self.sock is not None:
                    self._flush()
        except Exception:  # a bug of ours: never leave the engine silently dead
            log.exception("I/O thread failed")
            self._lost(Reason.UNKNOWN, "internal error")
        finally:
            try:
                self._shutdown()
                sel.close()
            finally:
                self._finished = True
                lock.release()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_commands(self) -> None:
        cmds = self._cmds
        while cmds:
            fn, args = cmds.popleft()
            fn(*args)

    def _next_timeout(self) -> Optional[float]:
        deadline = self._handshake_deadline
        if self._requests:
            d = next(iter(self._requests.values()))[0]
            deadline = d if deadline is None else min(deadline, d)
        now = time.monotonic()
        if self._sends:
            d = next(iter(self._sends.values()))[0]
            deadline = d if deadline is None else min(deadline, d)
        elif self.sock is not None:
            # Wake by the earliest deadline a send made while we wait can have, so that
            # send_now need not wake us for it (one wake-up per send_timeout at most, fewer
            # than the heartbeats').
            d = now + self.core.config.send_timeout
            deadline = d if deadline is None else min(deadline, d)
        if deadline is None:
            return None
        return max(deadline - now, 0.0)

    def _expire(self, now: float) -> None:
        tasks: Tasks = []
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            self._handshake_deadline = None
            self._end_session(Reason.HEARTBEAT_TIMEOUT, "no WELCOME from the server within %gs"
                              % self.core.config.connect_timeout, tasks)
        while self._requests:
            rid, (deadline, _, on_fail) = next(iter(self._requests.items()))
            if deadline > now:
                break
            del self._requests[rid]
            on_fail(RequestTimeout("no answer from the server in time"), tasks)
        while self._sends:
            seq, (deadline, op, _) = next(iter(self._sends.items()))
            if deadline > now:
                break
            del self._sends[seq]
            self._send_failed(op, R.TIMEOUT, "no result from the server in time", tasks)
        self.core.dispatcher.submit_many(tasks)

    # ------------------------------------------------------------------ socket plumbing
    def _set_interest(self) -> None:
        if self.sock is None or self._sel is None:
            return
        want = (0 if self.paused else _READ) | (_WRITE if self._out else 0)
        if want == self._interest:
            return
        if self._interest == 0:
            self._sel.register(self.sock, want)
        elif want == 0:
            self._sel.unregister(self.sock)
        else:
            self._sel.modify(self.sock, want)
        self._interest = want

    def _write(self, frame: bytes) -> None:
        log.log(TRACE, "send %r", frame)
        self._out += encode_frame(frame)

    def _flush(self) -> None:
        ack = self.conn.ack() if self.conn is not None else None
        if ack is not None:
            self._write(ack)
        if self._out and self.sock is not None:
            try:
                n = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as exc:
                self._lost(Reason.NETWORK_LOST, str(exc))
                return
            del self._out[:n]
        self._set_interest()

    def _on_readable(self) -> None:
        assert self.sock is not None and self._parser is not None
        try:
            # At most 64 KiB a read: a larger buffer is allocated with mmap and shrunk with
            # mremap for every read (two syscalls and TLB shootdowns per message, measured on
            # the latency path); a buffer kept per engine would cost its size in idle memory.
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(Reason.NETWORK_LOST, str(exc))
            return
        if not data:
            self._lost(Reason.SERVER_CLOSED, "the server closed the connection")
            return
        self.last_rx = time.monotonic()
        tasks: Tasks = []
        try:
            for opcode, payload in self._parser.feed(data):
                if opcode == OP_BINARY:
                    assert self.conn is not None
                    ev = self.conn.receive(payload)
                    if ev is not None:
                        self._handle(ev, tasks)
                elif opcode == OP_PING:
                    self._out += encode_frame(payload, OP_PONG)
                elif opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                    self._lost(self._close_reason(code), "server closed with code %d" % code)
                    break
                elif opcode != OP_PONG:
                    raise RemoteProtocolError("text frames are not part of the protocol",
                                              CloseCode.PROTOCOL_ERROR)
                if self.sock is None:
                    break
        except RemoteProtocolError as exc:
            log.warning("protocol error from the server: %s", exc)
            self._close_session(exc.code, str(exc), Reason.PROTOCOL_ERROR, tasks)
        self.core.dispatcher.submit_many(tasks)
        if self.sock is not None and self.core.dispatcher.saturated:
            self.paused = True  # resumed by resume_reading() when the callbacks drain
            self._set_interest()

    def resume_reading(self) -> None:
        if self.paused:
            self.paused = False
            self.last_rx = time.monotonic()
            if self._handshake_deadline is not None:  # the WELCOME may be waiting unread
                self._handshake_deadline = self.last_rx + self.core.config.connect_timeout
            self._set_interest()

    def _close_reason(self, code: int) -> Reason:
        if self._kicked or code == CloseCode.DUPLICATE_LOGIN:
            return Reason.KICKED
        return Reason.SERVER_CLOSED

    # ------------------------------------------------------------------ sessions
    def attach(self, sock: socket.socket, url: str) -> None:
        """The supervisor connected ``sock`` (handshake done): start a protocol session."""
        if self._stopping or self.sock is not None or (
                self._login is None and not self.reconnect_wanted):
            sock.close()  # nobody wants it any more (logout or destroy came first)
            return
        sock.setblocking(False)
        self.sock, self._url = sock, url
        self.conn, session_id = self._hello_for(lambda: Connection(Role.CLIENT))
        self._parser = WsParser(self.conn.max_frame)
        self._out.clear()
        self._interest = 0
        self.paused = False
        self.last_rx = time.monotonic()
        self._handshake_deadline = self.last_rx + self.core.config.connect_timeout
        self._kicked = False
        self._write(self.conn.hello(self.core.app_id, self.core.sdk_version,
                                    session_id=session_id))
        self.session_active = True
        self.core.supervisor.session_changed()
        if not self.reconnecting:
            self._set_state(ConnectionState.CONNECTED, Reason.CONNECT_SUCCESS)

    def connect_failed(self, exc: TransportError) -> None:
        if self.reconnecting:
            self.reconnect_failed(str(exc))
            return
        login = self._login
        if login is None:
            return
        self._login = None
        tasks: Tasks = []
        self._fail_login(login, LoginErrorCode.LOGIN_FAILED, "cannot connect: %s" % exc, tasks)
        self.core.dispatcher.submit_many(tasks)
        self._set_state(ConnectionState.DISCONNECTED,
                        Reason.PROXY_ERROR if isinstance(exc, ProxyError) else Reason.CONNECT_FAILED)

    def _lost(self, reason: Reason, detail: str) -> None:
        tasks: Tasks = []
        self._end_session(reason, detail, tasks)
        self.core.dispatcher.submit_many(tasks)

    def _close_session(self, code: int, detail: str, reason: Reason, tasks: Tasks) -> None:
        """Close our side politely (CLOSE frame + WebSocket close), then end the session."""
        if self.sock is not None and self.conn is not None:
            try:
                if self.conn.phase is not ConnectionPhase.CLOSED:
                    self._write(self.conn.close(code, detail))
                self._out += encode_frame(int(code if code < 5000 else 1000).to_bytes(2, "big"),
                                          OP_CLOSE)
                self.sock.send(self._out)
            except (OSError, ProtocolError):
                pass
        self._end_session(reason, detail, tasks)

    def _end_session(self, reason: Reason, detail: str, tasks: Tasks) -> None:
        self._handshake_deadline = None
        if self.sock is None:
            return
        log.info("session with %s ended: %s (%s)", self._url, reason.name, detail)
        if self._sel is not None and self._interest:
            self._sel.unregister(self.sock)
        self._interest = 0
        self.sock.close()
        conn = self.conn
        self.sock = self.conn = self._parser = None
        self._out.clear()
        self.session_active = False
        self.paused = False
        self.core.supervisor.session_changed()
        if self._keep_for_resume(conn, reason, detail, tasks):
            return
        self.reconnecting = False
        self.reconnect_wanted = False
        for _, op, room in self._sends.values():
            self._send_failed(op, R.BROKEN, "connection lost before a result: " + detail, tasks,
                              room)
        self._sends.clear()
        self.rooms_ended(reason not in (Reason.LOGOUT, Reason.DESTROYED), tasks)
        requests, self._requests = self._requests, {}
        for _, _, on_fail in requests.values():
            on_fail(ConnectionLost("connection lost: " + detail), tasks)
        if self._login is not None:
            login, self._login = self._login, None
            self._fail_login(login, LoginErrorCode.LOGIN_FAILED, detail, tasks)
        self.logged_in = False
        self._set_state(ConnectionState.DISCONNECTED, reason, tasks)

    def _shutdown(self) -> None:
        """Destroy: close politely, fail everything pending without callbacks."""
        self.reconnect_wanted = False
        tasks: Tasks = []
        if self.sock is not None:
            self._close_session(CloseCode.NORMAL, "engine destroyed", Reason.DESTROYED, tasks)
        self._fail_unknown("engine destroyed", tasks)
        closed = ClientClosed("the engine was destroyed")
        for _, (_, _, task_op) in tasks:  # no callback after destroy: only the operations
            if task_op is not None and not task_op.done():
                task_op.set_exception(closed)
        for op in [s[1] for s in self._sends.values()] + (
                [self._login.op] if self._login else []) + (
                [self._logout_op] if self._logout_op else []) + [
                st.join_op for st in self.rooms.values() if st.join_op is not None]:
            if not op.done():
                op.set_exception(closed)
        while self._cmds:  # commands never run: their operations fail too
            _, args = self._cmds.popleft()
            for a in args:
                if isinstance(a, Operation) and not a.done():
                    a.set_exception(closed)

    def _set_state(self, state: ConnectionState, reason: Reason,
                   tasks: Optional[Tasks] = None) -> None:
        if state == self.state:
            return
        if not allowed(self.state, state):
            log.error("connection state %s -> %s is not in the state table (a bug)",
                      self.state.name, state.name)
        log.info("connection state %s -> %s (%s)", self.state.name, state.name, reason.name)
        self.state = state
        item = self.core.emit.task(CONN_LANE, "on_connection_state_changed", (state, reason))
        if tasks is None:
            self.core.dispatcher.submit_many([item])
        else:
            tasks.append(item)

    # ------------------------------------------------------------------ inbound events
    def _handle(self, ev: Any, tasks: Tasks) -> None:
        t = type(ev)
        if t is Deliver:
            if ev.kind == DeliverKind.PEER:
                self.core.emit.peer_message(tasks, ev.sender, ev.payload)
            else:
                self._on_room_deliver(ev, tasks)
        elif t is Result:
            for seq in ev.seqs:
                entry = self._sends.pop(seq, None)
                self._unreliable.discard(seq)
                if entry is not None:
                    self._send_done(entry[1], ev.code, ev.body, entry[2], tasks)
        elif t is Acked:
            pass
        elif t is Response:
            req = self._requests.pop(ev.rid, None)
            if req is not None:
                req[1](ev.code, ev.result, tasks)
        elif t is Ping:
            assert self.conn is not None
            self._write(self.conn.pong(ev.token))
        elif t is Notice:
            if ev.kind == NoticeKind.KICKED:
                self._kicked = True
                self.logged_in = False
                reason = ev.args[0] if ev.args and isinstance(ev.args[0], int) else 1
                tasks.append(self.core.emit.task(CONN_LANE, "on_logout", (reason,)))
            elif ev.kind in (NoticeKind.USER_JOINED, NoticeKind.USER_LEFT, NoticeKind.ROOM_STATE):
                self._on_room_notice(ev, tasks)
        elif t is Welcome:
            self._handshake_deadline = None
            if self.reconnecting and self._login is None:
                self._on_reconnect_welcome(ev, tasks)
            else:
                self._on_welcome(tasks)
        elif t is Close:
            self._end_session(self._close_reason(ev.code), "server: %s" % (ev.reason or ev.code),
                              tasks)

    # ------------------------------------------------------------------ requests
    def _request(self, op: int, args: List[Any], on_response: ResponseFn, on_fail: FailFn) -> None:
        """Send a request; while reconnecting it waits in the session to be resent on resume."""
        conn = self.conn if self.conn is not None else self._resume_conn
        assert conn is not None
        rid, data = conn.request(op, args)
        deadline = time.monotonic() + self.core.config.request_timeout
        self._requests[rid] = (deadline, on_response, on_fail)
        if self.conn is not None:
            self._write(data)

    def send_ping(self) -> None:
        if self.conn is not None and self.conn.phase is ConnectionPhase.OPEN:
            self._write(self.conn.ping(0))

    def heartbeat_timeout(self) -> None:
        """The link is dead: drop the socket without a protocol CLOSE (which would end the
        session on the server) so the session can be resumed over a new connection."""
        if self.sock is not None:
            self._lost(Reason.HEARTBEAT_TIMEOUT, "no frame from the server in time")

    def network_changed(self) -> None:
        """The supervisor saw the network change: the session's path is likely gone; drop the
        socket (no protocol CLOSE) and reconnect at once over the new path, resuming."""
        if self.sock is not None:
            self._lost(Reason.NETWORK_CHANGED, "network changed")

