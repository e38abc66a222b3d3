"""The protocol conversation of one WebSocket connection: HELLO, requests, SENDs, ACKs, PINGs.

Nothing a client sends may raise out of here or stall other connections: a protocol violation
closes only that connection (CLOSE frame, then the WebSocket close with the same code), and an
unexpected error closes it with INTERNAL_ERROR.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Tuple

from aiohttp import WebSocketError, WSCloseCode, WSMsgType, web

from .. import protocol as p
from .._version import __version__
from ..enums import LoginErrorCode, RoomMessageSendResult, UserMessageSendResult
from ..errors import RemoteProtocolError
from .hub import Hub
from .session import CIDS, CLOSE_TIMEOUT, Session, TokenBucket
from .ws_guard import guarded_reader

if TYPE_CHECKING:
    from .journal import SessionJournal

__all__ = ["ConnectionHandler", "serve_connection"]

log = logging.getLogger(__name__)

_NOT_SUPPORTED: Tuple[int, ...] = ()
_ARITY: Dict[int, int] = {p.Op.LOGIN: 4, p.Op.LOGOUT: 0, p.Op.ONLINE_STATUS: 1,
                          p.Op.SET_SERVER_PARAMS: 2,
                          p.Op.JOIN_ROOM: 2, p.Op.LEAVE_ROOM: 1}


class _RtsWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket, except that a message over ``max_msg_size`` (which aiohttp rejects
    before reading it, closing with 1009) is answered as the protocol says: a CLOSE frame and the
    WebSocket close code FRAME_TOO_LARGE (4413). Where aiohttp would read such a message's body
    before refusing it, ``ws_guard`` refuses it from its header."""

    too_large: Optional[Callable[[], Optional[bytes]]] = None
    #: The largest frame (the ``max_frame`` limit).
    frame_limit = p.default_max_frame()

    def _post_start(self, request: Any, *args: Any, **kwargs: Any) -> None:  # aiohttp's hook
        with guarded_reader(request.protocol, self, self.frame_limit):
            super()._post_start(request, *args, **kwargs)

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", **kwargs: Any) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed and self.too_large is not None:
            frame = self.too_large()
            if frame is not None:
                try:
                    await self.send_bytes(frame)
                except Exception as exc:  # the transport is gone: the close below says enough
                    log.debug("could not send CLOSE: %r", exc)
                code, message = p.CloseCode.FRAME_TOO_LARGE, b"frame too large"
        return await super().close(code=code, message=message, **kwargs)


async def serve_connection(hub: Hub, request: web.Request) -> web.WebSocketResponse:
    """The ``/rts`` endpoint: run one connection until it ends."""
    limits = hub.limits
    # aiohttp rejects a message of max_msg_size bytes or more; max_frame itself is allowed.
    ws = _RtsWebSocket(max_msg_size=limits.max_frame + 1, heartbeat=None, compress=False,
                       timeout=CLOSE_TIMEOUT)
    ws.frame_limit = limits.max_frame
    await ws.prepare(request)
    session = Session(next(CIDS), ws, request, limits, hub.metrics, request.remote or "",
                      hub.on_session_closed,
                      journaled=hub.cluster is not None and hub.cluster.resume)
    handler = ConnectionHandler(hub, session)
    ws.too_large = handler.frame_too_large
    log.debug("connection %d from %s opened", session.cid, session.peer_ip)
    if not hub.add_connection(ws, session):
        log.info("connection %d: too many connections from %s", session.cid, session.peer_ip)
        session.close(p.CloseCode.REJECTED, "too many connections from this address")
    try:
        await handler.run()
    finally:
        session = handler.session  # the session this connection resumed, if it did
        hub.remove_connection(ws, request.remote or "")
        if session.ws is ws:  # still ours (not taken over by a newer connection)
            if (not session.closing and session.uid is not None and limits.resume_window > 0
                    and not hub.shutting_down):
                session.detach()
            else:
                session.close(p.CloseCode.NORMAL, "connection ended", frame=False)
                await session.wait_closed()
        log.debug("connection %d ended (%s: %s)", session.cid, session.close_code,
                  session.close_reason)
    return ws


class ConnectionHandler:
    """Reads one connection's frames and acts on each (see the module docstring).

    Threading: not thread-safe; runs on the server's event loop.
    """

    def __init__(self, hub: Hub, session: Session) -> None:
        self.hub = hub
        self.session = session
        self.limits = hub.limits
        self._login_timer: Optional[asyncio.TimerHandle] = None

    async def run(self) -> None:
        ws = self.session.ws
        assert ws is not None
        self._login_timer = asyncio.get_running_loop().call_later(
            self.limits.login_timeout, self._login_expired)
        try:
            while True:
                msg = await ws.receive()
                s = self.session  # changes when this connection resumes a session
                if s.ws is not ws:
                    break  # a newer connection took the session over: this one is done
                if msg.type == WSMsgType.BINARY:
                    if not s.closing:  # after close: drain until the WebSocket closes
                        await self._on_frame(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if not s.closing:
                        self._protocol_error(RemoteProtocolError(
                            "text WebSocket messages are not part of the protocol",
                            p.CloseCode.PROTOCOL_ERROR))
                else:
                    if msg.type == WSMsgType.ERROR and not s.closing:
                        if isinstance(msg.data, WebSocketError):  # broke RFC 6455: no resume
                            self._protocol_error(RemoteProtocolError(
                                "websocket: %s" % (msg.data,), p.CloseCode.PROTOCOL_ERROR),
                                frame=False)
                        else:
                            self.hub.metrics.protocol_errors += 1
                            log.info("connection %d: WebSocket error: %r", s.cid, msg.data)
                    break  # CLOSE, CLOSING, CLOSED or ERROR: the WebSocket is done
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection %d: internal error", self.session.cid)
            self.session.close(p.CloseCode.INTERNAL_ERROR, "internal server error")
        finally:
            if self._login_timer is not None:
                self._login_timer.cancel()
                self._login_timer = None

    def _login_expired(self) -> None:
        s = self.session
        if s.uid is None and not s.closing:
            log.info("connection %d: no login within %.1f s", s.cid, self.limits.login_timeout)
            s.close(p.CloseCode.LOGIN_TIMEOUT, "no login within %g s" % self.limits.login_timeout)

    def _protocol_error(self, exc: RemoteProtocolError, frame: bool = True) -> None:
        s = self.session
        self.hub.metrics.protocol_errors += 1
        log.info("connection %d from %s: protocol error (%d): %s", s.cid, s.peer_ip, exc.code,
                 exc.args[0])
        s.close(exc.code, str(exc.args[0]), frame=frame)

    def frame_too_large(self) -> Optional[bytes]:
        """aiohttp rejected an oversized message: record it; the CLOSE frame to send, if any."""
        s = self.session
        if s.closing:
            return None
        self._protocol_error(RemoteProtocolError(
            "frame exceeds the limit of %d bytes" % self.limits.max_frame,
            p.CloseCode.FRAME_TOO_LARGE), frame=False)
        return s.close_frame()

    # ------------------------------------------------------------------ frames
    async def _on_frame(self, data: bytes) -> None:
        s = self.session
        self.hub.metrics.frames_in += 1
        try:
            ev = s.conn.receive(data)
            if ev is None:  # a duplicate SEND (resent after a resume): already handled
                s.wake_writer()
            elif isinstance(ev, p.Send):
                if s.journal is not None:
                    await self._journaled(s.journal, ev.seq, self._on_send(ev))
                else:
                    await self._on_send(ev)
                s.wake_writer()  # the writer sends one cumulative ACK after the batch
            elif isinstance(ev, p.Acked):
                self.hub.on_acked(s, ev)
            elif isinstance(ev, p.Request):
                if s.journal is not None:
                    await self._journaled(s.journal, ev.rid, self._on_request(ev))
                else:
                    await self._on_request(ev)
            elif isinstance(ev, p.Ping):
                await s.enqueue(s.conn.pong(ev.token))
            elif isinstance(ev, p.Hello):
                if self.hub.cluster is not None and ev.resume is not None:
                    await self.hub.cluster.before_hello(ev.app_id, ev.resume[0], ev.resume[1])
                self._on_hello(ev)
            elif isinstance(ev, p.Close):
                log.debug("connection %d: CLOSE %d from the client: %s", s.cid, ev.code, ev.reason)
                s.close(p.CloseCode.NORMAL, "closed by the client", frame=False)
            # Pong: nothing to do (the server does not send PINGs yet).
        except RemoteProtocolError as exc:
            self._protocol_error(exc)

    @staticmethod
    async def _journaled(j: SessionJournal, seq: int, handling: Awaitable[None]) -> None:
        """Cluster resume: handle client frame ``seq``, noted as taken in first; a hand-over
        of the session waits until it is handled (so none is left half done)."""
        j.take_in(seq)
        j.busy = True
        try:
            await handling
        finally:
            j.busy = False
            if j.release_to is not None:
                j.changed()

    def _on_hello(self, ev: p.Hello) -> None:
        s = self.session
        if ev.app_id not in self.hub.apps:
            log.info("connection %d: unknown app id %r", s.cid, ev.app_id)
            s.close(p.CloseCode.REJECTED, "unknown app id")
            return
        version = p.negotiate(ev.versions)
        if version is None:
            log.info("connection %d: no common protocol version in %r", s.cid, ev.versions)
            s.close(p.CloseCode.UNSUPPORTED_VERSION, "no common protocol version (server speaks %s)"
                    % ", ".join(str(v) for v in p.SUPPORTED_VERSIONS))
            return
        s.app_id = ev.app_id
        params: Dict[str, Any] = {
            "max_frame": self.limits.max_frame,
            "max_payload": self.limits.max_payload,
            "server": "rts_sync/%s" % __version__,
            "login_timeout": self.limits.login_timeout,
            "resume_window": self.limits.resume_window,
        }
        if ev.resume is not None:
            old, why = self.hub.find_resumable(ev.app_id, ev.resume[0])
            if old is not None:
                self._resume(old, version, params, ev.resume[1])
                return
            log.info("connection %d: cannot resume session (%s)", s.cid, why)
            params.update(resumed=False, resume_error=why)
        s.push(s.conn.welcome(version, params))

    def _resume(self, old: Session, version: int, params: Dict[str, Any], client_seq: int) -> None:
        """This connection continues session ``old``; the handshake's Session is dropped."""
        s = self.session
        log.info("connection %d resumes session of %s (connection %d)", s.cid, old.uid, old.cid)
        params.update(resumed=True, last_seq=old.conn.in_seq, session=old.session_id)
        assert s.ws is not None and s.request is not None
        ws, request = s.ws, s.request
        old.adopt(ws, request, s.peer_ip, lambda conn: conn.welcome(version, params), client_seq)
        s.discard()
        self.session = old
        self.hub.move_connection(ws, old)
        if self._login_timer is not None:
            self._login_timer.cancel()
            self._login_timer = None

    async def _on_request(self, ev: p.Request) -> None:
        s = self.session
        op = ev.op
        arity = _ARITY.get(op)
        if arity is not None and len(ev.args) != arity:
            raise RemoteProtocolError("request op %d takes %d arguments, got %d"
                                      % (op, arity, len(ev.args)), p.CloseCode.PROTOCOL_ERROR)
        result: Any = None
        close_after = False
        if op == p.Op.LOGIN:
            if self.hub.cluster is not None:
                code, result = await self.hub.cluster.login(s, ev.args)
            else:
                code, result = self.hub.login(s, ev.args)
            if code == LoginErrorCode.SUCCESS and self._login_timer is not None:
                self._login_timer.cancel()
                self._login_timer = None  # an idle connection keeps no timer
        elif op in _NOT_SUPPORTED:
            code, result = UserMessageSendResult.UNKNOWN, {"reason": "not supported yet"}
        elif op not in _ARITY:
            raise RemoteProtocolError("unknown request op %d" % op, p.CloseCode.PROTOCOL_ERROR)
        elif s.uid is None:
            code = UserMessageSendResult.NOT_LOGIN
        elif op == p.Op.LOGOUT:
            self.hub.logout(s)
            if self.hub.cluster is not None:  # answered once the cluster knows it
                await self.hub.cluster.settle()
            code, close_after = 0, True
        elif op == p.Op.JOIN_ROOM:
            join_type = ev.args[1] if ev.args[1] in (0, 1) else 0
            code, result = await self.hub.apps[s.app_id or ""].rooms.join(s, ev.args[0], join_type)
            if code == 0 and self.hub.cluster is not None:
                code, result = await self.hub.cluster.joined(s, ev.args[0], result)
        elif op == p.Op.LEAVE_ROOM:
            code = await self.hub.apps[s.app_id or ""].rooms.leave(s, ev.args[0])
        elif op == p.Op.SET_SERVER_PARAMS:
            code, result = self.hub.forwarder.set_params(s, ev.args)
        else:  # ONLINE_STATUS
            code, result = 0, int(self.hub.online_status(s, ev.args[0]))
            if result != 1 and self.hub.cluster is not None:
                result = int(await self.hub.cluster.online_status(s.app_id or "", ev.args[0]))
        if s.journal is not None and op in (p.Op.JOIN_ROOM, p.Op.LEAVE_ROOM,
                                            p.Op.SET_SERVER_PARAMS):
            s.journal.meta_dirty = True  # written with this RESPONSE
        if await s.wait_for_room():  # then sequence and queue it with no await in between
            s.push(s.conn.respond(ev.rid, code, result))
        if close_after:
            s.close(p.CloseCode.NORMAL, "logged out")

    async def _on_send(self, ev: p.Send) -> None:
        s = self.session
        # Pace a sender whose own results are not being read.
        if (s.closing or not s._has_room()) and not await s.wait_for_room():
            return
        code: Optional[int]
        if s.uid is None:
            code = UserMessageSendResult.NOT_LOGIN
        elif p.payload_size(ev.payload) > self.limits.max_payload:
            code = UserMessageSendResult.EXCEED_MAX_LENGTH
        elif not self._allow(ev.kind):
            code = UserMessageSendResult.EXCEED_QPS
        elif ev.kind == p.TargetKind.ROOM:
            code = await self._on_room_send(ev)
        elif ev.kind == p.TargetKind.SERVER:
            code = await self.hub.forwarder.forward(s, ev.seq, ev.payload)
        else:
            code = await self.hub.send_peer(s, ev.seq, ev.target, ev.config, ev.payload)
        if code is not None:
            s.post_result(code, ev.seq)

    async def _on_room_send(self, ev: p.Send) -> int:
        s = self.session
        if ev.target not in s.rooms:
            return RoomMessageSendResult.NOT_JOIN
        rooms = self.hub.apps[s.app_id or ""].rooms
        if not rooms.allow(ev.target, asyncio.get_running_loop().time()):
            return RoomMessageSendResult.EXCEED_QPS
        return await rooms.broadcast(s, s.uid or "", ev.target, ev.payload)

    def _allow(self, kind: int) -> bool:
        """The per-session token bucket of this kind of message, when its qps limit is set."""
        rate = (self.limits.p2p_qps, self.limits.room_qps, self.limits.server_qps)[kind]
        if rate <= 0:
            return True
        now = asyncio.get_running_loop().time()
        bucket = self.session.buckets.get(kind)
        if bucket is None:
            bucket = self.session.buckets[kind] = TokenBucket(rate, now)
        return bucket.take(now)
