"""One client connection on the server: its protocol state, its bounded outbox and how it is written.

Writing (docs/performance.md, "Suggested hot-path changes" 4 and 8): a frame queued while
nothing else waits is written at once, in the call that queues it (``push``: no task, no extra
event-loop iteration), together with the cumulative ACK. The connection is then *corked* until
the next loop iteration: frames queued meanwhile, the ACK after a batch of SENDs and the RESULTs
wait for one flush (``loop.call_soon``), which frames them all (``wsframe``) and writes them with
one ``transport.write``. When the transport's buffer is over its high-water mark (the client
reads slowly), frames stay queued and a short-lived task waits for the transport to drain, then
flushes. There is no writer task per connection: a connection holds a task only while it waits
for a drain or while it closes.

Order: frames go out in the order of their sequence numbers. Queued frames were numbered when
queued; a frame is written through only when nothing is queued; a flush writes the queued frames,
then the ACK, then the RESULTs, numbered there (after every queued frame). A resume queues its
WELCOME first.

Flow control (DESIGN.md §3): producers (the read loops of senders, and this connection's own read
loop for its responses) first ``await wait_for_room()`` and then ``push()`` without awaiting, so
frames enter the outbox in the order their sequence numbers were taken. A full outbox paces its
producers; if it stays full (nothing written, no acknowledgement from the client) for longer than
``slow_consumer_grace``, this connection is closed with SLOW_CONSUMER, so one stuck reader cannot
stall the others. Nothing grows without bound: the outbox, the results waiting to be written and
the reliable frames waiting for the client's ACK are all capped by ``send_queue_frames``, and
the transport's buffer holds at most about its high-water mark plus ``wsframe.CHUNK``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from aiohttp import web

from .. import protocol as p
from ..enums import UserMessageSendResult
from ..errors import LocalProtocolError
from . import wsframe
from .config import Limits
from .metrics import Metrics
from .pending import Pending, TokenBucket
from .session_resume import SessionResume

if TYPE_CHECKING:
    from .journal import SessionJournal

__all__ = ["CIDS", "Pending", "Session", "TokenBucket"]

log = logging.getLogger(__name__)

#: How long a closing connection may take to write its last frames and close before it is aborted.
CLOSE_TIMEOUT = 5.0
#: Most seqs in one RESULT frame (keeps the frame far below the smallest sensible max_frame).
_RESULT_CHUNK = 1024
#: Connection ids (in logs), shared by connections and sessions taken over from other nodes.
CIDS = itertools.count(1)


class Session(SessionResume):
    """One WebSocket connection: the ``Connection(Role.SERVER)``, who it is, its outbox and how it
    is written (see the module docstring).

    Threading: not thread-safe; everything runs on the server's event loop (``push`` and the
    flush write to the transport directly from the calling code or a ``call_soon`` callback).
    """

    __slots__ = (
        "_blocked_since", "_corked", "_deadline", "_flush_soon", "_inflight", "_loop",
        "_n_results", "_on_close", "_room_waiter", "_send_close_frame", "app_id", "buckets",
        "business_id", "cid", "conn", "journal", "limits", "metrics", "rooms", "server_params",
        "session_id", "uid")

    def __init__(self, cid: int, ws: Optional[web.WebSocketResponse],
                 request: Optional[web.Request], limits: Limits, metrics: Metrics, peer_ip: str,
                 on_close: Callable[[Session], None], journaled: bool = False) -> None:
        self.cid = cid
        #: The WebSocket serving this session now (None while detached, waiting for a resume).
        self.ws: Optional[web.WebSocketResponse] = ws
        self.request: Optional[web.Request] = request
        self.limits = limits
        self.metrics = metrics
        self.peer_ip = peer_ip
        if journaled:  # cluster resume: its reliable frames are also written to Redis
            from .journal import JournaledConnection

            self.conn: p.Connection = JournaledConnection(p.Role.SERVER, max_frame=limits.max_frame)
        else:
            self.conn = p.Connection(p.Role.SERVER, max_frame=limits.max_frame)
        #: Cluster resume, once logged in: the write barrier (``journal`` module); else None.
        self.journal: Optional[SessionJournal] = None
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
        #: Frames queued, not written yet (a Pending: a reliable peer delivery).
        self._out: List[Tuple[bytes, Optional[Pending]]] = []
        self._results: Dict[int, List[int]] = {}
        self._n_results = 0
        self._inflight = 0
        self._send_close_frame = True
        #: A flush is scheduled for the next loop iteration.
        self._flush_soon = False
        #: A frame was written through in this iteration: the next ones wait for that flush.
        self._corked = False
        #: Producers waiting in wait_for_room share this future (made when one has to wait).
        self._room_waiter: Optional[asyncio.Future[None]] = None
        self._blocked_since: Optional[float] = None
        self._loop = asyncio.get_running_loop()
        #: The task waiting for the transport to drain, or closing the connection; else None.
        self._task: Optional[asyncio.Task[None]] = None
        self._deadline: Optional[asyncio.TimerHandle] = None
        self._resume_timer: Optional[asyncio.TimerHandle] = None
        self._transport: Optional[asyncio.Transport] = None
        self._protocol: Any = None
        #: Reliable deliveries to this client with their deadlines, oldest first (see ``track``).
        self._timeouts: Optional[Deque[Tuple[float, Pending]]] = None
        self._timeout_timer: Optional[asyncio.TimerHandle] = None
        if request is not None:
            self._attach(request)

    def __repr__(self) -> str:
        return "<Session %d app=%s uid=%s>" % (self.cid, self.app_id, self.uid)

    def _attach(self, request: web.Request) -> None:
        """Write to the transport of ``request`` (the WebSocket's HTTP request) from now on;
        its protocol (aiohttp's request handler) tells when that transport is over its
        high-water mark (see ``wsframe``)."""
        self._transport = request.transport
        self._protocol = request.protocol

    @property
    def closing(self) -> bool:
        """True once ``close`` was called: nothing more is read or queued."""
        return self.close_code is not None

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
            if self._blocked_since is None or (self.journal is not None
                                               and not self.journal.cluster.healthy):
                self._blocked_since = now  # (frames wait for Redis, not for this client)
            remaining = self._blocked_since + self.limits.slow_consumer_grace - now
            if remaining <= 0:
                self.metrics.slow_consumer_disconnects += 1
                log.info("connection %d (uid %s): not reading for %.1f s, closing as slow consumer",
                         self.cid, self.uid, self.limits.slow_consumer_grace)
                self.close(p.CloseCode.SLOW_CONSUMER, "slow consumer", flush=False)
                break
            waiter = self._room_waiter
            if waiter is None:
                waiter = self._room_waiter = self._loop.create_future()
            # asyncio.wait, not wait_for: a timeout must not cancel the shared future.
            await asyncio.wait((waiter,), timeout=remaining)
        return self.close_code is None

    async def enqueue(self, data: bytes) -> bool:
        """Queue one unsequenced frame (PONG), paced by :meth:`wait_for_room`; False if the
        connection closed. A sequenced frame must be numbered after the wait: ``wait_for_room``
        then ``push(conn.respond(...))`` with no await in between."""
        if not await self.wait_for_room():
            return False
        if (self.journal is not None and self._transport is not None
                and not self._protocol._paused):
            return self._write(wsframe.frame(data))  # unsequenced: need not wait for Redis
        self.push(data)
        return True

    def push(self, data: bytes, pending: Optional[Pending] = None) -> None:
        """Queue a frame now (after ``wait_for_room``, or a control frame past the bound); when
        nothing else waits to be written, write it (and the cumulative ACK) right away."""
        if pending is not None:
            self._inflight += 1
        if self.close_code is not None:
            if pending is not None:
                pending.resolve(UserMessageSendResult.TIMEOUT)
            return
        j = self.journal
        if (j is not None or self._out or self._corked or self._transport is None
                or self._protocol._paused):
            self._out.append((data, pending))
            if j is not None:  # written once the writer has it in Redis
                j.pushed += 1
                j.changed()
            self._schedule()
            return
        # Write-through: nothing queued, nothing written yet in this loop iteration.
        try:
            ack = self.conn.ack()
        except LocalProtocolError:
            ack = None
        self._write(wsframe.frame(data) if ack is None else wsframe.frames((data, ack)))
        self._progress()
        self._corked = True  # what comes in this iteration goes out in one write, with the flush
        self._schedule()

    def post_result(self, code: int, seq: int) -> None:
        """Queue the result of one of this client's SENDs; RESULT frames are coalesced by code.
        A session handed over to another node sends it on to that node."""
        if self.close_code is not None:
            if self.journal is not None:
                self.journal.forward_result(code, seq)  # if moving or moved
            return
        self._results.setdefault(int(code), []).append(seq)
        self._n_results += 1
        self._schedule()

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
        """Flush soon, e.g. to send the cumulative ACK after a batch of SENDs."""
        self._schedule()

    def track(self, pending: Pending, timeout: float) -> None:
        """Resolve ``pending`` (a reliable delivery to this client) with TIMEOUT if it is still
        unresolved ``timeout`` seconds from now. One timer serves all of them: with the same
        timeout for every message their deadlines come in the order they are tracked, and the
        client's cumulative ACKs resolve them in that order too."""
        queue = self._timeouts
        if queue is None:
            queue = self._timeouts = deque()
        else:
            while queue and queue[0][1].done:
                queue.popleft()
        deadline = self._loop.time() + timeout
        queue.append((deadline, pending))
        if self._timeout_timer is None:
            self._timeout_timer = self._loop.call_at(deadline, self._expire_tracked)

    def _expire_tracked(self) -> None:
        """The timer of ``track`` (a callback on the event loop)."""
        self._timeout_timer = None
        queue = self._timeouts
        now = self._loop.time()
        while queue:
            deadline, pending = queue[0]
            if not pending.done:
                if deadline > now:
                    self._timeout_timer = self._loop.call_at(deadline, self._expire_tracked)
                    return
                pending.resolve(UserMessageSendResult.TIMEOUT)
            queue.popleft()
        self._timeouts = None

    def acked(self) -> None:
        """The client acknowledged frames: that is progress for the slow-consumer check."""
        self._progress()

    def _inflight_done(self) -> None:
        self._inflight -= 1
        self._progress()

    def _progress(self) -> None:
        self._blocked_since = None
        self._wake_producers()

    def _wake_producers(self) -> None:
        waiter = self._room_waiter
        if waiter is not None:
            self._room_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ------------------------------------------------------------------ writing
    def _schedule(self) -> None:
        """Flush in the next loop iteration (once, however often this is called meanwhile)."""
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """The scheduled flush (a ``call_soon`` callback on the event loop). While a task of
        this session runs (drain or close), that task writes instead."""
        self._flush_soon = self._corked = False
        if self.close_code is None and self._task is None:
            if self.journal is not None and self._results:
                for frame in self._take(ack=False):  # numbered (and journaled) now
                    self._out.append((frame, None))
                    self.journal.pushed += 1
                self.journal.changed()
            if not self._write_pending():
                self._start_drain()

    def _take(self, ack: bool = True) -> List[bytes]:
        """The cumulative ACK, then the coalesced RESULTs, numbered now (after every queued
        frame). The ACK follows the queued frames so that a WELCOME queued by a resume goes
        first. With a journal, the ACK covers only client frames whose handling is in Redis,
        and the RESULTs are queued by ``_flush`` instead (they too wait for the journal)."""
        batch: List[bytes] = []
        j = None if self.close_code is not None else self.journal
        try:
            if ack:
                frame = self.conn.ack(None if j is None else j.durable_in)
                if frame is not None:
                    batch.append(frame)
            if j is not None and ack:
                return batch
            for code, seqs in self._results.items():
                for i in range(0, len(seqs), _RESULT_CHUNK):
                    batch.append(self.conn.result(code, seqs[i:i + _RESULT_CHUNK]))
        except LocalProtocolError:
            pass  # the connection is already closed by the protocol: nothing more to say
        self._results.clear()
        self._n_results = 0
        return batch

    def _write_pending(self) -> bool:
        """Write the queued frames, then the ACK and the RESULTs, about ``wsframe.CHUNK`` bytes
        per ``transport.write`` while the transport takes them. True when all is written; False
        when detached, when the transport is over its high-water mark (the rest stays queued:
        see ``_start_drain``) or when the write failed."""
        if self._transport is None:
            return False  # detached: kept for a resume
        protocol = self._protocol
        if protocol._paused:
            return False
        out = self._out
        j = self.journal
        n = len(out)
        if j is not None and self.close_code is None:
            n = min(n, j.released - j.written)  # the rest is not in Redis yet
        took = n > 0 or bool(self._results)
        parts: List[bytes] = []
        if n > 0:
            size = 0
            i = 0
            while i < n:
                data, pending = out[i]
                i += 1
                if pending is not None and pending.done:
                    continue  # a timed-out delivery is never written
                parts.append(wsframe.header(len(data)))
                parts.append(data)
                size += len(data)
                if size >= wsframe.CHUNK and i < n:
                    if not self._write(b"".join(parts)):
                        return False
                    parts, size = [], 0
                    if protocol._paused:
                        del out[:i]
                        if j is not None:
                            j.written += i
                        self._progress()
                        return False
            del out[:n]
            if j is not None:
                j.written += n
        for data in self._take():
            parts.append(wsframe.header(len(data)))
            parts.append(data)
        ok = not parts or self._write(b"".join(parts))
        if took:
            self._progress()
        return ok

    def _write(self, data: bytes) -> bool:
        """Write bytes to the transport; False if they cannot be written. A transport that
        fails is aborted (its reader then ends and decides: keep the session for a resume, or
        close it); one already closing, or a WebSocket aiohttp is closing, is left to end by
        itself. Frames not written stay unacknowledged, for a resume to replay."""
        transport, ws = self._transport, self.ws
        if transport is None or ws is None or ws.closed or transport.is_closing():
            return False
        try:
            transport.write(data)
            return True
        except Exception as exc:
            log.debug("connection %d: write failed: %r", self.cid, exc)
            self.abort()
            return False

    def _start_drain(self) -> None:
        """Frames wait because the transport is over its high-water mark: write them once it
        drained, from a short-lived task (only while the client reads slower than frames come)."""
        if (self._task is None and self.close_code is None and self.ws is not None
                and self._protocol is not None and self._protocol._paused):
            self._task = self._loop.create_task(self._drain_then_flush(self.ws))

    async def _drain_then_flush(self, ws: web.WebSocketResponse) -> None:
        try:
            await self._pump(ws)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection was lost: its reader ends the session
            log.debug("connection %d: drain failed: %r", self.cid, exc)
        if self._task is asyncio.current_task():
            self._task = None

    async def _pump(self, ws: web.WebSocketResponse) -> bool:
        """Write everything queued, waiting for the transport to drain whenever it is over its
        high-water mark. True when all is written; False if the connection broke or ``ws`` is
        no longer this session's WebSocket. Raises ConnectionError if the connection is lost
        while waiting."""
        while self.ws is ws:
            protocol = self._protocol
            if protocol._paused:
                await protocol._drain_helper()
                continue
            if self._write_pending():
                return True
            if not protocol._paused:
                return False  # the write failed
        return False

    def close_frame(self) -> bytes:
        """The CLOSE frame for the close code and reason given to :meth:`close`."""
        try:
            return self.conn.close(self.close_code or p.CloseCode.NORMAL, self.close_reason)
        except LocalProtocolError:  # Connection already CLOSED (e.g. after a RemoteProtocolError)
            return p.encode(p.Close(self.close_code or p.CloseCode.NORMAL, self.close_reason[:200]))

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
        if self._timeout_timer is not None:
            self._timeout_timer.cancel()
            self._timeout_timer = None
        self._timeouts = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if not flush:
            self._out.clear()
            self._results.clear()
            self._n_results = 0
        if self.ws is not None:
            self._task = self._loop.create_task(self._finish() if flush else self._close_now())
        self._wake_producers()
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        self._deadline = self._loop.call_later(CLOSE_TIMEOUT, self.abort)
        self._on_close(self)

    async def _finish(self) -> None:
        """Close gracefully: write what is queued, the CLOSE frame, then the WebSocket close."""
        ws = self.ws
        if ws is None:
            return
        try:
            if not await self._pump(ws):
                return
            if self._send_close_frame and not ws.closed:
                if not self._write(wsframe.frame(self.close_frame())):
                    return
            await ws.close(code=self.close_code or p.CloseCode.NORMAL,
                           message=self.close_reason.encode("utf-8")[:120])
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transport broke under us
            log.debug("connection %d: close failed: %r", self.cid, exc)
            if self.ws is ws:
                self.abort()

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

    async def wait_closed(self) -> None:
        """Wait (bounded) until the connection finished closing; abort it if that hangs."""
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT + 1.0)
            if not done:
                task.cancel()
                self.abort()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
