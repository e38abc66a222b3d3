"""Cluster mode: several rts-server processes that behave as one, through a shared Redis.

Off unless the server is started with ``--redis redis://HOST:PORT/DB``; then the
:class:`~rts_sync.server.hub.Hub` consults this only where its own registry has no answer (a
uid or room member that is not on this node), so local traffic takes the single-node path.

- **Presence**: a login writes ``rts:u:<app>:<uid> = "<node> <session>"`` (getting the previous
  value: a session on another node is kicked there, and remembered as kicked so that it cannot
  resume anywhere). Nodes cache where uids are; every change is published on ``rts:inv`` and
  drops the cached entry everywhere (no caching while that subscription is down).
- **Routing**: each node reads its own inbox stream ``rts:s:<node>``; one writer task per node
  appends to the others' inboxes in order (pipelined batches), so messages from one sender to
  one receiver keep their order. A reliable peer message becomes SUCCESS only when the
  receiver's SDK acknowledged it on its node, which sends the result back the same way.
- **Rooms**: ``rts:r:<app>:<room>`` maps members to nodes; each node with members in a room
  caches the other nodes' members (kept current by join/leave entries), so a room message
  costs one stream entry per other node with members, never a Redis read.
- **Liveness**: every node renews ``rts:node:<node>`` (TTL ``node_timeout``) every
  ``node_heartbeat``; a node that finds another's key gone reaps it (under a lock): deletes its
  presence and memberships and tells the room members' nodes, whose members see USER_LEFT
  (DROPPED). A node whose own key was gone (Redis restarted empty, or it stalled) registers its
  users and memberships again.
- **Redis unavailable**: the node reports unhealthy (``/healthz`` 503), refuses logins with
  -1003 (SERVER_ERROR), keeps serving its local sessions, keeps what it must send in a bounded
  queue (senders are paced when it is full) and retries; it is healthy again by itself once a
  heartbeat succeeds.

This module holds :class:`Cluster`: its lifecycle, health, the node heartbeat and the reaping
of dead nodes, the queue of registry operations, and presence (login, logout, locating a uid,
kicks). ``Cluster`` mixes in :class:`~rts_sync.server.cluster_messages.ClusterMessages` (the
peer and room messages this node sends, its room memberships) and
:class:`~rts_sync.server.cluster_inbox.ClusterInbox` (the per-node stream writer and reader,
the handling of inbound entries, the invalidation subscription).

Threading: everything runs on the server's event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Deque, Dict, List, Optional, Set, Tuple

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import RedisError
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("cluster mode (--redis) needs the redis package: "
                      "pip install 'rts_sync[cluster]'") from _exc

from .. import protocol as p
from ..enums import LoginErrorCode, LogoutReason, UserMessageSendResult, UserOfflineReason, UserOnlineStatus
from ..errors import LocalProtocolError
from . import redis_store as rs
from .cluster_inbox import RETRY_DELAY, ClusterInbox, Job, RemotePending
from .cluster_messages import ClusterMessages
from .cluster_metrics import ClusterMetrics
from .cluster_resume import ClusterResume
from .cluster_takeover import ClusterTakeover
from .session import CLOSE_TIMEOUT, Session

if TYPE_CHECKING:
    from .hub import AppState, Hub

__all__ = ["Cluster", "RemotePending"]

log = logging.getLogger(__name__)

#: Redis connections of one node's pool at most (commands beyond wait for a free one).
MAX_REDIS_CONNECTIONS = 64


class Cluster(ClusterMessages, ClusterInbox, ClusterResume, ClusterTakeover):
    """One node's side of cluster mode (see the module docstring)."""

    def __init__(self, hub: Hub, url: str) -> None:
        self.hub = hub
        self.url = url
        self.limits = hub.limits
        self.node = secrets.token_hex(6)
        self.metrics = ClusterMetrics()
        self.healthy = False
        self._registered = False
        #: Local state may be missing in Redis (a write failed): register it all again.
        self._dirty = False
        self._redis: Any = None
        self._reader: Any = None
        self._tasks: List[asyncio.Task[Any]] = []
        self._spawned: Set[asyncio.Task[Any]] = set()
        # outgoing entries: (target node, encoded), in order; numbered per target
        self._out: Deque[Tuple[str, bytes]] = deque()
        self._out_wake: Optional[asyncio.Event] = None
        self._out_room: Optional[asyncio.Event] = None
        self._numbers: Dict[str, int] = {}
        # entries ever queued / written to Redis, and who waits for a count to be written
        self._appended = 0
        self._written = 0
        self._written_waiters: Deque[Tuple[int, asyncio.Future[None]]] = deque()
        # incoming
        self._last_id: Any = b"0-0"
        self._seen: Dict[str, int] = {}
        self._lanes: Dict[Session, Deque[Job]] = {}
        # registry operations (presence, memberships), one at a time in order
        self._ops: Deque[Tuple[Callable[[], Awaitable[Any]], Optional[asyncio.Future[Any]]]] = deque()
        self._ops_wake: Optional[asyncio.Event] = None
        # reliable messages sent to other nodes: ref -> (sender, seq, safety timer)
        self._refs = itertools.count(1)
        #: Reliable messages sent to other nodes: ref -> (sender, seq, safety timer, node,
        #: receiver uid while it counts in ``_flights``).
        self._pending: Dict[int, Tuple[Session, int, asyncio.TimerHandle, str,
                                       Optional[str]]] = {}
        #: Unresolved reliable messages per (sender, receiver uid): [node, count] (see fence).
        self._flights: Dict[Tuple[Session, str], List[Any]] = {}
        self._fences: Dict[Tuple[Session, str], asyncio.Event] = {}
        self._outstanding: Counter[Session] = Counter()
        self._waiters: Dict[Session, asyncio.Event] = {}
        # caches
        self._where: Dict[Tuple[str, str], str] = {}
        self._inv_gen = 0
        self._sub_ok = False
        self._dead: Set[str] = set()
        self._live: Set[str] = set()
        self._remote_members: Dict[Tuple[str, str], Dict[str, str]] = {}
        #: Peer messages for uids no longer here, being sent on in order (per uid).
        self._redirects: Dict[Tuple[str, str], Deque[Tuple[Any, ...]]] = {}
        #: Uids whose session this node handed over, until the taker has it (cluster resume).
        self._in_transit: Set[Tuple[str, str]] = set()
        for app in hub.apps.values():
            app.rooms.cluster = self
        self._init_resume()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, app: Any = None) -> None:
        """Connect and start the loops; a Redis that is down now only makes the node unhealthy."""
        # One immediate retry on a fresh connection when a pooled one turns out to be closed (a
        # Redis restart leaves every idle connection dead). ``from_url`` does not pass the
        # client's default retry policy on to its pool, so without this a stale connection
        # fails the command. Only ConnectionError: a timed-out command may have been applied.
        #
        # A blocking pool: a burst of commands (hundreds of lookups at once) waits for a free
        # connection instead of failing; redis-py 8's default pool refuses a 101st connection
        # with MaxConnectionsError, which would make the node unhealthy.
        opts: Dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_keepalive": True,
                                "retry": Retry(NoBackoff(), 1,
                                               supported_errors=(RedisConnectionError,)),
                                "max_connections": MAX_REDIS_CONNECTIONS, "timeout": 5.0}
        pool = aioredis.BlockingConnectionPool.from_url
        self._redis = aioredis.Redis(connection_pool=pool(self.url, socket_timeout=5.0, **opts))
        self._reader = aioredis.Redis(connection_pool=pool(self.url, socket_timeout=10.0,
                                                           **opts))
        self._out_wake, self._out_room, self._ops_wake = (asyncio.Event(), asyncio.Event(),
                                                          asyncio.Event())
        try:
            await asyncio.wait_for(self._beat(), 3.0)
            self._set_healthy()
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._failed("startup", exc)
        loop = asyncio.get_running_loop()
        for coro in (self._heartbeat_loop(), self._read_loop(), self._write_loop(),
                     self._ops_loop(), self._sub_loop()):
            self._tasks.append(loop.create_task(coro))
        log.info("cluster node %s (redis %s): %s", self.node, _safe_url(self.url),
                 "healthy" if self.healthy else "waiting for Redis")

    async def close(self, app: Any = None) -> None:
        """Flush what is queued (briefly), leave the cluster, stop the loops."""
        if self.healthy:
            await self.settle_results(CLOSE_TIMEOUT)
        await self._flush(2.0)
        if self._redis is not None and self.healthy:
            try:  # whatever the closed sessions left behind; the rooms' nodes are told
                await asyncio.wait_for(self._reap(self.node, force=True), 3.0)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.info("leaving the cluster: %r", exc)
            await self._flush(1.0)
        for t in self._tasks + list(self._spawned):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._spawned, return_exceptions=True)
        if self._redis is not None and self.healthy:
            try:
                pipe = self._redis.pipeline(transaction=False)
                pipe.delete(rs.node_key(self.node), rs.stream_key(self.node))
                pipe.srem(rs.NODES, self.node)
                await asyncio.wait_for(pipe.execute(), 2.0)
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                log.info("leaving the cluster: %r", exc)
        for client in (self._redis, self._reader):
            if client is not None:
                try:
                    await client.aclose(close_connection_pool=True)
                except (RedisError, OSError):
                    pass

    async def _flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (self._out or self._ops) and self.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def stats(self) -> Dict[str, Any]:
        return {"node": self.node, "redis": "ok" if self.healthy else "unavailable",
                "nodes": len(self._live) + 1, "queued": len(self._out)}

    def render_metrics(self) -> str:
        return self.metrics.render(self.node, self.healthy, len(self._live) + 1, len(self._out),
                                   len(self._pending))

    # ------------------------------------------------------------------ health
    def _failed(self, what: str, exc: BaseException) -> None:
        self.metrics.redis_errors += 1
        if self.healthy:
            log.warning("cluster: Redis unavailable (%s: %r): refusing logins until it is back",
                        what, exc)
        self.healthy = False

    def _set_healthy(self) -> None:
        if not self.healthy:
            log.info("cluster node %s: Redis available", self.node)
        self.healthy = True

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.node_heartbeat if self.healthy else RETRY_DELAY)
            try:
                await asyncio.wait_for(self._beat(), max(self.limits.node_timeout, 1.0))
                self._set_healthy()
            except (RedisError, OSError, asyncio.TimeoutError) as exc:
                self._failed("heartbeat", exc)
            except Exception:  # a bug: log it, keep beating
                log.exception("cluster heartbeat failed")

    async def _beat(self) -> None:
        r = self._redis
        ttl = int(self.limits.node_timeout * 1000)
        prev = await r.set(rs.node_key(self.node), str(int(time.time() * 1000)), px=ttl, get=True)
        if prev is None or self._dirty:
            if self._registered or self._dirty:
                log.info("cluster node %s: registering local state again (Redis restarted or "
                         "this node was presumed dead)", self.node)
            await self._resync()
        self._registered = True
        pipe = r.pipeline(transaction=False)
        pipe.sadd(rs.NODES, self.node)
        pipe.smembers(rs.NODES)
        if self._last_id != b"0-0":
            pipe.xtrim(rs.stream_key(self.node), minid=self._last_id, approximate=True)
        res = await pipe.execute()
        others = sorted(rs.text(n) for n in res[1] if rs.text(n) != self.node)
        if others:
            pipe = r.pipeline(transaction=False)
            for n in others:
                pipe.exists(rs.node_key(n))
            alive = await pipe.execute()
        else:
            alive = []
        live = {n for n, a in zip(others, alive) if a}
        # dead: its key expired, or another node reaped it since the last beat
        newly_dead = (self._live | set(others)) - live - self._dead
        if newly_dead:
            self._nodes_dead(newly_dead)
        for n in newly_dead:
            self._dead.add(n)
            self._forget_node(n)
            if self.resume:  # its sessions resume elsewhere and their ACKs come from there
                self._unfence(n)
            else:  # its receivers' ACKs cannot come any more: TIMEOUT now, not in a while
                for ref in [r for r, e in self._pending.items() if e[3] == n]:
                    self._result(ref, int(UserMessageSendResult.TIMEOUT))
        self._live = live
        self._dead -= live
        for n in others:
            if n not in live:
                await self._reap(n)

    async def _resync(self) -> None:
        """Write every local session and membership to Redis (not replacing newer ones)."""
        self._dirty = False
        r = self._redis
        pipe = r.pipeline(transaction=False)
        count = 0
        for app in self.hub.apps.values():
            for uid, s in app.sessions.items():
                if s.session_id is None:
                    continue
                pipe.set(rs.presence_key(app.app_id, uid), "%s %s" % (self.node, s.session_id),
                         nx=True)
                pipe.sadd(rs.node_users_key(self.node), "%s %s" % (app.app_id, uid))
                count += 1
            for room_id, room in app.rooms.rooms.items():
                for uid in room.members:
                    pipe.hsetnx(rs.room_key(app.app_id, room_id), uid, self.node)
                    pipe.sadd(rs.node_rooms_key(self.node), "%s %s %s" % (app.app_id, room_id, uid))
        if not await r.exists(rs.stream_key(self.node)):
            self._last_id = b"0-0"  # a new inbox: anything in it is new
        await pipe.execute()
        self._invalidate_all()
        if self.resume:
            self._checkpoint_all()
        if count:
            log.info("cluster node %s: %d sessions registered", self.node, count)

    def _invalidate_all(self) -> None:
        self._inv_gen += 1
        self._where.clear()

    def _forget_node(self, node: str) -> None:
        for k in [k for k, v in self._where.items() if v == node]:
            del self._where[k]

    async def _reap(self, node: str, force: bool = False) -> None:
        """Remove a dead node's presence and memberships (whichever node gets the lock)."""
        r = self._redis
        if not force and not await r.set(rs.reap_key(node), self.node, nx=True, px=30_000):
            return
        users = [rs.text(u) for u in await r.smembers(rs.node_users_key(node))]
        members = [rs.text(m) for m in await r.smembers(rs.node_rooms_key(node))]
        for i in range(0, len(users), 500):
            pipe = r.pipeline(transaction=False)
            for u in users[i:i + 500]:
                app_id, _, uid = u.partition(" ")
                pipe.eval(rs.PRESENCE_CAD_NODE, 1, rs.presence_key(app_id, uid), node)
                pipe.publish(rs.INV_CHANNEL, u)
            await pipe.execute()
        for m in members:
            parts = m.split(" ")
            if len(parts) == 3:
                res = await r.eval(rs.LEAVE_SCRIPT, 2, rs.room_key(parts[0], parts[1]),
                                   rs.node_rooms_key(node), parts[2], node, m)
                if res and int(res[0]) == 1:
                    for n in set(rs.pairs(res[1]).values()):
                        self._send(n, rs.LEFT, parts[0], parts[1], parts[2], node,
                                   int(UserOfflineReason.DROPPED))
        if self.resume and not force:
            await self._expire_sessions(node)
        pipe = r.pipeline(transaction=False)
        pipe.delete(rs.node_users_key(node), rs.node_rooms_key(node), rs.stream_key(node))
        pipe.srem(rs.NODES, node)
        await pipe.execute()
        if not force:
            self.metrics.nodes_reaped += 1
            log.info("cluster: node %s is dead: removed %d sessions and %d room memberships",
                     node, len(users), len(members))

    # ------------------------------------------------------------------ registry operations
    def _op(self, fn: Callable[[], Awaitable[Any]], wait: bool) -> Optional[asyncio.Future[Any]]:
        """Run ``fn`` after every registry operation queued before it (login, logout, join,
        leave of this node keep their order in Redis). Returns its future when ``wait``."""
        fut: Optional[asyncio.Future[Any]] = (asyncio.get_running_loop().create_future()
                                              if wait else None)
        self._ops.append((fn, fut))
        assert self._ops_wake is not None
        self._ops_wake.set()
        return fut

    async def settle(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until the registry operations queued so far are done."""
        async def nothing() -> None:
            return None

        fut = self._op(nothing, wait=True)
        assert fut is not None
        try:
            await asyncio.wait_for(fut, timeout)
        except Exception:  # Redis down: the answer cannot wait for it
            pass

    async def _ops_loop(self) -> None:
        assert self._ops_wake is not None
        while True:
            await self._ops_wake.wait()
            self._ops_wake.clear()
            while self._ops:
                fn, fut = self._ops.popleft()
                try:
                    result = await fn()
                except (RedisError, OSError) as exc:
                    self._failed("registry", exc)
                    self._dirty = True  # registered again once Redis answers
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                except Exception as exc:
                    log.exception("cluster registry operation failed")
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                else:
                    if fut is not None and not fut.done():
                        fut.set_result(result)

    # ------------------------------------------------------------------ presence
    async def login(self, session: Session, args: Tuple[Any, ...]) -> Tuple[int, Any]:
        """LOGIN in cluster mode: refused with SERVER_ERROR while Redis is unavailable; else the
        local login, then the cluster-wide registration (kicking a session on another node)."""
        if not self.healthy:
            self.hub.metrics.logins["server_error"] += 1
            return LoginErrorCode.SERVER_ERROR, {"reason": "cluster store (Redis) unavailable"}
        code, result = self.hub.login(session, args)
        if code != LoginErrorCode.SUCCESS:
            return code, result
        app_id, uid, sid = session.app_id or "", session.uid or "", session.session_id or ""
        value = "%s %s" % (self.node, sid)
        keep = int(self.limits.resume_window + 60)

        async def register() -> Optional[str]:
            r = self._redis
            pipe = r.pipeline(transaction=False)
            pipe.set(rs.presence_key(app_id, uid), value, get=True)
            pipe.sadd(rs.node_users_key(self.node), "%s %s" % (app_id, uid))
            pipe.publish(rs.INV_CHANNEL, "%s %s" % (app_id, uid))
            old = (await pipe.execute())[0]
            if old is None:
                return None
            old_node, _, old_sid = rs.text(old).partition(" ")
            if old_sid and old_sid != sid:
                await r.set(rs.kicked_key(old_sid), "1", ex=keep)
                if old_node != self.node:
                    self._send(old_node, rs.KICK, app_id, uid, old_sid)
            return old_node

        fut = self._op(register, wait=True)
        assert fut is not None
        try:
            await fut
        except Exception as exc:
            log.info("connection %d: login of %s refused: cluster store unavailable (%r)",
                     session.cid, uid, exc)
            self.hub._unregister(session)
            session.uid = session.session_id = None
            self.hub.metrics.logins["server_error"] += 1
            return LoginErrorCode.SERVER_ERROR, {"reason": "cluster store (Redis) unavailable"}
        self.enable_journal(session)
        return code, result

    def logged_out(self, app_id: str, uid: str, session_id: Optional[str]) -> None:
        """A local session stopped being ``uid`` (logout, closed, expired): clear its presence
        unless another session took it over meanwhile."""
        self._where.pop((app_id, uid), None)
        value = "%s %s" % (self.node, session_id)

        resume = self.resume and session_id is not None

        async def unregister() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.eval(rs.PRESENCE_CAD, 1, rs.presence_key(app_id, uid), value)
            if resume:
                pipe.eval(rs.CLOSE_SESSION_SCRIPT, 3, rs.session_key(session_id or ""),
                          rs.session_stream_key(session_id or ""),
                          rs.node_sessions_key(self.node), self.node, session_id or "")
            pipe.srem(rs.node_users_key(self.node), "%s %s" % (app_id, uid))
            pipe.publish(rs.INV_CHANNEL, "%s %s" % (app_id, uid))
            await pipe.execute()

        self._op(unregister, wait=False)

    async def locate(self, app_id: str, uid: str, fresh: bool = False) -> Optional[str]:
        """The node where ``uid`` is logged in (None: nowhere). RedisError if Redis fails."""
        key = (app_id, uid)
        if not fresh:
            node = self._where.get(key)
            if node is not None:
                return node
        gen = self._inv_gen
        value = await self._redis.get(rs.presence_key(app_id, uid))
        if value is None:
            return None
        node = rs.text(value).partition(" ")[0]
        if node in self._dead:
            return None
        if self._sub_ok and gen == self._inv_gen:
            self._where[key] = node
        return node

    async def online_status(self, app_id: str, uid: str) -> int:
        if not p.is_valid_id(uid):
            return UserOnlineStatus.OFFLINE
        try:
            node = await self.locate(app_id, uid, fresh=True)
            if node is None:
                return UserOnlineStatus.OFFLINE
            if node == self.node or node in self._live or await self._redis.exists(
                    rs.node_key(node)):
                return UserOnlineStatus.ONLINE
            return UserOnlineStatus.OFFLINE
        except (RedisError, OSError) as exc:
            self._failed("online status", exc)
            return UserOnlineStatus.UNREACHABLE

    async def before_hello(self, app_id: str, session_id: Any, client_seq: Any) -> None:
        """A HELLO asks to resume a session this node does not have: if it was ended by a
        login elsewhere, say "kicked" (the client must not log in again); with cluster resume,
        take it over from the node that has (or had) it."""
        app = self.hub.apps.get(app_id)
        if app is None or not isinstance(session_id, str) or session_id in app.by_session_id:
            return
        try:
            if await self._redis.exists(rs.kicked_key(session_id)):
                app.kicked[session_id] = time.monotonic() + self.limits.resume_window + 60
                return
        except (RedisError, OSError) as exc:
            self._failed("resume check", exc)
            return
        await self.take_over(app, session_id, client_seq)

    def _kick(self, app: AppState, uid: str, session_id: str) -> None:
        """A login elsewhere replaced this node's session of ``uid``."""
        old = app.sessions.get(uid)
        if old is None or old.session_id != session_id:
            return
        log.info("uid %s of %s logged in on another node: kicking connection %d", uid,
                 app.app_id, old.cid)
        self.metrics.kicks += 1
        if not old.closing:
            app.rooms.leave_all(old, UserOfflineReason.DROPPED, kicked=True)
            try:
                _, frame = old.conn.notice(p.NoticeKind.KICKED, [LogoutReason.DUPLICATE_LOGIN])
                old.push(frame)
            except LocalProtocolError:
                pass
        app.kicked[session_id] = time.monotonic() + self.limits.resume_window + 60
        old.close(p.CloseCode.DUPLICATE_LOGIN, "logged in elsewhere")
        self.hub._unregister(old)


def _safe_url(url: str) -> str:
    """The url without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest
