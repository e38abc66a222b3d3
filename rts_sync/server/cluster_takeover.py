"""Cluster resume, taking a session over: a HELLO on this node asks to resume a session that
another node serves (or served and died). A mixin of :class:`~rts_sync.server.cluster.Cluster`
(see :mod:`~rts_sync.server.cluster_resume` for cluster resume as a whole).

The node that serves the session is asked to hand it over (``RELEASE``; it answers
``RELEASED``), or, if it is dead, this node waits until it is known dead. Then
``TAKEOVER_SCRIPT`` moves the session and its presence here atomically (with the results owed
to it meanwhile), the journal is read back into a detached local session, peer messages that
came for it meanwhile are delivered (in their order), its rooms' memberships move
(``MOVE_SCRIPT``: members elsewhere see nothing, or USER_JOINED if the dead node had been
reaped meanwhile) and the resume goes on as on one node.

Threading: everything runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Set, Tuple

import cbor2
from redis.exceptions import RedisError

from .. import protocol as p
from ..enums import UserMessageSendResult
from . import redis_store as rs
from .journal import JournaledConnection, RestoredPending, SessionJournal
from .session import CIDS, Session

if TYPE_CHECKING:
    from .config import Limits
    from .hub import AppState, Hub

__all__ = ["ClusterTakeover"]

log = logging.getLogger(__name__)


class ClusterTakeover:
    """Taking sessions over from other nodes (mixed into Cluster)."""

    if TYPE_CHECKING:
        hub: Hub
        limits: Limits
        node: str
        healthy: bool
        resume: bool
        _redis: Any
        _dead: Set[str]
        _remote_members: Dict[Tuple[str, str], Dict[str, str]]
        _release_waiters: Dict[str, Tuple[str, asyncio.Future[bool]]]
        _taking: Dict[str, asyncio.Future[None]]
        _arriving: Dict[Tuple[str, str], List[Tuple[Any, ...]]]
        _arriving_rooms: Dict[Tuple[str, str], Set[str]]
        _transit_rooms: Dict[Tuple[str, str], Dict[str, str]]

        def _failed(self, what: str, exc: BaseException) -> None: ...
        def _send(self, node: str, kind: str, *fields: Any) -> None: ...
        def _notify_room(self, app_id: str, room_id: str, kind: int, args: List[Any],
                         skip: str = "") -> None: ...
        def _on_peer(self, *args: Any) -> None: ...
        def _on_room_one(self, app_id: str, room_id: str, sender: str, payload: p.Payload,
                         uid: str) -> None: ...
        def journal_dirty(self, session: Session) -> None: ...
        def route_reply(self, reply: List[Any], code: int) -> None: ...

    async def take_over(self, app: AppState, sid: str, client_seq: Any) -> None:
        """A HELLO here asks to resume ``sid``, which is not on this node: if another node
        serves (or served) it, take it over, so that the resume finds it here. Returns without
        it when it cannot be had (the resume is then refused as expired)."""
        if not self.resume or not self.healthy or not isinstance(client_seq, int):
            return
        busy = self._taking.get(sid)
        if busy is not None:
            await asyncio.shield(busy)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._taking[sid] = fut
        try:
            await self._take_over(app, sid, client_seq)
        except (RedisError, OSError) as exc:
            self._failed("takeover", exc)
        except Exception:
            log.exception("taking over session failed")
        finally:
            del self._taking[sid]
            fut.set_result(None)

    async def _wait_released(self, sid: str, node: str, hold: Callable[[], None]) -> bool:
        """Ask ``node`` to hand ``sid`` over; True once it did or is known dead. ``hold`` is
        called when ``node`` stops delivering this node's room messages to it: with the
        RELEASE (which it handles after every earlier entry from here), or now if it is dead."""
        if node in self._dead or not await self._redis.exists(rs.node_key(node)):
            hold()
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._release_waiters[sid] = (node, fut)
        hold()
        self._send(node, rs.RELEASE, sid, self.node)
        bound = self.limits.node_timeout + 2 * self.limits.node_heartbeat + 1.0
        try:
            return await asyncio.wait_for(asyncio.shield(fut), bound)
        except asyncio.TimeoutError:
            return False
        finally:
            self._release_waiters.pop(sid, None)

    async def _take_over(self, app: AppState, sid: str, client_seq: int) -> None:
        r = self._redis
        raw = await r.hgetall(rs.session_key(sid))
        if not raw or b"meta" not in raw:
            return
        meta = cbor2.loads(raw[b"meta"])
        if meta[0] != app.app_id:
            return
        node = rs.text(raw.get(b"node", b""))
        if node == self.node:
            return
        uid = meta[1]
        key = (app.app_id, uid)
        # Messages for it that come meanwhile wait here (peer messages and room messages from
        # other nodes, and, when ``node`` will not send them on, this node's room messages).
        self._arriving[key] = []
        rooms = [(app.app_id, room_id) for room_id in meta[4]] if node else []

        def hold_room_messages() -> None:  # from the moment ``node`` stops delivering them
            for room_key in rooms:
                self._arriving_rooms.setdefault(room_key, set()).add(uid)

        try:
            if node and not await self._wait_released(sid, node, hold_room_messages):
                log.info("session %s...: node %s neither handed it over nor died in time",
                         sid[:6], node)
                return
            await self._switch_over(app, sid, uid, node, client_seq)
        finally:
            for room_key in rooms:
                holding = self._arriving_rooms.get(room_key)
                if holding is not None:
                    holding.discard(uid)
                    if not holding:
                        del self._arriving_rooms[room_key]
            self._replay_held(app.app_id, uid)

    async def _switch_over(self, app: AppState, sid: str, uid: str, node: str,
                           client_seq: int) -> None:
        """Move the session here in Redis, then restore it from its journal."""
        r = self._redis
        res = await r.eval(rs.TAKEOVER_SCRIPT, 7, rs.session_key(sid),
                           rs.presence_key(app.app_id, uid), rs.node_users_key(self.node),
                           rs.node_sessions_key(self.node), rs.node_sessions_key(node or self.node),
                           rs.session_stream_key(sid), rs.owed_key(sid), self.node, node, sid,
                           "%s %s" % (app.app_id, uid), rs.SESSION_TTL_MS)
        if int(res[0]) == 3:
            app.kicked[sid] = time.monotonic() + self.limits.resume_window + 60
            return
        if int(res[0]) != 1:
            return
        h = {rs.text(res[1][i]): res[1][i + 1] for i in range(0, len(res[1]) - 1, 2)}
        in_seq, out_seq = int(h["in"]), int(h["out"])
        meta = cbor2.loads(h["meta"])
        if client_seq > out_seq:  # the client has frames this state has not: cannot be
            log.warning("session %s...: client at seq %d, journal only at %d: not resumed",
                        sid[:6], client_seq, out_seq)
            await r.eval(rs.CLOSE_SESSION_SCRIPT, 3, rs.session_key(sid),
                         rs.session_stream_key(sid), rs.node_sessions_key(self.node),
                         self.node, sid)
            return
        entries = await r.zrange(rs.session_stream_key(sid), 0, -1, withscores=True)
        try:
            s = self._restore(app, sid, meta, in_seq, out_seq, entries)
        except Exception:  # a journal we cannot read: the client logs in again
            log.exception("session %s...: cannot restore its journal", sid[:6])
            await r.eval(rs.CLOSE_SESSION_SCRIPT, 3, rs.session_key(sid),
                         rs.session_stream_key(sid), rs.node_sessions_key(self.node),
                         self.node, sid)
            return
        for owed in res[2]:  # results that came while the session was in transit
            seq, _, code = rs.text(owed).partition(" ")
            s.post_result(int(code), int(seq))
        self._replay_held(app.app_id, uid)
        await r.publish(rs.INV_CHANNEL, "%s %s" % (app.app_id, uid))
        for room_id in meta[4]:
            await self._move_member(s, app, room_id, node)
        log.info("session of %s taken over from node %s (%d frames to send again)", uid,
                 node or "(released)", len(entries))

    def _restore(self, app: AppState, sid: str, meta: List[Any], in_seq: int, out_seq: int,
                 entries: List[Any]) -> Session:
        """A detached local Session with the journaled state, registered here."""
        _, uid, business_id, params, _ = meta
        hub = self.hub
        s = Session(next(CIDS), None, None, self.limits, hub.metrics, "", hub.on_session_closed,
                    journaled=True)
        s.app_id, s.uid, s.session_id = app.app_id, uid, sid
        s.business_id = business_id
        s.server_params = (params[0], params[1]) if params else None
        loop = asyncio.get_running_loop()
        kept: List[Tuple[int, bytes, Any]] = []
        tags: List[RestoredPending] = []
        for blob, score in entries:  # (member, seq), by seq
            data, reply = cbor2.loads(blob)
            tag = RestoredPending(self, reply, s) if reply else None
            if tag is not None:
                tags.append(tag)
            kept.append((int(score), data, tag))
        conn = s.conn
        assert isinstance(conn, JournaledConnection)
        conn.restore(in_seq, out_seq, kept)
        conn.new = []
        j = s.journal = SessionJournal(s, self)
        j.checkpoint = j.meta_dirty = False
        j.durable_in = in_seq
        now = time.time()
        for tag in tags:
            s._inflight += 1
            left = float(tag.reply[3 if tag.reply[0] == "n" else 4]) - now  # the deadline
            if left <= 0:
                tag.resolve(UserMessageSendResult.TIMEOUT)
            else:
                tag.timer = loop.call_later(left, tag.resolve, UserMessageSendResult.TIMEOUT)
        for room_id in meta[4]:  # a member here from now on (Redis follows: _move_member)
            app.rooms.restore(s, room_id)
            self._remote_members.get((app.app_id, room_id), {}).pop(uid, None)
        old = app.sessions.get(uid)
        if old is not None and old is not s and not old.closing:
            old.close(p.CloseCode.DUPLICATE_LOGIN, "replaced by a resumed session")
        app.sessions[uid] = s
        app.by_session_id[sid] = s
        s.detach()
        return s

    async def _move_member(self, s: Session, app: AppState, room_id: str, old: str) -> None:
        uid = s.uid or ""
        membership = "%s %s %s" % (app.app_id, room_id, uid)
        res = await self._redis.eval(rs.MOVE_SCRIPT, 3, rs.room_key(app.app_id, room_id),
                                     rs.node_rooms_key(self.node),
                                     rs.node_rooms_key(old or self.node), uid, self.node,
                                     membership)
        prev = rs.text(res[0])
        members = rs.pairs(res[1])
        app.rooms.restore(s, room_id)
        remote = {u: n for u, n in members.items() if n != self.node and u != uid}
        # merged, as in ClusterMessages.joined: a LEFT on its way must find its member
        self._remote_members.setdefault((app.app_id, room_id), {}).update(remote)
        for n in set(remote.values()):
            self._send(n, rs.MOVED, app.app_id, room_id, uid, self.node, prev)
        if not prev:  # it had been reaped meanwhile: the others saw it leave
            self._notify_room(app.app_id, room_id, p.NoticeKind.USER_JOINED, [room_id, uid, 0],
                              skip=uid)

    def _replay_held(self, app_id: str, uid: str) -> None:
        """What came for ``uid`` while it was being taken over, in the order it came."""
        for entry in self._arriving.pop((app_id, uid), []):
            if entry[0] == "p":
                self._on_peer(*entry[1:])
            else:  # ("m", room, sender, payload)
                self._on_room_one(app_id, entry[1], entry[2], entry[3], uid)

    def _on_moved(self, app_id: str, room_id: str, uid: str, node: str, prev: str) -> None:
        """A member of a room with members here moved to ``node`` with its session."""
        moving = self._transit_rooms.get((app_id, room_id))
        if moving is not None and moving.pop(uid, None) is not None and not moving:
            del self._transit_rooms[(app_id, room_id)]  # it is there: no more sending on
        cache = self._remote_members.get((app_id, room_id))
        if cache is None:
            return
        before = cache.get(uid)
        cache[uid] = node
        if before is None and not prev:
            self._notify_room(app_id, room_id, p.NoticeKind.USER_JOINED, [room_id, uid, 0],
                              skip=uid)
