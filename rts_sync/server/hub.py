"""Who is connected and logged in, per app; login, logout, duplicate-login kicks and peer routing.

Threading: everything here runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from .. import protocol as p
from ..enums import (
    LoginErrorCode,
    LogoutReason,
    MessageConfig,
    UserMessageSendResult,
    UserOfflineReason,
    UserOnlineStatus,
)
from ..errors import LocalProtocolError
from ..token import TokenError
from ..token import parse as parse_token
from .config import ServerConfig
from .forward import Forwarder
from .metrics import Metrics
from .rooms import Rooms
from .session import Pending, Session

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["AppState", "Hub"]

log = logging.getLogger(__name__)

_PEER = int(p.DeliverKind.PEER)
_RELIABLE_ORDERED = int(MessageConfig.RELIABLE_ORDERED)


class AppState:
    """One app: its key and its logged-in sessions by uid.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, app_id: str, app_key: str, rooms: Rooms) -> None:
        self.app_id = app_id
        self.app_key = app_key
        self.sessions: Dict[str, Session] = {}
        self.rooms = rooms
        #: Logged-in sessions by their secret session id (what a resuming client presents).
        self.by_session_id: Dict[str, Session] = {}
        #: Session ids ended by a duplicate login, until when they are remembered (monotonic).
        self.kicked: Dict[str, float] = {}


