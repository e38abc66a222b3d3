"""The I/O thread's login, logout, online-status and message operations (a mixin of IOThread).

Every method here runs on the I/O thread. Results reach the user as dispatcher tasks built with
``core.emit.task``: the handler callback first, then the operation is resolved.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Optional, Set, Tuple

from ..enums import ConnectionState, ConnectionStateChangeReason, LoginErrorCode, RoomMessageSendResult
from ..enums import UserMessageSendResult as R
from ..errors import LoginError, RTSError, error_for
from ..protocol import CloseCode, ConnectionPhase, Op
from .dispatcher import Task
from .events import CONN_LANE
from .operations import Operation, SendOperation
from .server_messages import ServerMessages, ServerSendOperation

if TYPE_CHECKING:
    from ..protocol import Connection
    from .core import EngineCore
    from .io_thread import FailFn, ResponseFn
    from .room_ops import RoomState

__all__ = ["Login", "Messaging"]

Reason = ConnectionStateChangeReason
Tasks = List[Tuple[Hashable, Task]]


class Login:
    """A login in progress: its operation, token, uid and start time."""

    __slots__ = ("op", "t0", "token", "uid")

    def __init__(self, op: Operation, token: str, uid: str, t0: float) -> None:
        self.op, self.token, self.uid, self.t0 = op, token, uid, t0

    def elapsed(self) -> int:
        return int((time.monotonic() - self.t0) * 1000)


class Messaging(ServerMessages):
    """Login, logout, online status and sends, on the I/O thread (mixed into IOThread)."""

    if TYPE_CHECKING:
        core: EngineCore
        conn: Optional[Connection]
        _resume_conn: Optional[Connection]
        sock: Any
        logged_in: bool
        reconnect_wanted: bool
        reconnecting: bool
        token_rejected: bool
        token: str
        session_id: Optional[str]
        uid: str
        rooms: Dict[str, RoomState]
        _login: Optional[Login]
        _logout_op: Optional[Operation]
        _sends: Dict[int, Tuple[float, SendOperation, Optional[str]]]
        _unreliable: Set[int]

        def _request(self, op: int, args: List[Any], on_response: ResponseFn,
                     on_fail: FailFn) -> None: ...
        def _write(self, frame: bytes) -> None: ...
        def _set_state(self, state: ConnectionState, reason: Reason,
                       tasks: Optional[Tasks] = None) -> None: ...
        def _close_session(self, code: int, detail: str, reason: Reason, tasks: Tasks) -> None: ...
        def _room_handler(self, room_id: str) -> Any: ...
        def _fail_unknown(self, detail: str, tasks: Tasks) -> None: ...
        def rooms_ended(self, lost: bool, tasks: Tasks) -> None: ...

    def _session_open(self) -> bool:
        """A session exists to send on (connected, or reconnecting with one to resume)."""
        return self.conn is not None or (self.reconnecting and self._resume_conn is not None)

    # ------------------------------------------------------------------ login / logout
    def login(self, op: Operation, token: str, uid: str, t0: float) -> None:
        if self._login is not None or self.logged_in:
            op.set_exception(LoginError("already logged in or logging in", -2))
            return
        self._login = Login(op, token, uid, t0)
        if self.conn is not None and self.conn.phase is ConnectionPhase.OPEN:
            self._on_welcome([])
        elif self.sock is None:
            self._set_state(ConnectionState.CONNECTING, Reason.LOGIN)
            self.core.supervisor.request_connect()

    def _on_welcome(self, tasks: Tasks) -> None:
        if self._login is not None:
            login = self._login
            self._request(Op.LOGIN, [login.token, login.uid, self.core.business_id, 0],
                          self._on_login_response,
                          lambda err, t: self._on_login_response(
                              LoginErrorCode.LOGIN_FAILED, {"reason": str(err)}, t))

    def _on_login_response(self, code: int, result: Any, tasks: Tasks) -> None:
        login, self._login = self._login, None
        if login is None:
            return
        if code == LoginErrorCode.SUCCESS:
            self.logged_in, self.uid = True, login.uid
            self.reconnect_wanted, self.token = True, login.token
            sid = result.get("session") if isinstance(result, dict) else None
            self.session_id = sid if isinstance(sid, str) else None
            tasks.append(self.core.emit.task(
                CONN_LANE, "on_login_result", (login.uid, LoginErrorCode.SUCCESS, login.elapsed()),
                login.op, LoginErrorCode.SUCCESS))
            return
        reason = result.get("reason", "") if isinstance(result, dict) else ""
        self._fail_login(login, code, reason, tasks)
        self._close_session(CloseCode.NORMAL, "login failed", Reason.LOGOUT, tasks)

    def _fail_login(self, login: Login, code: int, detail: str, tasks: Tasks) -> None:
        try:
            code = LoginErrorCode(code)
        except ValueError:
            pass
        err = LoginError("login of %r failed: %s" % (login.uid, detail or "code %d" % code), code)
        tasks.append(self.core.emit.task(CONN_LANE, "on_login_result",
                                         (login.uid, code, login.elapsed()), login.op, error=err))

    def logout(self, op: Operation) -> None:
        tasks: Tasks = []
        self.server_params = None  # a new login sets its own
        self.reconnect_wanted = False
        self.token_rejected = False
        if self.reconnecting:  # no connection now: the session is simply given up
            self.reconnecting = False
            self.logged_in = False
            self._resume_conn = None
            self._fail_unknown("logged out", tasks)
            self.rooms_ended(False, tasks)
        if self.logged_in and self.conn is not None:
            self.logged_in = False
            self._logout_op = op

            def done(code: int, result: Any, t: Tasks) -> None:
                self._logout_op = None
                t.append(self.core.emit.task(CONN_LANE, "on_logout", (0,), op, 0))
                self._close_session(CloseCode.NORMAL, "logout", Reason.LOGOUT, t)

            self._request(Op.LOGOUT, [], done, lambda err, t: done(-1, None, t))
            return
        if self._login is not None:  # logging in: cancel it
            login, self._login = self._login, None
            self._fail_login(login, LoginErrorCode.LOGIN_FAILED, "cancelled by logout", tasks)
        tasks.append(self.core.emit.task(CONN_LANE, "on_logout", (0,), op, 0))
        if self.sock is not None:
            self._close_session(CloseCode.NORMAL, "logout", Reason.LOGOUT, tasks)
        else:
            self._set_state(ConnectionState.DISCONNECTED, Reason.LOGOUT, tasks)
        self.core.dispatcher.submit_many(tasks)

    def online_status(self, op: Operation, peer: str) -> None:
        def ok(code: int, result: Any, tasks: Tasks) -> None:
            if code != 0 or not isinstance(result, int):
                fail(error_for("send", code, "online status query failed"), tasks)
                return
            status = self.core.online_status_enum(result)
            tasks.append(self.core.emit.task(CONN_LANE, "on_get_peer_online_status",
                                             (peer, status), op, status))

        def fail(err: RTSError, tasks: Tasks) -> None:
            status = self.core.online_status_enum(2)
            tasks.append(self.core.emit.task(CONN_LANE, "on_get_peer_online_status",
                                             (peer, status), op, error=err))

        if not self.logged_in or not self._session_open():
            tasks: Tasks = []
            fail(error_for("send", R.NOT_LOGIN, "not logged in"), tasks)
            self.core.dispatcher.submit_many(tasks)
            return
        self._request(Op.ONLINE_STATUS, [peer], ok, fail)

    # ------------------------------------------------------------------ messages
    def send(self, op: SendOperation, kind: int, target: str, config: int, payload: Any,
             room: Optional[str] = None) -> None:
        """Send a peer (``room`` None) or room message; its result comes back as a RESULT."""
        conn = self.conn if self.conn is not None else self._resume_conn
        code: Optional[int] = None
        if not self.logged_in:
            code = R.NOT_LOGIN if room is None else RoomMessageSendResult.NOT_JOIN
        elif room is not None and not self._joined(room):
            code = RoomMessageSendResult.NOT_JOIN
        elif conn is None or (self.conn is None and config != 0):
            code = R.BROKEN  # reconnecting: only reliable messages wait for the resume
        if code is not None or conn is None:
            tasks: Tasks = []
            self._send_failed(op, code or R.BROKEN, "not sent", tasks, room)
            self.core.dispatcher.submit_many(tasks)
            return
        seq, data = conn.send(kind, target, config, payload, reliable=config == 0)
        self._sends[seq] = (time.monotonic() + self.core.config.send_timeout, op, room)
        if config != 0:
            self._unreliable.add(seq)  # not kept for a resume: fails if the link drops
        if self.conn is not None:
            self._write(data)  # else it is sent again when the session resumes

    def _joined(self, room_id: str) -> bool:
        st = self.rooms.get(room_id)
        return st is not None and st.joined

    def _send_done(self, op: SendOperation, code: int, body: Optional[bytes],
                   room: Optional[str], tasks: Tasks) -> None:
        if isinstance(op, ServerSendOperation):
            self._server_send_done(op, code, body, tasks)
            return
        emit = self.core.emit
        if room is not None:
            if code == RoomMessageSendResult.SUCCESS:
                # Nobody to tell (no callback of the user's, nobody waiting on the operation):
                # resolve it here instead of waking a callback thread for nothing.
                if (not emit.implements("on_room_message_send_result",
                                        lambda: self._room_handler(room))
                        and op.finish_unobserved(RoomMessageSendResult.SUCCESS)):
                    return
                tasks.append(self.core.emit.task(
                    ("room", room), "on_room_message_send_result",
                    (op.msg_id, RoomMessageSendResult.SUCCESS), op, RoomMessageSendResult.SUCCESS,
                    handler=lambda: self._room_handler(room)))
                return
        elif code == R.SUCCESS:
            if (not emit.implements("on_message_send_result")
                    and op.finish_unobserved(R.SUCCESS)):
                return
            tasks.append(self.core.emit.task(CONN_LANE, "on_message_send_result",
                                             (op.msg_id, R.SUCCESS), op, R.SUCCESS))
            return
        self._send_failed(op, code, "", tasks, room)

    def _send_failed(self, op: SendOperation, code: int, detail: str, tasks: Tasks,
                     room: Optional[str] = None) -> None:
        if isinstance(op, ServerSendOperation):
            self._server_send_failed(op, code, detail, tasks)
            return
        enum = R if room is None else RoomMessageSendResult
        try:
            code = enum(code)
        except ValueError:
            pass
        err = error_for("send", code, "message %d failed: %s" % (op.msg_id, detail or
                                                                   getattr(code, "name", str(code))))
        if room is None:
            tasks.append(self.core.emit.task(CONN_LANE, "on_message_send_result",
                                             (op.msg_id, code), op, error=err))
        else:
            tasks.append(self.core.emit.task(("room", room), "on_room_message_send_result",
                                             (op.msg_id, code), op, error=err,
                                             handler=lambda: self._room_handler(room)))
