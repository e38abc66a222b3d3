"""Cluster mode: a node's stream writer and reader, and the handling of inbound entries.

:class:`ClusterInbox` is mixed into :class:`~rts_sync.server.cluster.Cluster` (see that
module's docstring for cluster mode as a whole). It holds the writer task that appends the
queued entries to the other nodes' inbox streams (pipelined batches, in order, retried while
Redis fails, producers paced when the queue is full), the reader task of this node's inbox,
the handling of what arrives there (peer messages, results, room messages, joins, leaves,
kicks) delivered to each local session in arrival order, and the subscription to the presence
invalidations. :class:`RemotePending` carries a reliable message from another node until its
receiver acknowledged it.

Threading: everything runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Set, Tuple

from redis.exceptions import RedisError

from .. import protocol as p
from ..enums import UserMessageSendResult, UserOfflineReason
from ..errors import LocalProtocolError
from . import redis_store as rs
from .rooms import Rooms
from .session import Pending, Session

if TYPE_CHECKING:
    from .cluster_metrics import ClusterMetrics
    from .config import Limits
    from .hub import AppState, Hub
    from .journal import Snapshot

__all__ = ["BATCH", "MAX_QUEUED", "RETRY_DELAY", "ClusterInbox", "Job", "RemotePending"]

log = logging.getLogger(__name__)

#: Entries queued for Redis before senders are paced.
MAX_QUEUED = 50_000
#: Entries written to Redis in one pipelined batch at most.
BATCH = 1000
#: Delay between retries while Redis does not answer.
RETRY_DELAY = 0.25

Job = Callable[[Session], None]


class RemotePending(Pending):
    """A reliable peer message from another node, delivered here: its result goes back there.

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("cluster", "deadline", "origin", "ref", "reply_to")

    def __init__(self, cluster: ClusterInbox, reply_to: str, ref: int, receiver: Session,
                 deadline: float, origin: Optional[List[Any]]) -> None:
        self.cluster = cluster
        self.reply_to = reply_to
        self.ref = ref
        self.receiver = receiver
        self.seq = 0
        self.done = False
        self.timer: Optional[asyncio.TimerHandle] = None
        #: Wall clock.
        self.deadline = deadline
        #: [app, session id, seq] of the SEND, when the sender's node said.
        self.origin = origin

    def _report(self, code: int) -> None:
        self.cluster.send_result(self.reply_to, self.ref, code, self.origin)

    def reply_to_journal(self, timeout: float) -> List[Any]:
        return ["n", self.reply_to, self.ref, self.deadline, self.origin]


