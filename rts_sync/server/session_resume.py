"""A server session's life across connections: kept for a resume when its connection drops,
taken over by a new connection (``adopt``), or handed over to another node (``retire``,
cluster resume). A mixin of :class:`~rts_sync.server.session.Session`.

Threading: not thread-safe; everything runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple

from aiohttp import web

from .. import protocol as p
from ..enums import UserMessageSendResult
from .pending import Pending

if TYPE_CHECKING:
    from .config import Limits
    from .journal import SessionJournal

__all__ = ["SessionResume"]

log = logging.getLogger(__name__)


class SessionResume:
    """Detach, expire, adopt and retire (mixed into Session; the slots it assigns are
    declared here, the rest of Session's state in Session)."""

    __slots__ = ("_out", "_protocol", "_results", "_resume_timer", "_task", "_timeout_timer",
                 "_timeouts", "_transport", "close_code", "close_reason", "peer_ip", "request",
                 "ws")

    if TYPE_CHECKING:
        cid: int
        uid: Optional[str]
        ws: Optional[web.WebSocketResponse]
        request: Optional[web.Request]
        peer_ip: str
        limits: Limits
        conn: p.Connection
        journal: Optional[SessionJournal]
        close_code: Optional[int]
        close_reason: str
        _transport: Optional[asyncio.Transport]
        _protocol: Any
        _task: Optional[asyncio.Task[None]]
        _resume_timer: Optional[asyncio.TimerHandle]
        _timeout_timer: Optional[asyncio.TimerHandle]
        _timeouts: Optional[Deque[Tuple[float, Pending]]]
        _loop: asyncio.AbstractEventLoop
        _out: List[Tuple[bytes, Optional[Pending]]]
        _results: Dict[int, List[int]]

        @property
        def closing(self) -> bool: ...
        def close(self, code: int, reason: str, *, frame: bool = True,
                  flush: bool = True) -> None: ...
        def abort(self) -> None: ...
        def post_result(self, code: int, seq: int) -> None: ...
        def _attach(self, request: web.Request) -> None: ...
        def _progress(self) -> None: ...
        def _wake_producers(self) -> None: ...
        def _write_pending(self) -> bool: ...
        def _start_drain(self) -> None: ...

    def _detach_transport(self) -> None:
        self.ws = self.request = None
        self._transport = self._protocol = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def discard(self) -> None:
        """Forget the WebSocket without closing it: another Session took it over (resume)."""
        self._detach_transport()

    def detach(self) -> None:
        """The WebSocket ended without a close from either side: keep the session (uid, rooms,
        queued and unacknowledged frames) for ``resume_window`` seconds, then end it."""
        log.info("connection %d (uid %s): connection lost, session kept %.0f s for a resume",
                 self.cid, self.uid, self.limits.resume_window)
        self._detach_transport()
        self._resume_timer = self._loop.call_later(self.limits.resume_window, self._expire)

    def _expire(self) -> None:
        self._resume_timer = None
        if self.ws is None and not self.closing:
            log.info("connection %d (uid %s): not resumed in time", self.cid, self.uid)
            self.close(p.CloseCode.NORMAL, "resume window expired", frame=False, flush=False)

    def adopt(self, ws: web.WebSocketResponse, request: web.Request, peer_ip: str,
              welcome: Callable[[p.Connection], bytes], client_seq: int) -> None:
        """Serve this session over a new WebSocket (the client resumed it): the WELCOME first,
        then every frame the client has not acknowledged, except deliveries that timed out
        meanwhile, then whatever comes next. A previous WebSocket still open (a half-open link
        the client gave up on) is dropped. RemoteProtocolError if ``client_seq`` is impossible.
        """
        acked, replay = self.conn.resume_from(
            client_seq, keep=lambda tag: not (isinstance(tag, Pending) and tag.done))
        for tag in acked.tags:  # the client had them; only its ACK was lost with the socket
            if isinstance(tag, Pending):
                tag.resolve(UserMessageSendResult.SUCCESS)
        if self.ws is not None and self.ws is not ws:
            self.abort()
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self.ws, self.request, self.peer_ip = ws, request, peer_ip
        self._attach(request)
        self.conn.reopen()
        # What was queued is either in the replay or unsequenced (droppable).
        self._out = [(welcome(self.conn), None)]
        self._out.extend((data, None) for data in replay)
        if self.journal is not None:
            self.journal.reopened(len(self._out))
        self._progress()
        if not self._write_pending():
            self._start_drain()

    def retire(self, upto: int) -> None:
        """Handed over to another node (cluster resume), which now serves the session: stop
        here without ending it — no CLOSE, no leave notices, no presence change. Deliveries
        journaled up to seq ``upto`` are reported by the new node; later ones get TIMEOUT;
        results still to be sent go on to the new node."""
        self.close_code, self.close_reason = int(p.CloseCode.NORMAL), "moved to another node"
        for seq, _, tag in list(self.conn._unacked):
            if isinstance(tag, Pending) and not tag.done:
                if seq <= upto:
                    tag.done = True  # silently: its result comes from the new node
                    if tag.timer is not None:
                        tag.timer.cancel()
                else:
                    tag.resolve(UserMessageSendResult.TIMEOUT)
        for code, seqs in self._results.items():
            for seq in seqs:
                self.post_result(code, seq)  # forwarded: the journal says moved
        self._results.clear()
        self._out.clear()
        for timer in (self._timeout_timer, self._resume_timer):
            if timer is not None:
                timer.cancel()
        self._timeout_timer = self._resume_timer = None
        self._timeouts = None
        self.abort()
        self._detach_transport()
        self._wake_producers()
