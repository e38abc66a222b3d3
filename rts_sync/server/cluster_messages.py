"""Cluster mode: the peer and room messages a node sends, and its room memberships.

:class:`ClusterMessages` is mixed into :class:`~rts_sync.server.cluster.Cluster` (see that
module's docstring for cluster mode as a whole). It holds what the
:class:`~rts_sync.server.hub.Hub`, the :class:`~rts_sync.server.rooms.Rooms` and the push API
call when a receiver or room member is on another node: peer SENDs (and the results of reliable
ones coming back), pushes, room joins and leaves (registered in Redis and told to the nodes of
the other members) and room messages (one stream entry per other node with members). The
entries themselves are written by :class:`~rts_sync.server.cluster_inbox.ClusterInbox`.

Threading: everything runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Iterator, List, Optional, Set, Tuple

from redis.exceptions import RedisError

from .. import protocol as p
from ..enums import MessageConfig, RoomErrorCode, UserMessageSendResult
from . import redis_store as rs
from .session import Session

if TYPE_CHECKING:
    from .cluster_metrics import ClusterMetrics
    from .config import Limits
    from .hub import Hub

__all__ = ["ClusterMessages"]

log = logging.getLogger(__name__)

#: A sender gives up on a remote reliable message this long after its message timeout when no
#: result came back (the receiver's node died with it).
RESULT_GRACE = 2.0


class ClusterMessages:
    """Peer and room messages to other nodes, room memberships (mixed into Cluster)."""

    if TYPE_CHECKING:
        hub: Hub
        limits: Limits
        node: str
        metrics: ClusterMetrics
        _redis: Any
        _dead: Set[str]
        _refs: Iterator[int]
        _pending: Dict[int, Tuple[Session, int, asyncio.TimerHandle, str, Optional[str]]]
        _flights: Dict[Tuple[Session, str], List[Any]]
        _fences: Dict[Tuple[Session, str], asyncio.Event]
        _outstanding: Counter[Session]
        _waiters: Dict[Session, asyncio.Event]
        _pending_drained: Optional[asyncio.Event]
        _remote_members: Dict[Tuple[str, str], Dict[str, str]]

        def _failed(self, what: str, exc: BaseException) -> None: ...
        def _op(self, fn: Callable[[], Awaitable[Any]],
                wait: bool) -> Optional[asyncio.Future[Any]]: ...
        async def locate(self, app_id: str, uid: str, fresh: bool = False) -> Optional[str]: ...
        def _send(self, node: str, kind: str, *fields: Any) -> None: ...
        async def _wait_room(self) -> None: ...
        async def written(self, timeout: float) -> bool: ...
        _arriving: Dict[Tuple[str, str], List[Tuple[Any, ...]]]
        resume: bool

        def _room_in_transit(self, app_id: str, room_id: str, sender: str,
                             payload: p.Payload, origin: str) -> None: ...
        def _hold_for_arriving(self, app_id: str, room_id: str, sender: str,
                               payload: p.Payload) -> None: ...

        def _on_peer(self, *args: Any) -> None: ...
        def route_reply(self, reply: List[Any], code: int) -> None: ...

    # ------------------------------------------------------------------ peer messages
    async def send_peer(self, sender: Session, seq: int, target: str, config: int,
                        payload: p.Payload) -> Optional[int]:
        """A peer SEND whose receiver is not on this node (see Hub.send_peer)."""
        app_id = sender.app_id or ""
        try:
            node = await self.locate(app_id, target)
        except (RedisError, OSError) as exc:
            self._failed("locate", exc)
            return UserMessageSendResult.TIMEOUT
        arriving = node == self.node and (app_id, target) in self._arriving
        if node is None or (node == self.node and not arriving):
            return UserMessageSendResult.NO_RECEIVER
        # (arriving: being taken over here; sent as if from another node, held until it is)
        await self._wait_room()
        if sender.closing or sender.uid is None:
            return None
        reliable = config == MessageConfig.RELIABLE_ORDERED
        self.hub.metrics.count_message("peer", sender.app_id, sender.business_id)
        self.metrics.remote_peer += 1
        if not reliable:
            self._send(node, rs.PEER, app_id, sender.uid, target, False, payload, None, 0.0, 0,
                       self.node)
            return UserMessageSendResult.SUCCESS
        cap = self.limits.send_queue_frames
        while self._outstanding[sender] >= cap and not sender.closing:
            ev = self._waiters.setdefault(sender, asyncio.Event())
            ev.clear()
            await ev.wait()
        await self.fence(sender, target, node)
        if sender.closing:
            return None
        ref = next(self._refs)
        timeout = self.limits.message_timeout
        timer = asyncio.get_running_loop().call_later(timeout + RESULT_GRACE, self._result, ref,
                                                      int(UserMessageSendResult.TIMEOUT))
        self._pending[ref] = (sender, seq, timer, node, target)
        self._outstanding[sender] += 1
        flight = self._flights.get((sender, target))
        if flight is None:
            self._flights[(sender, target)] = [node, 1]
        else:
            flight[1] += 1
        # with its sender's session and seq: a result can find the session if it moves
        fields = (app_id, sender.uid, target, True, payload, ref, time.time() + timeout, 0,
                  self.node, [app_id, sender.session_id, seq])
        if node == self.node:
            self._on_peer(*fields)
        else:
            self._send(node, rs.PEER, *fields)
        return None

    async def fence(self, sender: Session, target: str, node: str) -> None:
        """Keep one sender's reliable messages to one uid in order when the uid moves to
        another node (cluster resume, or a login there): while messages sent to where it was
        are unresolved (they may still reach it, redirected, later than a message sent now),
        a message to ``node`` waits for them."""
        key = (sender, target)
        while not sender.closing:
            flight = self._flights.get(key)
            if flight is None or flight[0] == node:
                return
            ev = self._fences.get(key)
            if ev is None:
                ev = self._fences[key] = asyncio.Event()
            await ev.wait()

    def _result(self, ref: int, code: int) -> None:
        entry = self._pending.pop(ref, None)
        if entry is None:
            return
        sender, seq, timer, _, target = entry
        timer.cancel()
        key = (sender, target or "")
        flight = self._flights.get(key) if target is not None else None
        if flight is not None:
            flight[1] -= 1
            if flight[1] <= 0:
                del self._flights[key]
                ev = self._fences.pop(key, None)
                if ev is not None:
                    ev.set()
        if not self._pending and self._pending_drained is not None:
            self._pending_drained.set()
        n = self._outstanding[sender] - 1
        if n <= 0:
            del self._outstanding[sender]
        else:
            self._outstanding[sender] = n
        waiter = self._waiters.pop(sender, None)
        if waiter is not None:
            waiter.set()
        sender.post_result(code, seq)

    def send_result(self, node: str, ref: int, code: int,
                    origin: Optional[List[Any]] = None) -> None:
        """The result of a reliable message from ``node`` (its reference ``ref``); when that
        node is dead and ``origin`` says which session sent it, to that session instead,
        wherever it is now (cluster resume)."""
        if node == self.node:
            self._result(ref, code)
        elif origin is not None and node in self._dead and origin[1]:
            self.route_reply(["s", *origin], code)
        else:
            self._send(node, rs.RESULT, ref, int(code))

    async def push_unicast(self, app_id: str, to: str, sender: str,
                           payload: p.Payload) -> Optional[bool]:
        """Push API SendUnicast to a uid on another node; False if it is not logged in, None
        if Redis did not take the message within ``message_timeout`` (the caller must not
        answer success before: were this node to die first, it would be lost)."""
        try:
            node = await self.locate(app_id, to)
        except (RedisError, OSError) as exc:
            self._failed("locate", exc)
            return None
        if node is None or node == self.node:
            return False
        await self._wait_room()
        self._send(node, rs.PEER, app_id, sender, to, True, payload, None, 0.0, 0, self.node)
        return True if await self.written(self.limits.message_timeout) else None

    # ------------------------------------------------------------------ rooms
    async def joined(self, session: Session, room_id: str, result: Any) -> Tuple[int, Any]:
        """After a local JOIN_ROOM succeeded: register it, list the other nodes' members too,
        and tell their nodes."""
        app_id, uid = session.app_id or "", session.uid or ""
        key = (app_id, room_id)
        membership = "%s %s %s" % (app_id, room_id, uid)

        async def join() -> Any:
            return await self._redis.eval(rs.JOIN_SCRIPT, 2, rs.room_key(app_id, room_id),
                                          rs.node_rooms_key(self.node), uid, self.node, membership)

        fut = self._op(join, wait=True)
        assert fut is not None
        try:
            res = await fut
        except Exception as exc:
            log.info("connection %d: join of %s failed: cluster store unavailable (%r)",
                     session.cid, room_id, exc)
            await self.hub.apps[app_id].rooms.leave(session, room_id)
            return RoomErrorCode.JOIN_ROOM, {"reason": "cluster store (Redis) unavailable"}
        old = rs.text(res[0])
        members = rs.pairs(res[1])
        remote = {u: n for u, n in members.items() if n != self.node and u != uid}
        # merged, not replaced: a member missing from Redis but still cached here has left
        # and its LEFT entry is on its way (it must find the member to tell the others)
        self._remote_members.setdefault(key, {}).update(remote)
        for n in set(remote.values()):
            self._send(n, rs.JOINED, app_id, room_id, uid, self.node, old)
        if isinstance(result, dict) and isinstance(result.get("members"), list):
            listing: List[str] = result["members"]
            budget = self.limits.max_frame - p.FRAME_OVERHEAD - sum(len(u) + 3 for u in listing)
            for u in remote:
                budget -= len(u) + 3
                if budget < 0:
                    break
                listing.append(u)
        return RoomErrorCode.SUCCESS, result

    def left(self, app_id: str, room_id: str, uid: str, reason: int) -> None:
        """A local member left a room (Rooms calls this): unregister it and tell the nodes of
        the remaining members."""
        key = (app_id, room_id)
        if room_id not in self.hub.apps[app_id].rooms.rooms:
            self._remote_members.pop(key, None)
        membership = "%s %s %s" % (app_id, room_id, uid)

        async def leave() -> None:
            res = await self._redis.eval(rs.LEAVE_SCRIPT, 2, rs.room_key(app_id, room_id),
                                         rs.node_rooms_key(self.node), uid, self.node, membership)
            if res and int(res[0]) == 1:
                for n in set(rs.pairs(res[1]).values()):
                    if n != self.node:
                        self._send(n, rs.LEFT, app_id, room_id, uid, self.node, int(reason))

        self._op(leave, wait=False)

    async def broadcast(self, app_id: str, room_id: str, sender_uid: str,
                        payload: p.Payload) -> bool:
        """After the local fan-out of a room message: one entry per other node with members.
        Returns once those entries are in Redis (the sender's 200 must not come before: were
        this node to die first, they would be lost); False if Redis did not take them within
        ``message_timeout``."""
        if self.resume:  # members moving from or to this node (cluster resume)
            self._room_in_transit(app_id, room_id, sender_uid, payload, self.node)
            self._hold_for_arriving(app_id, room_id, sender_uid, payload)
        nodes = set(self._remote_members.get((app_id, room_id), {}).values())
        if not nodes:
            return True
        await self._wait_room()
        for n in nodes:
            self._send(n, rs.ROOM_MSG, app_id, room_id, sender_uid, payload)
        self.metrics.remote_room += 1
        return await self.written(self.limits.message_timeout)

    async def push_broadcast(self, app_id: str, room_id: str, sender: str,
                             payload: p.Payload) -> Optional[bool]:
        """Push API SendBroadcast to a room without members on this node; False if it has
        none anywhere, None if Redis did not take the entries in time (as push_unicast)."""
        try:
            members = rs.pairs(await self._redis.hgetall(rs.room_key(app_id, room_id)))
        except (RedisError, OSError) as exc:
            self._failed("room lookup", exc)
            return None
        nodes = set(members.values()) - {self.node} - self._dead
        if not nodes:
            return False
        await self._wait_room()
        for n in nodes:
            self._send(n, rs.ROOM_MSG, app_id, room_id, sender, payload)
        return True if await self.written(self.limits.message_timeout) else None