class ClusterInbox:
    """The node's stream writer and reader, and inbound entries (mixed into Cluster)."""

    if TYPE_CHECKING:
        hub: Hub
        node: str
        metrics: ClusterMetrics
        _redis: Any
        _reader: Any
        _spawned: Set[asyncio.Task[Any]]
        _out: Deque[Tuple[str, bytes]]
        _out_wake: Optional[asyncio.Event]
        _out_room: Optional[asyncio.Event]
        _appended: int
        _written: int
        _written_waiters: Deque[Tuple[int, asyncio.Future[None]]]
        _numbers: Dict[str, int]
        _last_id: Any
        _seen: Dict[str, int]
        _lanes: Dict[Session, Deque[Job]]
        _where: Dict[Tuple[str, str], str]
        _inv_gen: int
        _sub_ok: bool
        _remote_members: Dict[Tuple[str, str], Dict[str, str]]
        _redirects: Dict[Tuple[str, str], Deque[Tuple[Any, ...]]]
        _in_transit: Set[Tuple[str, str]]
        _routing: Set[asyncio.Task[None]]
        _arriving: Dict[Tuple[str, str], List[Tuple[Any, ...]]]
        limits: Limits

        def _room_in_transit(self, app_id: str, room_id: str, sender: str,
                             payload: p.Payload, origin: str) -> None: ...
        def _on_room_one(self, app_id: str, room_id: str, sender: str, payload: p.Payload,
                         uid: str) -> None: ...

        def _failed(self, what: str, exc: BaseException) -> None: ...
        def _invalidate_all(self) -> None: ...
        async def locate(self, app_id: str, uid: str, fresh: bool = False) -> Optional[str]: ...
        def _kick(self, app: AppState, uid: str, session_id: str) -> None: ...
        def _result(self, ref: int, code: int) -> None: ...
        def send_result(self, node: str, ref: int, code: int,
                        origin: Optional[List[Any]] = None) -> None: ...
        _jdirty: Dict[Session, None]

        def _take_journal(self) -> List[Snapshot]: ...
        async def _journal_commands(self, pipe: Any, snaps: List[Snapshot]) -> None: ...
        def _journal_done(self, snaps: List[Snapshot], results: List[Any]) -> None: ...
        def _journal_failed(self, snaps: List[Snapshot], exc: BaseException) -> None: ...
        def _on_session_result(self, app_id: str, sid: str, seq: int, code: int) -> None: ...
        def _on_moved(self, app_id: str, room_id: str, uid: str, node: str, prev: str) -> None: ...
        def _on_release(self, sid: str, requester: str) -> None: ...
        def _on_released(self, sid: str) -> None: ...

    # ------------------------------------------------------------------ writing entries
    def _send(self, node: str, kind: str, *fields: Any) -> None:
        n = self._numbers.get(node, 0) + 1
        self._numbers[node] = n
        self._out.append((node, rs.encode_entry(kind, self.node, n, fields)))
        self._appended += 1
        if self._out_wake is not None:
            self._out_wake.set()

    async def written(self, timeout: float) -> bool:
        """Wait until every entry queued so far is in Redis (so it survives this node dying);
        False if that took longer than ``timeout`` (Redis unavailable)."""
        target = self._appended
        if self._written >= target:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._written_waiters.append((target, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def _wait_room(self) -> None:
        """Pace a producer while too much waits to be written to Redis."""
        while len(self._out) >= MAX_QUEUED:
            assert self._out_room is not None
            self._out_room.clear()
            await self._out_room.wait()

    async def _write_loop(self) -> None:
        assert self._out_wake is not None and self._out_room is not None
        while True:
            await self._out_wake.wait()
            self._out_wake.clear()
            while self._out or self._jdirty:
                batch = list(itertools.islice(self._out, BATCH))
                # Cluster resume: the sessions' journals go in the same transaction as the
                # entries their frames caused (journal module docstring).
                snaps = self._take_journal() if self._jdirty else []
                try:
                    pipe = self._redis.pipeline(transaction=bool(snaps))
                    targets = set()
                    for node, data in batch:
                        pipe.xadd(rs.stream_key(node), {"d": data}, maxlen=rs.STREAM_MAXLEN,
                                  approximate=True)
                        targets.add(node)
                    for node in targets:
                        pipe.pexpire(rs.stream_key(node), rs.STREAM_TTL_MS)
                    if snaps:
                        await self._journal_commands(pipe, snaps)
                    res = await pipe.execute()
                except (RedisError, OSError) as exc:
                    self._failed("write", exc)
                    self._journal_failed(snaps, exc)
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                if snaps:
                    self._journal_done(snaps, res[len(res) - len(snaps):])
                for _ in batch:
                    self._out.popleft()
                self._written += len(batch)
                waiters = self._written_waiters
                while waiters and waiters[0][0] <= self._written:
                    fut = waiters.popleft()[1]
                    if not fut.done():
                        fut.set_result(None)
                self.metrics.entries_out += len(batch)
                self.metrics.batches += 1
                self._out_room.set()

    # ------------------------------------------------------------------ reading entries
    async def _read_loop(self) -> None:
        key = rs.stream_key(self.node)
        while True:
            try:
                resp = await self._reader.xread({key: self._last_id}, count=BATCH, block=1000)
            except (RedisError, OSError) as exc:
                self._failed("read", exc)
                await asyncio.sleep(RETRY_DELAY)
                continue
            for _stream, entries in resp or ():
                for eid, fields in entries:
                    self._last_id = eid
                    entry = rs.decode_entry(fields.get(b"d", b""))
                    if entry is None:
                        continue
                    try:
                        self._on_entry(entry)
                    except Exception:
                        log.exception("cluster: bad entry %r", entry[:3])
            # Keep the lanes of slow receivers bounded: read on once they drained.
            while sum(len(lane) for lane in self._lanes.values()) > MAX_QUEUED:
                await asyncio.sleep(0.05)

    def _on_entry(self, e: List[Any]) -> None:
        kind, origin, n = e[0], e[1], e[2]
        if n <= self._seen.get(origin, 0):
            return  # written again after a Redis error: already taken
        self._seen[origin] = n
        self.metrics.entries_in += 1
        f = e[3:]
        if kind == rs.RESULT:
            self._result(int(f[0]), int(f[1]))
        elif kind == rs.PEER:
            self._on_peer(*f)
        elif kind == rs.ROOM_MSG:
            self._on_room_message(f[0], f[1], f[2], f[3], origin)
        elif kind == rs.ROOM_ONE:
            self._on_room_one(*f)
        elif kind == rs.JOINED:
            self._on_joined(*f)
        elif kind == rs.LEFT:
            self._on_left(*f)
        elif kind == rs.KICK:
            app = self.hub.apps.get(f[0])
            if app is not None:
                self._kick(app, f[1], f[2])
        elif kind == rs.SESSION_RESULT:
            self._on_session_result(*f)
        elif kind == rs.MOVED:
            self._on_moved(*f)
        elif kind == rs.RELEASE:
            self._on_release(*f)
        elif kind == rs.RELEASED:
            self._on_released(*f)

    def _to_session(self, s: Session, job: Job) -> None:
        """Run ``job`` for local session ``s`` in arrival order, when it has room."""
        lane = self._lanes.get(s)
        if lane is None:
            if s._has_room() or s.closing:
                job(s)
                return
            lane = self._lanes[s] = deque()
            self._spawn(self._drain(s, lane))
        lane.append(job)

    async def _drain(self, s: Session, lane: Deque[Job]) -> None:
        try:
            while lane:
                await s.wait_for_room()
                lane.popleft()(s)
        finally:
            if self._lanes.get(s) is lane:
                del self._lanes[s]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def _on_peer(self, app_id: str, sender: str, to: str, reliable: bool, payload: p.Payload,
                 ref: Optional[int], deadline: float, hops: int, reply_to: str,
                 origin: Optional[List[Any]] = None) -> None:
        app = self.hub.apps.get(app_id)
        s = app.sessions.get(to) if app is not None else None
        if app is None or s is None or s.closing:
            held = self._arriving.get((app_id, to))
            if held is not None:  # being taken over here: delivered once it is
                held.append(("p", app_id, sender, to, reliable, payload, ref, deadline, hops,
                             reply_to, origin))
                return
            if app is not None and hops == 0:
                self._redirect(app_id, sender, to, reliable, payload, ref, deadline, reply_to,
                               origin)
            elif ref is not None:
                self.send_result(reply_to, ref, UserMessageSendResult.NO_RECEIVER, origin)
            return
        sessions = app.sessions

        def job(r: Session) -> None:
            if sessions.get(to) is not r:
                if ref is not None:
                    self.send_result(reply_to, ref, UserMessageSendResult.NO_RECEIVER, origin)
                return
            try:
                if not reliable:
                    _, frame = r.conn.deliver(p.DeliverKind.PEER, sender, None, payload,
                                              reliable=False)
                    r.push(frame)
                    return
                if ref is None:  # push API: reliable, nobody waits for the result
                    _, frame = r.conn.deliver(p.DeliverKind.PEER, sender, None, payload)
                    r.push(frame)
                    return
                left = deadline - time.time()
                if left <= 0:
                    self.send_result(reply_to, ref, UserMessageSendResult.TIMEOUT, origin)
                    return
                pending = RemotePending(self, reply_to, ref, r, deadline, origin)
                _, frame = r.conn.deliver(p.DeliverKind.PEER, sender, None, payload, tag=pending)
            except LocalProtocolError:
                if ref is not None:
                    self.send_result(reply_to, ref, UserMessageSendResult.NO_RECEIVER, origin)
                return
            pending.timer = asyncio.get_running_loop().call_later(
                left, pending.resolve, UserMessageSendResult.TIMEOUT)
            r.push(frame, pending)

        self._to_session(s, job)

    def _redirect(self, app_id: str, sender: str, to: str, reliable: bool, payload: p.Payload,
                  ref: Optional[int], deadline: float, reply_to: str,
                  origin: Optional[List[Any]]) -> None:
        """The receiver is not here (any more): send it on to where it is now, once. Messages
        for one receiver are sent on one after the other, in the order they came."""
        self._forward(app_id, to, ("p", sender, reliable, payload, ref, deadline, reply_to,
                                   origin))

    def _forward(self, app_id: str, to: str, entry: Tuple[Any, ...]) -> None:
        """Send ``entry`` (a peer message, "p", or a room message, "m") on to where ``to`` is
        now, after everything forwarded for ``to`` before."""
        key = (app_id, to)
        lane = self._redirects.get(key)
        if lane is not None:
            lane.append(entry)
            return
        self._redirects[key] = deque([entry])
        task = asyncio.get_running_loop().create_task(self._redirect_lane(key))
        self._routing.add(task)  # a node leaving waits for these (ClusterResume.settle_results)
        task.add_done_callback(self._routing.discard)

    async def _redirect_lane(self, key: Tuple[str, str]) -> None:
        app_id, to = key
        lane = self._redirects[key]
        try:
            while lane:
                node = await self._where_now(app_id, to)
                while lane:  # all that is queued now goes where it is now
                    entry = lane.popleft()
                    if entry[0] == "m":  # a room message: (m, room, sender, payload, origin)
                        if node is not None and node != entry[4]:  # (that node has it)
                            self._send(node, rs.ROOM_ONE, app_id, entry[1], entry[2],
                                       entry[3], to)
                        continue
                    _, sender, reliable, payload, ref, deadline, reply_to, origin = entry
                    if node is not None:
                        self.metrics.redirects += 1
                        self._send(node, rs.PEER, app_id, sender, to, reliable, payload, ref,
                                   deadline, 1, reply_to, origin)
                    elif ref is not None:
                        self.send_result(reply_to, ref, UserMessageSendResult.NO_RECEIVER,
                                         origin)
        finally:
            if self._redirects.get(key) is lane:
                del self._redirects[key]

    async def _where_now(self, app_id: str, uid: str) -> Optional[str]:
        """The other node ``uid`` is on now (None: nowhere else). A session of ``uid`` that
        was just handed over from this node (cluster resume) is waited for, briefly, until
        the node that takes it over has it."""
        give_up = time.monotonic() + self.limits.node_timeout + 1.0
        while True:
            try:
                node = await self.locate(app_id, uid, fresh=True)
            except (RedisError, OSError) as exc:
                self._failed("locate", exc)
                return None
            if node is not None and node != self.node:
                return node
            if (app_id, uid) not in self._in_transit or time.monotonic() > give_up:
                return None
            await asyncio.sleep(RETRY_DELAY)  # another node is taking it over: poll Redis

    def _rooms(self, app_id: str) -> Optional[Rooms]:
        app = self.hub.apps.get(app_id)
        return app.rooms if app is not None else None

    def _on_room_message(self, app_id: str, room_id: str, sender: str, payload: p.Payload,
                         origin: str = "") -> None:
        self._room_in_transit(app_id, room_id, sender, payload, origin)
        rooms = self._rooms(app_id)
        room = rooms.rooms.get(room_id) if rooms is not None else None
        if room is None:
            return
        job = self._room_delivery(room_id, sender, payload)
        n = 0
        for uid, m in list(room.members.items()):
            if uid != sender:
                self._to_session(m, job)
                n += 1
        assert rooms is not None
        rooms.metrics.room_deliveries += n

    @staticmethod
    def _room_delivery(room_id: str, sender: str, payload: p.Payload) -> Job:
        """The job that delivers a room message to one member here (encoded once for all)."""
        tail = p.encode_deliver_tail(p.DeliverKind.ROOM, sender, room_id, payload)

        def job(r: Session) -> None:
            if room_id not in r.rooms or r.closing or (r.journal is not None
                                                        and r.journal.release_to is not None):
                return  # (moving to another node: sent on by _room_in_transit)
            try:
                _, frame = r.conn.deliver_tail(tail)
            except LocalProtocolError:
                return
            r.push(frame)

        return job

    def _notify_room(self, app_id: str, room_id: str, kind: int, args: List[Any],
                     skip: str = "") -> None:
        rooms = self._rooms(app_id)
        room = rooms.rooms.get(room_id) if rooms is not None else None
        if room is None or room.quiet:
            return
        for uid, m in list(room.members.items()):
            if uid != skip:
                self._to_session(m, lambda r: Rooms._push_notice(r, kind, args))

    def _on_joined(self, app_id: str, room_id: str, uid: str, node: str, prev: str) -> None:
        cache = self._remote_members.get((app_id, room_id))
        if cache is None:
            return
        before = cache.get(uid)
        cache[uid] = node
        if before == node:
            return
        if before is not None:
            self._notify_room(app_id, room_id, p.NoticeKind.USER_LEFT,
                              [room_id, uid, int(UserOfflineReason.DROPPED)], skip=uid)
        self._notify_room(app_id, room_id, p.NoticeKind.USER_JOINED, [room_id, uid, 0], skip=uid)

    def _on_left(self, app_id: str, room_id: str, uid: str, node: str, reason: int) -> None:
        cache = self._remote_members.get((app_id, room_id))
        if cache is None or cache.get(uid) != node:
            return
        del cache[uid]
        self._notify_room(app_id, room_id, p.NoticeKind.USER_LEFT, [room_id, uid, reason],
                          skip=uid)

    # ------------------------------------------------------------------ invalidations
    async def _sub_loop(self) -> None:
        while True:
            pubsub = None
            try:
                pubsub = self._redis.pubsub()
                await pubsub.subscribe(rs.INV_CHANNEL)
                self._sub_ok = True
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        app_id, _, uid = rs.text(msg["data"]).partition(" ")
                        self._inv_gen += 1
                        self._where.pop((app_id, uid), None)
            except (RedisError, OSError) as exc:
                self._failed("subscription", exc)
            finally:
                self._sub_ok = False
                self._invalidate_all()
                if pubsub is not None:
                    try:
                        await pubsub.aclose()
                    except (RedisError, OSError):
                        pass
            await asyncio.sleep(RETRY_DELAY)
