"""One client connection on the server: its protocol state, its bounded outbox and its writer task.

Flow control (DESIGN.md §3): producers (the read loops of senders, and this connection's own read
loop for its responses) first ``await wait_for_room()`` and then ``push()`` without awaiting, so
frames enter the outbox in the order their sequence numbers were taken. A full outbox paces its
producers; if it stays full (no frame taken by the writer, no acknowledgement from the client) for
longer than ``slow_consumer_grace``, this connection is closed with SLOW_CONSUMER, so one stuck
reader cannot stall the others. Nothing grows without bound: the outbox, the results waiting to be
written and the reliable frames waiting for the client's ACK are all capped by
``send_queue_frames``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Set, Tuple

from aiohttp import web

from .. import protocol as p
from ..enums import UserMessageSendResult
from ..errors import LocalProtocolError
from .config import Limits
from .metrics import Metrics

__all__ = ["Pending", "Session", "TokenBucket"]

log = logging.getLogger(__name__)

#: How long a closing connection may take to write its last frames and close before it is aborted.
CLOSE_TIMEOUT = 5.0
#: Most seqs in one RESULT frame (keeps the frame far below the smallest sensible max_frame).
_RESULT_CHUNK = 1024


class TokenBucket:
    """A token bucket of ``rate`` tokens per second holding at most ``max(1, rate)`` tokens.

    Threading: not thread-safe; owned by the server's event loop.
    """

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Pending:
    """A reliable peer message delivered to ``receiver``, waiting for its SDK's acknowledgement.

    It is resolved exactly once: SUCCESS when the receiver acknowledges it, TIMEOUT when the
    message timeout passes or the receiver's connection ends first. The sender then gets the
    RESULT for ``seq`` (if it is still connected).

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("done", "receiver", "sender", "seq", "timer")

    def __init__(self, sender: Session, seq: int, receiver: Session) -> None:
        self.sender = sender
        self.seq = seq
        self.receiver = receiver
        self.done = False
        self.timer: Optional[asyncio.TimerHandle] = None

    def resolve(self, code: int) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.receiver._inflight_done()
        self.sender.post_result(code, self.seq)