class Hub:
    """The server's registry of connections and sessions, and the router between them.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.metrics = Metrics()
        #: Forwards SERVER sends to application servers (started and closed with the app).
        self.forwarder = Forwarder(self.limits, self.metrics)
        self.apps: Dict[str, AppState] = {
            k: AppState(k, v, Rooms(k, self.limits, self.metrics)) for k, v in config.apps.items()}
        #: Open WebSocket connections (keyed by the WebSocket) and the session each serves.
        self.connections: Dict[object, Session] = {}
        self._per_ip: Counter[str] = Counter()
        #: Set when the server shuts down: connections then end their sessions, no resume.
        self.shutting_down = False
        #: Cluster mode (``config.redis_url``): consulted only for what is not on this node.
        self.cluster: Optional[Cluster] = None
        if config.redis_url:
            from .cluster import Cluster  # needs the optional redis package

            self.cluster = Cluster(self, config.redis_url)

    # ------------------------------------------------------------------ connections
    def add_connection(self, ws: object, session: Session) -> bool:
        """Register a new connection; False if its IP address has too many already."""
        self.connections[ws] = session
        self._per_ip[session.peer_ip] += 1
        return self._per_ip[session.peer_ip] <= self.limits.max_connections_per_ip

    def move_connection(self, ws: object, session: Session) -> None:
        """Connection ``ws`` now serves ``session`` (it resumed that session)."""
        if ws in self.connections:
            self.connections[ws] = session

    def remove_connection(self, ws: object, peer_ip: str) -> None:
        if self.connections.pop(ws, None) is not None:
            self._per_ip[peer_ip] -= 1
            if self._per_ip[peer_ip] <= 0:
                del self._per_ip[peer_ip]

    def on_session_closed(self, session: Session) -> None:
        """A session ended for good: it is no longer reachable as its uid, nor in rooms."""
        app = self.apps.get(session.app_id or "")
        if app is not None and session.rooms:
            app.rooms.leave_all(session, UserOfflineReason.DROPPED)
        self._unregister(session)

    def _unregister(self, session: Session) -> None:
        if session.app_id is None or session.uid is None:
            return
        app = self.apps.get(session.app_id)
        if app is None:
            return
        if app.sessions.get(session.uid) is session:
            del app.sessions[session.uid]
            if self.cluster is not None:
                self.cluster.logged_out(app.app_id, session.uid, session.session_id)
        if session.session_id is not None and app.by_session_id.get(session.session_id) is session:
            del app.by_session_id[session.session_id]

    def find_resumable(self, app_id: str, session_id: str) -> Tuple[Optional[Session], str]:
        """The live session with this id, or (None, "kicked" / "expired")."""
        app = self.apps[app_id]
        s = app.by_session_id.get(session_id)
        if s is not None and not s.closing:
            return s, ""
        now = time.monotonic()
        for sid in [k for k, t in app.kicked.items() if t < now]:
            del app.kicked[sid]
        return None, "kicked" if session_id in app.kicked else "expired"

    def stats(self) -> Dict[str, Any]:
        """The numbers of ``/healthz``."""
        out: Dict[str, Any] = {
            "status": "ok", "sessions": sum(len(a.sessions) for a in self.apps.values()),
            "connections": len(self.connections)}
        if self.cluster is not None:
            out["cluster"] = self.cluster.stats()
            if not self.cluster.healthy:
                out["status"] = "unhealthy"
        return out

    def rooms_per_app(self) -> Dict[str, Tuple[int, int]]:
        """(rooms, memberships) of each app."""
        return {app_id: (len(app.rooms.rooms), app.rooms.members) for app_id, app in self.apps.items()}

    def sessions_per_app(self) -> Dict[str, int]:
        return {app_id: len(app.sessions) for app_id, app in self.apps.items()}

    async def close_all(self, code: int, reason: str, timeout: float) -> None:
        """Close every connection with ``code`` and wait (at most ``timeout``) until they are."""
        self.shutting_down = True
        sessions = set(self.connections.values())
        for app in self.apps.values():
            sessions.update(app.sessions.values())  # detached ones too
        for s in sessions:
            s.close(code, reason)
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.wait_closed()) for s in sessions],
                               timeout=timeout)

    # ------------------------------------------------------------------ login / logout
    def login(self, session: Session, args: Tuple[Any, ...]) -> Tuple[int, Any]:
        """Check a LOGIN's token and uid; on success register the session (kicking an older one
        with the same uid). Returns the RESPONSE's (code, result)."""
        token, uid, business_id, _login_type = args
        app = self.apps[session.app_id or ""]
        code, result = self._check_login(session, app, token, uid)
        self.metrics.logins[_login_result(code)] += 1
        if code != LoginErrorCode.SUCCESS:
            log.info("connection %d: login of %r to %s failed (%d): %s", session.cid, uid,
                     app.app_id, code, result.get("reason") if isinstance(result, dict) else "")
            return code, result
        old = app.sessions.get(uid)
        if old is not None and old is not session:
            log.info("uid %s of %s logged in again (connection %d): kicking connection %d",
                     uid, app.app_id, session.cid, old.cid)
            if not old.closing:
                app.rooms.leave_all(old, UserOfflineReason.DROPPED, kicked=True)
                try:
                    _, frame = old.conn.notice(p.NoticeKind.KICKED, [LogoutReason.DUPLICATE_LOGIN])
                    old.push(frame)
                except LocalProtocolError:
                    pass  # its protocol connection is already closed
            if old.session_id is not None:
                app.kicked[old.session_id] = time.monotonic() + self.limits.resume_window + 60
            old.close(p.CloseCode.DUPLICATE_LOGIN, "logged in elsewhere")
            if app.sessions.get(uid) is old:
                del app.sessions[uid]
        session.uid = uid
        session.session_id = secrets.token_hex(16)
        session.business_id = business_id if isinstance(business_id, str) else None
        app.sessions[uid] = session
        app.by_session_id[session.session_id] = session
        log.info("connection %d: %s logged in to %s", session.cid, uid, app.app_id)
        return LoginErrorCode.SUCCESS, {"session": session.session_id}

    def _check_login(self, session: Session, app: AppState, token: Any,
                     uid: Any) -> Tuple[int, Any]:
        if session.uid is not None:
            return LoginErrorCode.LOGIN_FAILED, {"reason": "already logged in on this connection"}
        if not p.is_valid_id(uid):
            return LoginErrorCode.INVALID_USER_ID, {"reason": "invalid user id"}
        if not isinstance(token, str):
            return LoginErrorCode.INVALID_TOKEN, {"reason": "token must be a string"}
        try:
            tok = parse_token(token)
        except TokenError as exc:
            return LoginErrorCode.INVALID_TOKEN, {"reason": "malformed token: %s" % exc}
        if tok.app_id != app.app_id:
            return LoginErrorCode.INVALID_TOKEN, {"reason": "token is for another app"}
        now = int(time.time())
        if tok.expire_at > 0 and now > tok.expire_at:
            return LoginErrorCode.INVALID_TOKEN, {"reason": "token expired"}
        if not tok.verify(app.app_key, now):
            return LoginErrorCode.INVALID_TOKEN, {"reason": "bad token signature"}
        if tok.issued_at > now + self.limits.token_clock_skew:
            return LoginErrorCode.INVALID_TOKEN, {"reason": "token not valid yet (issued in the "
                                                  "future)"}
        if tok.user_id != uid:
            return LoginErrorCode.INVALID_TOKEN, {"reason": "token is for another user id"}
        if uid not in app.sessions and len(app.sessions) >= self.limits.max_sessions_per_app:
            return LoginErrorCode.LOGIN_FAILED, {"reason": "too many sessions for this app"}
        return LoginErrorCode.SUCCESS, None

    def logout(self, session: Session) -> None:
        log.info("connection %d: %s logged out of %s", session.cid, session.uid, session.app_id)
        app = self.apps.get(session.app_id or "")
        if app is not None:
            app.rooms.leave_all(session, UserOfflineReason.QUIT)
        self._unregister(session)
        session.uid = None

    def online_status(self, session: Session, peer: Any) -> int:
        app = self.apps[session.app_id or ""]
        if p.is_valid_id(peer) and peer in app.sessions:
            return UserOnlineStatus.ONLINE
        return UserOnlineStatus.OFFLINE

    # ------------------------------------------------------------------ routing
    async def send_peer(self, sender: Session, seq: int, target: str, config: int,
                        payload: p.Payload) -> Optional[int]:
        """Route one peer SEND. Returns the result code to send now, or None when the result
        comes later (a reliable message: on the receiver's ACK or its timeout)."""
        app = self.apps[sender.app_id or ""]
        receiver = app.sessions.get(target) if p.is_valid_id(target) else None
        cluster = self.cluster
        if (receiver is not None and cluster is not None and config == _RELIABLE_ORDERED
                and (sender, target) in cluster._flights):  # it was on another node just now
            await cluster.fence(sender, target, cluster.node)
            receiver = app.sessions.get(target)
        if receiver is None:
            if self.cluster is not None and p.is_valid_id(target):
                return await self.cluster.send_peer(sender, seq, target, config, payload)
            return UserMessageSendResult.NO_RECEIVER
        # Paced: wait until the receiver's outbox has room (it may be closed meanwhile).
        if receiver.closing or not receiver._has_room():
            if not await receiver.wait_for_room() or app.sessions.get(target) is not receiver:
                return UserMessageSendResult.NO_RECEIVER
        if sender.closing or sender.uid is None:
            return None  # nobody to report to any more
        self.metrics.count_message("peer", sender.app_id, sender.business_id)
        if config != _RELIABLE_ORDERED:
            _, frame = receiver.conn.deliver(_PEER, sender.uid, None, payload, reliable=False)
            receiver.push(frame)
            return UserMessageSendResult.SUCCESS
        pending = Pending(sender, seq, receiver)
        _, frame = receiver.conn.deliver(_PEER, sender.uid, None, payload, reliable=True,
                                         tag=pending)
        receiver.track(pending, self.limits.message_timeout)
        receiver.push(frame, pending)
        return None

    def on_acked(self, receiver: Session, acked: p.Acked) -> None:
        """The receiver's SDK acknowledged frames: their senders get SUCCESS."""
        for tag in acked.tags:
            if isinstance(tag, Pending):
                tag.resolve(UserMessageSendResult.SUCCESS)
        receiver.acked()


def _login_result(code: int) -> str:
    try:
        return LoginErrorCode(code).name.lower()
    except ValueError:
        return str(code)
