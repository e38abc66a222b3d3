"""Rooms of one app: membership, presence notices and broadcast fan-out.

A broadcast is encoded once (``frames.encode_deliver_tail``) and written to each member with only
its own sequence number added. Fan-out and presence notices are paced member by member
(``Session.wait_for_room``): a fast sender waits for slow members, and a member that stays stuck
for the grace period is disconnected as a slow consumer, so it can stall neither the room nor
memory. Above ``room_notify_limit`` members, per-user join/leave notices stop and every member is
warned once with ROOM_STATE -2013 (reference §3.6).

Threading: everything here runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from .. import protocol as p
from ..enums import RoomErrorCode, RoomMessageSendResult, RoomWarningCode, UserOfflineReason
from ..errors import LocalProtocolError
from .config import Limits
from .metrics import Metrics
from .session import Session, TokenBucket

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Room", "Rooms"]

log = logging.getLogger(__name__)


class Room:
    """One room: its members by uid, in joining order."""

    __slots__ = ("bucket", "members", "quiet", "room_id")

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.members: Dict[str, Session] = {}
        #: Over the notify limit: no per-user join/leave notices.
        self.quiet = False
        self.bucket: Optional[TokenBucket] = None


class Rooms:
    """The room registry of one app (see the module docstring)."""

    def __init__(self, app_id: str, limits: Limits, metrics: Metrics) -> None:
        self.app_id = app_id
        self.limits = limits
        self.metrics = metrics
        self.rooms: Dict[str, Room] = {}
        self._tasks: Set[asyncio.Task[None]] = set()
        #: Cluster mode: told of local leaves, fans room messages out to other nodes.
        self.cluster: Optional[Cluster] = None

    @property
    def members(self) -> int:
        return sum(len(r.members) for r in self.rooms.values())

    # ------------------------------------------------------------------ membership
    async def join(self, session: Session, room_id: Any, join_type: int) -> Tuple[int, Any]:
        """JOIN_ROOM: returns the RESPONSE's (code, result); result lists the other members."""
        uid = session.uid
        assert uid is not None
        if not p.is_valid_id(room_id):
            return RoomErrorCode.ROOM_ID_ILLEGAL, {"reason": "invalid room id"}
        room = self.rooms.get(room_id)
        if room is not None and room.members.get(uid) is session:
            return RoomErrorCode.SUCCESS, {"members": self._listing(room, session)}
        if len(session.rooms) >= self.limits.max_rooms_per_session:
            return RoomErrorCode.JOIN_ROOM, {"reason": "too many rooms for this session"}
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
        old = room.members.get(uid)
        if old is not None:  # the same uid in this room on another connection: replace it
            self._remove(room, old)
            self._spawn(self._notify([old], p.NoticeKind.ROOM_STATE,
                                     [room_id, RoomErrorCode.DUPLICATE_LOGIN, ""]))
        room.members[uid] = session
        session.rooms.add(room_id)
        log.debug("%s joined room %s/%s (%d members)", uid, self.app_id, room_id,
                  len(room.members))
        others = [m for m in room.members.values() if m is not session]
        if len(room.members) > self.limits.room_notify_limit:
            if not room.quiet:
                room.quiet = True
                await self._notify(list(room.members.values()), p.NoticeKind.ROOM_STATE,
                                   [room_id, RoomWarningCode.USER_NOTIFY_STOP, ""])
        elif old is None:
            await self._notify(others, p.NoticeKind.USER_JOINED, [room_id, uid, 0])
        return RoomErrorCode.SUCCESS, {"members": self._listing(room, session), "join_type": join_type}

    def _listing(self, room: Room, session: Session) -> List[str]:
        """The other members' uids, unless the room is quiet; bounded to fit in one frame."""
        if room.quiet:
            return []
        budget = self.limits.max_frame - p.FRAME_OVERHEAD
        out: List[str] = []
        for uid, member in room.members.items():
            if member is not session:
                budget -= len(uid) + 3
                if budget < 0:
                    break
                out.append(uid)
        return out

    async def leave(self, session: Session, room_id: Any) -> int:
        """LEAVE_ROOM: 0 whether or not the session was in the room (leaving is idempotent)."""
        room = self.rooms.get(room_id) if isinstance(room_id, str) else None
        if room is not None and room.members.get(session.uid or "") is session:
            others = self._remove(room, session)
            if self.cluster is not None:
                self.cluster.left(self.app_id, room_id, session.uid or "", UserOfflineReason.QUIT)
            if others and not room.quiet:
                await self._notify(others, p.NoticeKind.USER_LEFT,
                                   [room_id, session.uid, UserOfflineReason.QUIT])
        return 0

    def leave_all(self, session: Session, reason: int, kicked: bool = False) -> None:
        """The session is going (closed, logged out or replaced): out of every room, now.

        ``kicked``: it was replaced by a login of the same uid elsewhere; it is told -1004 for
        each room (before it is closed) and the others see it leave.
        """
        for room_id in list(session.rooms):
            room = self.rooms.get(room_id)
            if room is None:
                continue
            if kicked:
                self._push_notice(session, p.NoticeKind.ROOM_STATE,
                                  [room_id, RoomErrorCode.DUPLICATE_LOGIN, ""])
            others = self._remove(room, session)
            if self.cluster is not None:
                self.cluster.left(self.app_id, room_id, session.uid or "", reason)
            if others and not room.quiet:
                self._spawn(self._notify(others, p.NoticeKind.USER_LEFT,
                                         [room_id, session.uid, reason]))
        session.rooms.clear()

    def drop(self, session: Session, room_id: str) -> None:
        """Cluster resume: the session was handed over to another node; take it out of the
        room here without notices (it is still a member, served elsewhere)."""
        room = self.rooms.get(room_id)
        if room is not None:
            self._remove(room, session)
        session.rooms.discard(room_id)

    def restore(self, session: Session, room_id: str) -> None:
        """Cluster resume: a session taken over from another node is a member here now,
        without notices (the members saw nothing happen)."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(room_id)
        room.members[session.uid or ""] = session
        session.rooms.add(room_id)
        if len(room.members) > self.limits.room_notify_limit:
            room.quiet = True

    def _remove(self, room: Room, session: Session) -> List[Session]:
        """Take ``session`` out of ``room``; returns the remaining members."""
        uid = session.uid or ""
        if room.members.get(uid) is session:
            del room.members[uid]
        session.rooms.discard(room.room_id)
        if not room.members:
            del self.rooms[room.room_id]
            return []
        if room.quiet and len(room.members) <= self.limits.room_notify_limit:
            room.quiet = False
        return list(room.members.values())

    # ------------------------------------------------------------------ messages
    def allow(self, room_id: str, now: float) -> bool:
        """The room-wide rate limit (``room_total_qps``; 0 = off)."""
        rate = self.limits.room_total_qps
        room = self.rooms.get(room_id)
        if rate <= 0 or room is None:
            return True
        if room.bucket is None:
            room.bucket = TokenBucket(rate, now)
        return room.bucket.take(now)

    async def broadcast(self, sender: Optional[Session], sender_uid: str, room_id: str,
                        payload: p.Payload) -> int:
        """Deliver to every member but ``sender``: RoomMessageSendResult (200 when fanned out)."""
        room = self.rooms.get(room_id)
        if room is None or (sender is not None and room.members.get(sender_uid) is not sender):
            return RoomMessageSendResult.NOT_JOIN
        tail = p.encode_deliver_tail(p.DeliverKind.ROOM, sender_uid, room_id, payload)
        n = 0
        for uid, member in list(room.members.items()):
            if member is sender or (member.journal is not None
                                    and member.journal.release_to is not None):
                continue  # (moving to another node: the cluster sends it on)
            if not await member.wait_for_room() or room.members.get(uid) is not member:
                continue
            try:
                _, frame = member.conn.deliver_tail(tail)
            except LocalProtocolError:
                continue  # its protocol connection closed meanwhile
            member.push(frame)
            n += 1
        if self.cluster is not None and not await self.cluster.broadcast(
                self.app_id, room_id, sender_uid, payload):
            return RoomMessageSendResult.TIMEOUT  # not known to have reached other nodes
        self.metrics.count_message("room", self.app_id, sender.business_id if sender else None)
        self.metrics.room_deliveries += n
        return RoomMessageSendResult.SUCCESS

    # ------------------------------------------------------------------ notices
    async def _notify(self, members: List[Session], kind: int, args: List[Any]) -> None:
        for m in members:
            if await m.wait_for_room():
                self._push_notice(m, kind, args)

    @staticmethod
    def _push_notice(member: Session, kind: int, args: List[Any]) -> None:
        if member.closing:
            return
        try:
            _, frame = member.conn.notice(kind, args)
        except LocalProtocolError:
            return
        member.push(frame)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