class Session:
    """One WebSocket connection: the ``Connection(Role.SERVER)``, who it is, its outbox and writer.

    Threading: not thread-safe; everything runs on the server's event loop.
    """

    def __init__(self, cid: int, ws: web.WebSocketResponse, request: web.Request, limits: Limits,
                 metrics: Metrics, peer_ip: str, on_close: Callable[[Session], None]) -> None:
        self.cid = cid
        #: The WebSocket serving this session now (None while detached, waiting for a resume).
        self.ws: Optional[web.WebSocketResponse] = ws
        self.request: Optional[web.Request] = request
        self.limits = limits
        self.metrics = metrics
        self.peer_ip = peer_ip
        self.conn = p.Connection(p.Role.SERVER, max_frame=limits.max_frame)
        self.app_id: Optional[str] = None
        self.uid: Optional[str] = None
        self.session_id: Optional[str] = None
        self.business_id: Optional[str] = None
        self.buckets: Dict[int, TokenBucket] = {}
        #: Ids of the rooms this session is in (the app's Rooms keeps the members).
        self.rooms: Set[str] = set()
        #: (signature, url) from SET_SERVER_PARAMS: where this client's SERVER sends go.
        self.server_params: Optional[Tuple[str, str]] = None
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._on_close = on_close
        self._out: Deque[Tuple[bytes, Optional[Pending]]] = deque()
        self._results: Dict[int, List[int]] = {}
        self._n_results = 0
        self._inflight = 0
        self._send_close_frame = True
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._blocked_since: Optional[float] = None
        self._loop = asyncio.get_running_loop()
        self._writer: Optional[asyncio.Task[None]] = None
        self._deadline: Optional[asyncio.TimerHandle] = None
        self._resume_timer: Optional[asyncio.TimerHandle] = None

    def __repr__(self) -> str:
        return "<Session %d app=%s uid=%s>" % (self.cid, self.app_id, self.uid)

    @property
    def closing(self) -> bool:
        """True once ``close`` was called: nothing more is read or queued."""
        return self.close_code is not None

    def start(self) -> None:
        self._writer = self._loop.create_task(self._write_loop())

    # ------------------------------------------------------------------ producers
    def _has_room(self) -> bool:
        cap = self.limits.send_queue_frames
        return (len(self._out) + self._n_results < cap and self._inflight < cap
                and self.conn.unacked_count < 2 * cap)

    async def wait_for_room(self) -> bool:
        """Wait until a frame may be queued; False if this connection closed meanwhile.

        Closes this connection as a slow consumer if it makes no progress for the grace period.
        """
        while self.close_code is None and not self._has_room():
            now = self._loop.time()
            if self._blocked_since is None:
                self._blocked_since = now
            remaining = self._blocked_since + self.limits.slow_consumer_grace - now
            if remaining <= 0:
                self.metrics.slow_consumer_disconnects += 1
                log.info("connection %d (uid %s): not reading for %.1f s, closing as slow consumer",
                         self.cid, self.uid, self.limits.slow_consumer_grace)
                self.close(p.CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
                break
            self._room.clear()
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.close_code is None

    async def enqueue(self, data: bytes) -> bool:
        """Queue one unsequenced frame (PONG), paced by :meth:`wait_for_room`; False if the
        connection closed. A sequenced frame must be numbered after the wait: ``wait_for_room``
        then ``push(conn.respond(...))`` with no await in between."""
        if not await self.wait_for_room():
            return False
        self.push(data)
        return True

    def push(self, data: bytes, pending: Optional[Pending] = None) -> None:
        """Queue a frame now (after ``wait_for_room``, or a control frame past the bound)."""
        if pending is not None:
            self._inflight += 1
        if self.close_code is not None:
            if pending is not None:
                pending.resolve(UserMessageSendResult.TIMEOUT)
            return
        self._out.append((data, pending))
        self._wake.set()

    def post_result(self, code: int, seq: int) -> None:
        """Queue the result of one of this client's SENDs; RESULT frames are coalesced by code."""
        if self.close_code is not None:
            return
        self._results.setdefault(int(code), []).append(seq)
        self._n_results += 1
        self._wake.set()

    def post_result_body(self, code: int, seq: int, body: Optional[bytes]) -> None:
        """Queue the result of one SERVER send with the app server's answer (None on failure):
        a RESULT frame of its own, sequenced now (results with a body are never coalesced)."""
        if self.close_code is not None:
            return
        try:
            frame = self.conn.result(code, [seq], body)
        except LocalProtocolError:
            return  # the protocol connection is closed: nobody to tell
        self.push(frame)

    def wake_writer(self) -> None:
        """Let the writer run, e.g. to send the cumulative ACK after a batch of SENDs."""
        self._wake.set()

    def acked(self) -> None:
        """The client acknowledged frames: that is progress for the slow-consumer check."""
        self._progress()

    def _inflight_done(self) -> None:
        self._inflight -= 1
        self._progress()

    def _progress(self) -> None:
        self._blocked_since = None
        self._room.set()

    # ------------------------------------------------------------------ writer
    def _take(self) -> List[bytes]:
        """Everything there is to write now: the queued frames in order, the cumulative ACK,
        then the coalesced RESULTs. Frames go out in the order of their sequence numbers: the
        queued ones were numbered when queued, the RESULTs are numbered here, after them. The
        ACK follows the queued frames so that a WELCOME queued by a resume goes first."""
        batch: List[bytes] = []
        took = bool(self._out) or bool(self._results)
        try:
            for data, pending in self._out:
                if pending is None or not pending.done:  # a timed-out one is never delivered
                    batch.append(data)
            ack = self.conn.ack()
            if ack is not None:
                batch.append(ack)
            for code, seqs in self._results.items():
                for i in range(0, len(seqs), _RESULT_CHUNK):
                    batch.append(self.conn.result(code, seqs[i:i + _RESULT_CHUNK]))
        except LocalProtocolError:
            pass  # the connection is already closed by the protocol: nothing more to say
        self._out.clear()
        self._results.clear()
        self._n_results = 0
        if took:
            self._progress()
        return batch

    def close_frame(self) -> bytes:
        """The CLOSE frame for the close code and reason given to :meth:`close`."""
        try:
            return self.conn.close(self.close_code or p.CloseCode.NORMAL, self.close_reason)
        except LocalProtocolError:  # Connection already CLOSED (e.g. after a RemoteProtocolError)
            return p.encode(p.Close(self.close_code or p.CloseCode.NORMAL, self.close_reason[:200]))

    async def _write_loop(self) -> None:
        ws = self.ws
        if ws is None:
            return
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                for data in self._take():
                    await ws.send_bytes(data)
                if self.close_code is not None and not self._out and not self._results:
                    break
            if self._send_close_frame and not ws.closed:
                await ws.send_bytes(self.close_frame())
            await ws.close(code=self.close_code or p.CloseCode.NORMAL,
                           message=self.close_reason.encode("utf-8")[:120])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport broke under us
            log.debug("connection %d: write failed: %r", self.cid, exc)
            if self.ws is ws:
                # Drop the connection; its reader then ends and decides: keep the session for
                # a resume (logged in) or close it. Frames not written stay unacknowledged.
                self.abort()

    # ------------------------------------------------------------------ closing
    def close(self, code: int, reason: str, *, frame: bool = True, flush: bool = True) -> None:
        """Start closing: write what is queued (unless ``flush`` is False), then a CLOSE frame
        (unless ``frame`` is False), then close the WebSocket with ``code``. Idempotent; the
        connection is aborted if this takes longer than CLOSE_TIMEOUT.
        """
        if self.close_code is not None:
            return
        self.close_code = int(code)
        self.close_reason = reason
        self._send_close_frame = frame
        log.debug("connection %d (uid %s): closing with %d: %s", self.cid, self.uid, code, reason)
        # Reliable messages this client has not acknowledged can no longer be confirmed.
        for tag in self.conn.unacked_tags():
            if isinstance(tag, Pending):
                tag.resolve(UserMessageSendResult.TIMEOUT)
        if not flush:
            self._out.clear()
            self._results.clear()
            self._n_results = 0
            if self._writer is not None:
                self._writer.cancel()
            self._writer = self._loop.create_task(self._close_now())
        self._wake.set()
        self._room.set()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._deadline = self._loop.call_later(CLOSE_TIMEOUT, self.abort)
        self._on_close(self)

    async def _close_now(self) -> None:
        """Close a connection that does not read: try to say why, briefly, then abort."""
        if self.ws is None:
            return
        try:
            await asyncio.wait_for(self.ws.close(code=self.close_code or p.CloseCode.NORMAL,
                                                 message=self.close_reason.encode("utf-8")[:120]), 1.0)
        except Exception as exc:  # includes the timeout: the peer does not read
            log.debug("connection %d: close failed: %r", self.cid, exc)
        self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        transport = self.request.transport if self.request is not None else None
        if transport is not None:
            transport.abort()

    # ------------------------------------------------------------------ resume
    def discard(self) -> None:
        """Forget the WebSocket without closing it: another Session took it over (resume)."""
        self.ws = self.request = None
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None

    def detach(self) -> None:
        """The WebSocket ended without a close from either side: keep the session (uid, rooms,
        queued and unacknowledged frames) for ``resume_window`` seconds, then end it."""
        log.info("connection %d (uid %s): connection lost, session kept %.0f s for a resume",
                 self.cid, self.uid, self.limits.resume_window)
        self.ws = None
        self.request = None
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
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
        if self._writer is not None:
            self._writer.cancel()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self.ws, self.request, self.peer_ip = ws, request, peer_ip
        self.conn.reopen()
        self._out.clear()  # what was queued is either in the replay or unsequenced (droppable)
        self._out.append((welcome(self.conn), None))
        self._out.extend((data, None) for data in replay)
        self._progress()
        self._wake.set()
        self._writer = self._loop.create_task(self._write_loop())

    async def wait_closed(self) -> None:
        """Wait (bounded) until the writer finished closing; abort the connection if it hangs."""
        task = self._writer
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT + 1.0)
        if not done:
            task.cancel()
            self.abort()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
