"""Cluster resume, the node's side: journal writes, handing sessions over and taking them over.

With ``--limit cluster_resume=1`` (docs/deployment.md §3) a client whose node died, or whose
connection dropped and came back through another node, resumes its session there as it would
on one server: same session, sequences, rooms; unacknowledged frames sent again.

- **Writing**: sessions whose journal changed (:mod:`~rts_sync.server.journal`) are written by
  the node's stream writer, in the same Redis transaction as the stream entries to other nodes
  (one ``JOURNAL_SCRIPT`` call per session per batch); then their frames may go out.
- **Taking over** (a HELLO here asks for a session this node does not have): if its node is
  alive it is asked to hand the session over (``RELEASE``: it writes what it has, marks the
  session released, stops serving it and answers ``RELEASED``); if that node is dead this one
  waits until it is known dead (its heartbeat key expired). Then ``TAKEOVER_SCRIPT`` moves the
  session and its presence here atomically, the journal is read back, the rooms' memberships
  move (``MOVE_SCRIPT``; members elsewhere see nothing, or USER_JOINED if the dead node had
  been reaped meanwhile) and the resume goes on as on one node.
- **Results** of deliveries taken over go where their journal entry says: to the sender's node
  (its pending reference) or to the sender's session, wherever that is now.

Threading: everything runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

import cbor2
from redis.exceptions import RedisError

from .. import protocol as p
from ..enums import UserMessageSendResult
from . import redis_store as rs
from .journal import JournaledConnection, RestoredPending, SessionJournal, Snapshot
from .session import CIDS, Session

if TYPE_CHECKING:
    from .config import Limits
    from .hub import AppState, Hub

__all__ = ["ClusterResume"]

log = logging.getLogger(__name__)

#: Sessions written in one batch at most.
JOURNAL_BATCH = 1000


class ClusterResume:
    """Journal writes, hand-overs and takeovers of sessions (mixed into Cluster)."""

    if TYPE_CHECKING:
        hub: Hub
        limits: Limits
        node: str
        healthy: bool
        _redis: Any
        _out_wake: Optional[asyncio.Event]
        _dead: Set[str]
        _where: Dict[Tuple[str, str], str]
        _remote_members: Dict[Tuple[str, str], Dict[str, str]]

        def _failed(self, what: str, exc: BaseException) -> None: ...
        def _send(self, node: str, kind: str, *fields: Any) -> None: ...
        def _spawn(self, coro: Any) -> None: ...
        def send_result(self, node: str, ref: int, code: int) -> None: ...
        def _notify_room(self, app_id: str, room_id: str, kind: int, args: List[Any],
                         skip: str = "") -> None: ...

    def _init_resume(self) -> None:
        #: Cluster resume is on (``--limit cluster_resume=1``).
        self.resume = bool(self.limits.cluster_resume)
        self._jdirty: Dict[Session, None] = {}
        self._jscript: Any = None
        #: Takeovers waiting for a node to hand a session over: session id -> (node, future).
        self._release_waiters: Dict[str, Tuple[str, asyncio.Future[bool]]] = {}
        self._taking: Dict[str, asyncio.Future[None]] = {}

    # ------------------------------------------------------------------ writing
    def journal_dirty(self, session: Session) -> None:
        """``session``'s journal has something to write (SessionJournal.changed)."""
        self._jdirty[session] = None
        if self._out_wake is not None:
            self._out_wake.set()

    def enable_journal(self, session: Session) -> None:
        """A session logged in: journal it from now on (its first write is a checkpoint)."""
        if self.resume and isinstance(session.conn, JournaledConnection):
            session.conn.new = []
            session.journal = SessionJournal(session, self)
            session.journal.changed()

    def _take_journal(self) -> List[Snapshot]:
        snaps: List[Snapshot] = []
        timeout = self.limits.message_timeout
        while self._jdirty and len(snaps) < JOURNAL_BATCH:
            s = next(iter(self._jdirty))
            del self._jdirty[s]
            j = s.journal
            if j is None or s.closing:
                continue  # a closed session's keys are deleted (Cluster.logged_out)
            j.queued = False
            snaps.append(Snapshot(j, timeout))
        return snaps

    async def _journal_commands(self, pipe: Any, snaps: List[Snapshot]) -> None:
        if self._jscript is None:
            self._jscript = self._redis.register_script(rs.JOURNAL_SCRIPT)
        ns = rs.node_sessions_key(self.node)
        for snap in snaps:
            sid = snap.journal.session.session_id or ""
            await self._jscript(keys=[rs.session_key(sid), rs.session_stream_key(sid), ns],
                                args=snap.args(self.node, rs.SESSION_TTL_MS), client=pipe)

    def _journal_done(self, snaps: List[Snapshot], results: List[Any]) -> None:
        """The batch is in Redis: release the sessions' frames (or deal with the refusals)."""
        for snap, res in zip(snaps, results):
            j = snap.journal
            s = j.session
            code = int(res)
            if code == 1:
                if snap.mark > j.durable_in:
                    j.durable_in = snap.mark
                if snap.upto > j.released and snap.epoch == j.epoch:
                    j.released = snap.upto
                if snap.release:
                    self._handed_over(s, snap.out)
                else:
                    s.wake_writer()
            elif code == 0:  # its keys are gone (Redis restarted empty): write them all again
                j.checkpoint = True
                j.changed()
            else:  # another node serves the session now
                log.info("session of %s was taken over by another node", s.uid)
                self._handed_over(s, snap.out, notify=False)

    def _journal_failed(self, snaps: List[Snapshot]) -> None:
        for snap in snaps:
            snap.failed()
            snap.journal.changed()

    # ------------------------------------------------------------------ handing over
    def _on_release(self, sid: str, requester: str) -> None:
        """Another node has a client resuming ``sid``: hand the session over, if it is here."""
        for app in self.hub.apps.values():
            s = app.by_session_id.get(sid)
            if s is not None and s.journal is not None and not s.closing:
                log.info("connection %d (uid %s): handing the session over to node %s",
                         s.cid, s.uid, requester)
                s.journal.release_to = requester
                s.abort()  # its client is resuming elsewhere: this connection is stale
                s.journal.changed()
                return
        self._send(requester, rs.RELEASED, sid)

    def _handed_over(self, s: Session, upto: int, notify: bool = True) -> None:
        """The session is in Redis, marked released (or another node took it): stop serving it
        here, without any of the effects of its end."""
        j = s.journal
        assert j is not None
        to = j.release_to
        j.moved = True
        app = self.hub.apps.get(s.app_id or "")
        uid = s.uid or ""
        if app is not None:
            if app.sessions.get(uid) is s:
                del app.sessions[uid]
            if app.by_session_id.get(s.session_id or "") is s:
                del app.by_session_id[s.session_id or ""]
            for room_id in list(s.rooms):
                app.rooms.drop(s, room_id)
                key = (app.app_id, room_id)
                if room_id in app.rooms.rooms and to:  # local members still send it messages
                    self._remote_members.setdefault(key, {})[uid] = to
                elif room_id not in app.rooms.rooms:
                    self._remote_members.pop(key, None)
            self._where.pop((app.app_id, uid), None)
        s.retire(upto)
        if notify and to:
            self._send(to, rs.RELEASED, s.session_id or "")

    def _on_released(self, sid: str) -> None:
        waiter = self._release_waiters.get(sid)
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(True)

    def _nodes_dead(self, nodes: Set[str]) -> None:
        """Nodes found dead: takeovers waiting for them go on."""
        for node, fut in list(self._release_waiters.values()):
            if node in nodes and not fut.done():
                fut.set_result(True)

    # ------------------------------------------------------------------ taking over
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

    async def _wait_released(self, sid: str, node: str) -> bool:
        """Ask ``node`` to hand ``sid`` over; True once it did or is known dead."""
        if node in self._dead or not await self._redis.exists(rs.node_key(node)):
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._release_waiters[sid] = (node, fut)
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
        if node and not await self._wait_released(sid, node):
            log.info("session %s...: node %s neither handed it over nor died in time", sid[:6],
                     node)
            return
        uid = meta[1]
        res = await r.eval(rs.TAKEOVER_SCRIPT, 6, rs.session_key(sid),
                           rs.presence_key(app.app_id, uid), rs.node_users_key(self.node),
                           rs.node_sessions_key(self.node), rs.node_sessions_key(node or self.node),
                           rs.session_stream_key(sid), self.node, node, sid,
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
        entries = await r.xrange(rs.session_stream_key(sid))
        s = self._restore(app, sid, meta, in_seq, out_seq, entries)
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
        for eid, fields in entries:
            data, reply = cbor2.loads(fields[b"d"])
            tag = RestoredPending(self, reply, s) if reply else None
            if tag is not None:
                tags.append(tag)
            kept.append((int(rs.text(eid).partition("-")[0]), data, tag))
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
            left = float(tag.reply[-1]) - now
            if left <= 0:
                tag.resolve(UserMessageSendResult.TIMEOUT)
            else:
                tag.timer = loop.call_later(left, tag.resolve, UserMessageSendResult.TIMEOUT)
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
        self._remote_members[(app.app_id, room_id)] = remote
        for n in set(remote.values()):
            self._send(n, rs.MOVED, app.app_id, room_id, uid, self.node, prev)
        if not prev:  # it had been reaped meanwhile: the others saw it leave
            self._notify_room(app.app_id, room_id, p.NoticeKind.USER_JOINED, [room_id, uid, 0],
                              skip=uid)

    def _on_moved(self, app_id: str, room_id: str, uid: str, node: str, prev: str) -> None:
        """A member of a room with members here moved to ``node`` with its session."""
        cache = self._remote_members.get((app_id, room_id))
        if cache is None:
            return
        before = cache.get(uid)
        cache[uid] = node
        if before is None and not prev:
            self._notify_room(app_id, room_id, p.NoticeKind.USER_JOINED, [room_id, uid, 0],
                              skip=uid)

    # ------------------------------------------------------------------ results
    def route_reply(self, reply: List[Any], code: int) -> None:
        """The result of a delivery taken over (or of a SEND of a session that moved): to the
        node waiting for it, or to the sender's session wherever it is now."""
        if reply[0] == "n":
            self.send_result(str(reply[1]), int(reply[2]), int(code))
            return
        app_id, sid, seq = str(reply[1]), str(reply[2]), int(reply[3])
        app = self.hub.apps.get(app_id)
        s = app.by_session_id.get(sid) if app is not None else None
        if s is not None:
            s.post_result(code, seq)
        else:
            self._spawn(self._route_to_session(app_id, sid, seq, int(code)))

    async def _route_to_session(self, app_id: str, sid: str, seq: int, code: int) -> None:
        try:
            node = await self._redis.hget(rs.session_key(sid), "node")
        except (RedisError, OSError) as exc:
            self._failed("result routing", exc)
            return
        where = rs.text(node) if node is not None else ""
        if where and where != self.node:
            self._send(where, rs.SESSION_RESULT, app_id, sid, seq, code)

    def _on_session_result(self, app_id: str, sid: str, seq: int, code: int) -> None:
        app = self.hub.apps.get(app_id)
        s = app.by_session_id.get(sid) if app is not None else None
        if s is not None:
            s.post_result(code, seq)

    # ------------------------------------------------------------------ lifecycle hooks
    def _checkpoint_all(self) -> None:
        """Redis lost (or may have lost) the journals: write every session's state again."""
        for app in self.hub.apps.values():
            for s in app.sessions.values():
                if s.journal is not None and not s.closing:
                    s.journal.checkpoint = True
                    s.journal.changed()

    async def _expire_sessions(self, node: str) -> None:
        """Reaping a dead node: its sessions stay resumable for the resume window."""
        r = self._redis
        sids = [rs.text(x) for x in await r.smembers(rs.node_sessions_key(node))]
        ms = int(max(self.limits.resume_window, 1.0) * 1000)
        for i in range(0, len(sids), 500):
            pipe = r.pipeline(transaction=False)
            for sid in sids[i:i + 500]:
                pipe.eval(rs.EXPIRE_SESSION_SCRIPT, 2, rs.session_key(sid),
                          rs.session_stream_key(sid), node, ms)
            await pipe.execute()
        await r.delete(rs.node_sessions_key(node))
