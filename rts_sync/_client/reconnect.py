"""The I/O thread's side of reconnecting: keep a session for resume, resume it, or log in again
(a mixin of IOThread; the supervisor decides when to try and with which backoff).

When a logged-in engine loses its connection for any reason but logout, destroy or a duplicate
login, it keeps its protocol Connection (both sequences and every unacknowledged REQUEST and
SEND) and reconnects. The HELLO asks the server to resume the session: if it does, each side
sends again what the other has not acknowledged and both drop duplicates, so reliable messages
are neither lost, duplicated nor reordered. If the session is gone (outside the resume window)
the engine logs in again by itself, re-joins its rooms (``join_type`` 1) and fails every message
whose fate is unknown with BROKEN (2): none is dropped silently. A re-login refused with
INVALID_TOKEN stops retrying until ``update_login_token``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Optional, Set, Tuple

from ..enums import ConnectionState, ConnectionStateChangeReason, LoginErrorCode, LogoutReason
from ..enums import UserMessageSendResult as R
from ..errors import ConnectionLost, RTSError
from ..protocol import CloseCode, Connection, Op, Welcome
from .dispatcher import Task
from .events import CONN_LANE
from .operations import SendOperation
from .states import lost_due

if TYPE_CHECKING:
    from .core import EngineCore
    from .io_thread import FailFn, ResponseFn
    from .messaging import Login
    from .room_ops import RoomState

__all__ = ["Reconnect"]

log = logging.getLogger(__name__)
Reason = ConnectionStateChangeReason
Tasks = List[Tuple[Hashable, Task]]

#: Ends after which the engine does not reconnect by itself.
_TERMINAL = (Reason.LOGOUT, Reason.DESTROYED, Reason.KICKED)


class Reconnect:
    """Resume / re-login logic on the I/O thread (mixed into IOThread)."""

    if TYPE_CHECKING:
        core: EngineCore
        conn: Optional[Connection]
        logged_in: bool
        uid: str
        state: ConnectionState
        rooms: Dict[str, RoomState]
        _login: Optional[Login]
        _stopping: bool
        _sends: Dict[int, Tuple[float, SendOperation, Optional[str]]]
        _requests: Dict[int, Tuple[float, ResponseFn, FailFn]]

        def _request(self, op: int, args: List[Any], on_response: ResponseFn,
                     on_fail: FailFn) -> None: ...
        def _write(self, frame: bytes) -> None: ...
        def _set_state(self, state: ConnectionState, reason: Reason,
                       tasks: Optional[Tasks] = None) -> None: ...
        def _close_session(self, code: int, detail: str, reason: Reason, tasks: Tasks) -> None: ...
        def _send_failed(self, op: SendOperation, code: int, detail: str, tasks: Tasks,
                         room: Optional[str] = None) -> None: ...
        def _rejoin_rooms(self, tasks: Tasks) -> None: ...
        def reapply_server_params(self) -> None: ...

    def _init_reconnect(self) -> None:
        #: The user wants to stay logged in: reconnect after a drop (False after logout/kick).
        self.reconnect_wanted = False
        #: The server's id of our session (from LOGIN), presented to resume it.
        self.session_id: Optional[str] = None
        #: The token and uid of the last successful login, for logging in again by itself.
        self.token = ""
        #: A re-login was refused with INVALID_TOKEN: waiting for update_login_token().
        self.token_rejected = False
        self.reconnecting = False
        self.lost_at = 0.0
        #: Seqs of unreliable sends waiting for their result.
        self._unreliable: Set[int] = set()
        self._resume_conn: Optional[Connection] = None

    # ------------------------------------------------------------------ losing a connection
    def _keep_for_resume(self, conn: Optional[Connection], reason: Reason, detail: str,
                         tasks: Tasks) -> bool:
        """After a connection ended: True when the engine will reconnect (the pending work is
        kept), False when the session is over (the caller fails everything)."""
        if not self.reconnect_wanted or reason in _TERMINAL or self._stopping:
            return False
        if not self.reconnecting:
            self.reconnecting = True
            self.lost_at = time.monotonic()
        if conn is not None and self.session_id is not None:
            self._resume_conn = conn
            for seq in self._unreliable:  # never resent: their fate is unknown
                entry = self._sends.pop(seq, None)
                if entry is not None:
                    self._send_failed(entry[1], R.BROKEN, "connection lost: " + detail, tasks,
                                      entry[2])
            self._unreliable.clear()
        else:
            self._resume_conn = None
            self._fail_unknown(detail, tasks)
        if self.state != ConnectionState.LOST:
            self._set_state(ConnectionState.RECONNECTING, reason, tasks)
        self.core.supervisor.request_reconnect(immediately=reason == Reason.NETWORK_CHANGED)
        return True

    def _fail_unknown(self, detail: str, tasks: Tasks) -> None:
        """Every send and request whose fate is unknown fails (the session was not resumed)."""
        sends, self._sends = self._sends, {}
        for _, op, room in sends.values():
            self._send_failed(op, R.BROKEN, "session not resumed: " + detail, tasks, room)
        requests, self._requests = self._requests, {}
        for _, _, on_fail in requests.values():
            on_fail(ConnectionLost("session not resumed: " + detail), tasks)

    def reconnect_failed(self, detail: str) -> None:
        """An attempt failed: try again (the supervisor adds the backoff); LOST after a while."""
        if not self.reconnect_wanted:
            return
        if lost_due(self.state, self.lost_at, time.monotonic(), self.core.config.lost_after):
            self._set_state(ConnectionState.LOST, Reason.CONNECT_FAILED)
        self.core.supervisor.request_reconnect()

    # ------------------------------------------------------------------ a new connection
    def _hello_for(self, conn_factory: Any) -> Tuple[Connection, Optional[str]]:
        """The Connection for a new socket and the session id to resume (None: fresh)."""
        conn = self._resume_conn
        if self.reconnecting and conn is not None and self.session_id is not None:
            conn.reopen()
            return conn, self.session_id
        return conn_factory(), None

    def _on_reconnect_welcome(self, ev: Welcome, tasks: Tasks) -> None:
        conn = self.conn
        assert conn is not None
        self._resume_conn = None
        params = ev.params
        if params.get("resumed") is True:
            for frame in conn.resume_from(params.get("last_seq"))[1]:
                self._write(frame)
            log.info("session resumed")
            self._reconnected(Reason.RESUMED, tasks)
            return
        if params.get("resume_error") == "kicked":
            log.info("session was ended by a login elsewhere: not logging in again")
            self.reconnect_wanted = False
            self.logged_in = False
            tasks.append(self.core.emit.task(CONN_LANE, "on_logout",
                                             (LogoutReason.DUPLICATE_LOGIN,)))
            self._close_session(CloseCode.NORMAL, "session was replaced", Reason.KICKED, tasks)
            return
        log.info("session not resumed (%s): logging in again", params.get("resume_error", "new"))
        conn.restart()
        self.session_id = None
        self._fail_unknown("session expired", tasks)
        self._relogin(tasks)

    def _relogin(self, tasks: Tasks) -> None:
        t0 = time.monotonic()

        def done(code: int, result: Any, t: Tasks) -> None:
            if code == LoginErrorCode.SUCCESS:
                sid = result.get("session") if isinstance(result, dict) else None
                self.session_id = sid if isinstance(sid, str) else None
                self._rejoin_rooms(t)
                self.reapply_server_params()  # on_server_params_set_result fires again
                self._reconnected(Reason.CONNECT_SUCCESS, t)
                return
            elapsed = int((time.monotonic() - t0) * 1000)
            if code == LoginErrorCode.INVALID_TOKEN:
                log.warning("logging in again was refused (invalid token): waiting for "
                            "update_login_token()")
                self.token_rejected = True
                self.reconnect_wanted = False
                self.reconnecting = False
                self.logged_in = False
                t.append(self.core.emit.task(CONN_LANE, "on_login_result",
                                             (self.uid, LoginErrorCode.INVALID_TOKEN, elapsed)))
                self._close_session(CloseCode.NORMAL, "token rejected", Reason.TOKEN_EXPIRED, t)
                return
            log.info("logging in again failed (%d): retrying", code)
            self._close_session(CloseCode.NORMAL, "re-login failed", Reason.SERVER_CLOSED, t)

        def failed(err: RTSError, t: Tasks) -> None:
            log.info("logging in again failed: %s", err)

        self._request(Op.LOGIN, [self.token, self.uid, self.core.business_id, 1], done, failed)


    def _reconnected(self, reason: Reason, tasks: Tasks) -> None:
        self.reconnecting = False
        self._set_state(ConnectionState.RECONNECTED, reason, tasks)
        self.core.supervisor.reconnected()

    # ------------------------------------------------------------------ token
    def update_token(self, token: str) -> None:
        """``update_login_token``: used by the next login; logs in again if one was refused."""
        self.token = token
        if self._login is not None:
            self._login.token = token
        if self.token_rejected:
            self.token_rejected = False
            self.reconnect_wanted = True
            self.reconnecting = True
            self.logged_in = True
            self.session_id = None
            self._resume_conn = None
            self.lost_at = time.monotonic()
            self._set_state(ConnectionState.RECONNECTING, Reason.LOGIN)
            self.core.supervisor.request_reconnect(immediately=True)
