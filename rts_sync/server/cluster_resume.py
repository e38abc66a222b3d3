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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from redis.exceptions import NoScriptError, RedisError

from .. import protocol as p
from . import redis_store as rs
from .journal import JournaledConnection, SessionJournal, Snapshot
from .session import Session

if TYPE_CHECKING:
    from .config import Limits
    from .hub import Hub

__all__ = ["ClusterResume"]

log = logging.getLogger(__name__)

#: Sessions written in one batch at most.
JOURNAL_BATCH = 1000


class ClusterResume:
    """Journal writes, hand-overs and takeovers of sessions (mixed into Cluster)."""

    if TYPE_CHECKING:
        hub: Hub
        limits: Limits
        _pending: Dict[int, Tuple[Session, int, asyncio.TimerHandle, str, Optional[str]]]
        _flights: Dict[Tuple[Session, str], List[Any]]
        _fences: Dict[Tuple[Session, str], asyncio.Event]
        node: str
        healthy: bool
        _redis: Any
        _out_wake: Optional[asyncio.Event]
        _dead: Set[str]
        _where: Dict[Tuple[str, str], str]
        _remote_members: Dict[Tuple[str, str], Dict[str, str]]
        _in_transit: Set[Tuple[str, str]]

        def _failed(self, what: str, exc: BaseException) -> None: ...
        def _send(self, node: str, kind: str, *fields: Any) -> None: ...
        def _spawn(self, coro: Any) -> None: ...
        def send_result(self, node: str, ref: int, code: int,
                        origin: Optional[List[Any]] = None) -> None: ...
        def _notify_room(self, app_id: str, room_id: str, kind: int, args: List[Any],
                         skip: str = "") -> None: ...
        def _on_peer(self, *args: Any) -> None: ...
        def _forward(self, app_id: str, to: str, entry: Tuple[Any, ...]) -> None: ...
        def _to_session(self, s: Session, job: Any) -> None: ...
        @staticmethod
        def _room_delivery(room_id: str, sender: str, payload: p.Payload) -> Any: ...

    def _init_resume(self) -> None:
        #: Cluster resume is on (``--limit cluster_resume=1``).
        self.resume = bool(self.limits.cluster_resume)
        self._jdirty: Dict[Session, None] = {}
        #: SHA1 of JOURNAL_SCRIPT in Redis once loaded (None: load it before the next write).
        self._jsha: Optional[str] = None
        #: Takeovers waiting for a node to hand a session over: session id -> (node, future).
        self._release_waiters: Dict[str, Tuple[str, asyncio.Future[bool]]] = {}
        self._taking: Dict[str, asyncio.Future[None]] = {}
        #: Uids being taken over here: messages for them, held until they are.
        self._arriving: Dict[Tuple[str, str], List[Tuple[Any, ...]]] = {}
        #: Rooms of those uids whose room messages from here are held for them too.
        self._arriving_rooms: Dict[Tuple[str, str], Set[str]] = {}
        #: Room members whose sessions are leaving this node: (app, room) -> {uid: node
        #: taking it, or "" not known yet}; room messages for them are sent on.
        self._transit_rooms: Dict[Tuple[str, str], Dict[str, str]] = {}
        #: Shutting down: the sessions being handed over, and set once none is left.
        self._handing_over: Set[Session] = set()
        self._all_handed_over: Optional[asyncio.Event] = None
        #: Results and messages being sent on to sessions that moved (waited for when leaving).
        self._routing: Set[asyncio.Task[None]] = set()
        #: Shutting down: set once no reliable message of this node waits for its result.
        self._pending_drained: Optional[asyncio.Event] = None

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
            if j is None or j.moved or (s.closing and j.held is None):
                continue  # a closed session's keys are deleted (Cluster.logged_out)
            app = self.hub.apps.get(s.app_id or "")
            if app is None or app.by_session_id.get(s.session_id or "") is not s:
                continue  # ended while it was being handed over (a login elsewhere)
            j.queued = False
            if j.release_to is not None and not j.busy:
                j.freeze()  # (when busy: written as usual, frozen once the frame is handled)
                # messages for it that come now wait for the node taking it over
                self._in_transit.add((app.app_id, s.uid or ""))
            snaps.append(Snapshot(j, timeout))
        return snaps

    async def _journal_commands(self, pipe: Any, snaps: List[Snapshot]) -> None:
        # EVALSHA of a script loaded once (again after a NOSCRIPT: Redis restarted), not a
        # registered Script: with those, redis-py asks SCRIPT EXISTS before every pipeline,
        # a second Redis round trip in front of every frame.
        if self._jsha is None:
            self._jsha = rs.text(await self._redis.script_load(rs.JOURNAL_SCRIPT))
        ns = rs.node_sessions_key(self.node)
        for snap in snaps:
            sid = snap.journal.session.session_id or ""
            # a released session stays resumable for the resume window, unless taken over
            ttl = int(self.limits.resume_window * 1000) if snap.release else rs.SESSION_TTL_MS
            pipe.evalsha(self._jsha, 3, rs.session_key(sid), rs.session_stream_key(sid), ns,
                         *snap.args(self.node, max(ttl, 1000)))

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

    def _journal_failed(self, snaps: List[Snapshot], exc: BaseException) -> None:
        if isinstance(exc, NoScriptError) or "NOSCRIPT" in str(exc):
            self._jsha = None  # Redis lost its scripts (restarted): load it again
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
                self._releasing(s, requester)
                s.abort()  # its client is resuming elsewhere: this connection is stale
                return
        self._send(requester, rs.RELEASED, sid)

    def _releasing(self, s: Session, to: str) -> None:
        """Start handing ``s`` over to node ``to`` ("": the one its client comes back to).
        Its room messages go there from now on (the taker holds its own for it)."""
        j = s.journal
        assert j is not None
        j.release_to = to
        j.changed()
        key = (s.app_id or "", s.uid or "")
        for room_id in s.rooms:
            self._transit_rooms.setdefault((key[0], room_id), {})[key[1]] = to
        # Bounded even if the hand-over never completes (the session ends another way first,
        # or Redis never takes its last write): longer than any hand-over takes.
        asyncio.get_running_loop().call_later(
            self.limits.resume_window + self.limits.node_timeout + 2.0, self._transit_over, key)

    def _room_in_transit(self, app_id: str, room_id: str, sender: str, payload: p.Payload,
                         origin: str) -> None:
        """A room message from ``origin`` reached this node: send it on to the room's members
        whose sessions are leaving (except to a taker it came from: that one holds its own)."""
        moving = self._transit_rooms.get((app_id, room_id))
        if not moving:
            return
        for uid, to in list(moving.items()):
            if uid == sender:
                continue
            if to:
                if origin != to:
                    self._send(to, rs.ROOM_ONE, app_id, room_id, sender, payload, uid)
            else:  # where it goes is not known yet: after the taker has it
                self._forward(app_id, uid, ("m", room_id, sender, payload, ""))

    def _hold_for_arriving(self, app_id: str, room_id: str, sender: str,
                           payload: p.Payload) -> None:
        """A room message from here, for members being taken over here (see _take_over)."""
        for uid in self._arriving_rooms.get((app_id, room_id), ()):
            held = self._arriving.get((app_id, uid))
            if held is not None and uid != sender:
                held.append(("m", room_id, sender, payload))

    def _on_room_one(self, app_id: str, room_id: str, sender: str, payload: p.Payload,
                     uid: str) -> None:
        """A room message for one member that moved here (or is being taken over here)."""
        held = self._arriving.get((app_id, uid))
        if held is not None:
            held.append(("m", room_id, sender, payload))
            return
        app = self.hub.apps.get(app_id)
        s = app.sessions.get(uid) if app is not None else None
        if s is None or room_id not in s.rooms or s.closing:
            return
        self._to_session(s, self._room_delivery(room_id, sender, payload))

    def _handed_over(self, s: Session, upto: int, notify: bool = True) -> None:
        """The session is in Redis, marked released (or another node took it): stop serving it
        here, without any of the effects of its end."""
        j = s.journal
        assert j is not None
        j.freeze()
        to = j.release_to
        app = self.hub.apps.get(s.app_id or "")
        uid = s.uid or ""
        if app is not None:
            if app.sessions.get(uid) is s:
                del app.sessions[uid]
            if app.by_session_id.get(s.session_id or "") is s:
                del app.by_session_id[s.session_id or ""]
            for room_id in list(s.rooms):
                app.rooms.drop(s, room_id)
                if room_id not in app.rooms.rooms:
                    self._remote_members.pop((app.app_id, room_id), None)
            self._where.pop((app.app_id, uid), None)
        s.retire(upto)
        j.handed_over()
        if app is not None:  # messages still coming here for it go on to the taker, a while
            key = (app.app_id, uid)
            self._in_transit.add(key)
            asyncio.get_running_loop().call_later(
                self.limits.node_timeout + 2.0, self._transit_over, key)
        waiting = self._handing_over
        if s in waiting:
            waiting.discard(s)
            if not waiting and self._all_handed_over is not None:
                self._all_handed_over.set()
        if notify and to:
            self._send(to, rs.RELEASED, s.session_id or "")

    def _transit_over(self, key: Tuple[str, str]) -> None:
        """Long enough after a hand-over: messages for the uid are no longer sent on (the
        other nodes know where it is)."""
        self._in_transit.discard(key)
        app_id, uid = key
        for room_key in [k for k, v in self._transit_rooms.items()
                         if k[0] == app_id and uid in v]:
            moving = self._transit_rooms[room_key]
            del moving[uid]
            if not moving:
                del self._transit_rooms[room_key]

    def _unfence(self, node: str) -> None:
        """``node`` died: messages sent there are either lost with it or journaled (sent again,
        in their order, before anything newer, by the node taking the receiver over), so
        newer messages to the same receivers need not wait for their results any more. The
        results themselves may still come (from that node): they keep their timers."""
        for ref, e in list(self._pending.items()):
            if e[3] == node and e[4] is not None:
                self._pending[ref] = (e[0], e[1], e[2], e[3], None)
                key = (e[0], e[4])
                flight = self._flights.get(key)
                if flight is not None and flight[0] == node:
                    del self._flights[key]
                    ev = self._fences.pop(key, None)
                    if ev is not None:
                        ev.set()

    async def hand_over_all(self, timeout: float) -> int:
        """Shutting down: release every journaled session (written to Redis, marked released,
        its connection dropped), so that its client resumes it on another node at once
        instead of logging in again. Returns how many were handed over within ``timeout``;
        the others are closed as usual afterwards."""
        if not self.resume or not self.healthy:
            return 0
        sessions = [s for app in self.hub.apps.values() for s in app.sessions.values()
                    if s.journal is not None and not s.closing]
        self._handing_over = set(sessions)
        self._all_handed_over = asyncio.Event()
        for s in sessions:
            self._releasing(s, "")  # to whichever node the client comes back through
        if sessions:
            try:
                await asyncio.wait_for(self._all_handed_over.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        moved = sum(1 for s in sessions if s.journal is not None and s.journal.moved)
        log.info("handed %d of %d sessions over for a resume on another node", moved,
                 len(sessions))
        return moved

    async def settle_results(self, timeout: float) -> None:
        """Shutting down after a hand-over: the results of messages the moved sessions sent
        from here, and messages for them, still come here; keep passing them on (bounded)
        before leaving."""
        if not self.resume:
            return
        if self._pending:
            self._pending_drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._pending_drained.wait(), timeout)
            except asyncio.TimeoutError:
                log.info("leaving with %d results not come back", len(self._pending))
        if self._routing:
            await asyncio.wait(set(self._routing), timeout=timeout)

    def _on_released(self, sid: str) -> None:
        waiter = self._release_waiters.get(sid)
        if waiter is not None and not waiter[1].done():
            waiter[1].set_result(True)

    def _nodes_dead(self, nodes: Set[str]) -> None:
        """Nodes found dead: takeovers waiting for them go on."""
        for node, fut in list(self._release_waiters.values()):
            if node in nodes and not fut.done():
                fut.set_result(True)

    # ------------------------------------------------------------------ results
    def route_reply(self, reply: List[Any], code: int) -> None:
        """The result of a delivery taken over (or of a SEND of a session that moved): to the
        node waiting for it, or to the sender's session wherever it is now."""
        if reply[0] == "n":  # ["n", node, ref, deadline, origin or None]
            origin = reply[4] if len(reply) > 4 else None
            self.send_result(str(reply[1]), int(reply[2]), int(code), origin)
            return
        app_id, sid, seq = str(reply[1]), str(reply[2]), int(reply[3])
        app = self.hub.apps.get(app_id)
        s = app.by_session_id.get(sid) if app is not None else None
        if s is not None:
            s.post_result(code, seq)
        else:
            task = asyncio.get_running_loop().create_task(
                self._route_to_session(app_id, sid, seq, int(code)))
            self._routing.add(task)
            task.add_done_callback(self._routing.discard)

    async def _route_to_session(self, app_id: str, sid: str, seq: int, code: int) -> None:
        try:
            node = await self._redis.eval(rs.ROUTE_SCRIPT, 2, rs.session_key(sid),
                                          rs.owed_key(sid), seq, code,
                                          int(max(self.limits.resume_window, 1.0) * 1000))
        except (RedisError, OSError) as exc:
            self._failed("result routing", exc)
            return
        where = rs.text(node)
        if where == self.node:  # being taken over here right now
            busy = self._taking.get(sid)
            if busy is not None:
                await asyncio.shield(busy)
            self._on_session_result(app_id, sid, seq, code)
        elif where and where != "*":
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
