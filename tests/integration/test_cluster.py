"""Cluster mode against a real redis-server and real node processes (``python -m rts_sync.server
--redis ...``), SDK engines spread across the nodes: presence, duplicate-login kicks, online
status, peer and room messages, room presence, push API and P2Server across nodes; a node
SIGKILLed mid-traffic (failover, nothing acknowledged lost, stale presence reaped); Redis
restarted mid-run (unhealthy, logins refused with -1003, recovery by itself).

Each runs twice: plain cluster mode, and with ``cluster_resume=1`` (sessions resume on another
node; test_cluster_resume.py has the tests of what only that mode does)."""

from __future__ import annotations

import concurrent.futures
import random
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from appserver import AppRecorder, AppServer, push
from cluster_nodes import Node, RedisServer, rotated, start_nodes, stop_nodes
from conftest import APP_ID, APP_KEY, WAIT, Recorder, RoomRecorder, token, wait_no_threads

import rts_sync
from rts_sync import (
    ConnectionState,
    ConnectionStateChangeReason,
    LoginErrorCode,
    LogoutReason,
    MessageConfig,
    RTSError,
    UserOfflineReason,
)

S = ConnectionState
Reason = ConnectionStateChangeReason
FAST = {"heartbeat_interval": 0.5, "heartbeat_timeout": 0.8, "connect_timeout": 1.0,
        "reconnect_backoff_base": 0.05, "reconnect_backoff_cap": 0.3}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    r = RedisServer()
    yield r
    r.stop()


#: The two cluster modes every test here runs in.
MODES = [pytest.param({}, id="plain"), pytest.param({"cluster_resume": 1}, id="resume")]


@pytest.fixture(scope="module", params=MODES)
def cluster(redis_server: RedisServer, request: Any) -> Iterator[List[Node]]:
    nodes = start_nodes(redis_server.url, 3, request.param)
    yield nodes
    stop_nodes(nodes)


class Engines:
    """Engines made in a test, all destroyed at its end."""

    def __init__(self) -> None:
        self.made: List[rts_sync.RTS] = []

    def login(self, url: Any, uid: str, params: Any = None,
              rec: Any = None) -> Tuple[rts_sync.RTS, Recorder]:
        rec = rec or Recorder()
        rts = rts_sync.create_rts(APP_ID, rec, dict(FAST, **(params or {})), server_url=url)
        self.made.append(rts)
        assert rts.login(token(uid), uid).result(WAIT) == 0
        return rts, rec

    def room(self, rts: rts_sync.RTS, room_id: str) -> Tuple[Any, RoomRecorder, Any]:
        room = rts.create_room(room_id)
        rr = RoomRecorder()
        room.set_rts_room_event_handler(rr)
        joined = room.join_room().result(WAIT)
        return room, rr, joined


@pytest.fixture
def engines() -> Iterator[Engines]:
    e = Engines()
    yield e
    for rts in e.made:
        rts.destroy()
    assert wait_no_threads() == []


def test_presence_status_and_peer_messages_across_nodes(cluster: List[Node],
                                                        engines: Engines) -> None:
    alice, arec = engines.login(cluster[0].url, "p-alice")
    bob, brec = engines.login(cluster[1].url, "p-bob")
    carol, crec = engines.login(cluster[2].url, "p-carol")
    assert alice.get_peer_online_status("p-bob").result(WAIT) == 1
    assert bob.get_peer_online_status("p-carol").result(WAIT) == 1
    assert carol.get_peer_online_status("p-nobody").result(WAIT) == 0
    # reliable, in order, SUCCESS only once the receiver (on another node) has them
    ops = []
    for i in range(300):
        ops.append(alice.send_message("p-bob", "ab%d" % i))
        ops.append(bob.send_binary_message("p-carol", b"bc%d" % i))
        ops.append(carol.send_message("p-alice", "ca%d" % i))
    assert all(op.result(WAIT) == 0 for op in ops)
    assert [m for _, m in brec.wait_count("msg", 300)] == ["ab%d" % i for i in range(300)]
    assert [m for _, m in crec.wait_count("bin", 300)] == [b"bc%d" % i for i in range(300)]
    assert [m for _, m in arec.wait_count("msg", 300)] == ["ca%d" % i for i in range(300)]
    assert {u for u, _ in brec.of("msg")} == {"p-alice"}
    # unreliable across nodes; no receiver anywhere: NO_RECEIVER (3)
    assert alice.send_message("p-carol", "u", MessageConfig.UNRELIABLE_ORDERED).result(WAIT) == 0
    crec.wait_for(lambda: ("p-alice", "u") in crec.of("msg"))
    with pytest.raises(RTSError) as err:
        alice.send_message("p-nobody", "x").result(WAIT)
    assert err.value.code == 3
    # logged out: offline everywhere, and no receiver
    bob.logout().result(WAIT)
    assert alice.get_peer_online_status("p-bob").result(WAIT) == 0
    with pytest.raises(RTSError) as err:
        carol.send_message("p-bob", "gone").result(WAIT)
    assert err.value.code == 3
    text = cluster[0].metrics()
    assert 'rts_cluster_node_info{node="' in text and "rts_cluster_redis_up 1" in text


def test_duplicate_login_on_another_node_kicks_the_first(cluster: List[Node],
                                                         engines: Engines) -> None:
    old, orec = engines.login(cluster[0].url, "k-bob")
    watcher, wrec = engines.login(cluster[2].url, "k-watch")
    _, wroom, _ = engines.room(watcher, "k-room")
    engines.room(old, "k-room")
    wroom.wait_for(lambda: ("k-bob", 0) in wroom.of("joined"))
    new, nrec = engines.login(cluster[1].url, "k-bob")
    orec.wait_for(lambda: (LogoutReason.DUPLICATE_LOGIN,) in orec.of("logout"))
    orec.wait_for(lambda: (S.DISCONNECTED, Reason.KICKED) in orec.of("state"))
    # the room's other member, on a third node, sees the kicked session leave (DROPPED)
    wroom.wait_for(lambda: ("k-bob", UserOfflineReason.DROPPED) in wroom.of("leave"))
    assert watcher.send_message("k-bob", "to the new one").result(WAIT) == 0
    assert nrec.wait_count("msg", 1) == [("k-watch", "to the new one")]
    assert orec.of("msg") == []
    assert watcher.get_peer_online_status("k-bob").result(WAIT) == 1
    assert old.stats()["logged_in"] is False


def test_rooms_across_nodes(cluster: List[Node], engines: Engines) -> None:
    users = ["r-a", "r-b", "r-c"]
    rts = [engines.login(cluster[i].url, u)[0] for i, u in enumerate(users)]
    rooms: Dict[str, Any] = {}
    recs: Dict[str, RoomRecorder] = {}
    for i, u in enumerate(users):
        rooms[u], recs[u], _ = engines.room(rts[i], "r-room")
        # the join result lists the members on every node (on_user_joined for each)
        recs[u].wait_for(lambda u=u, i=i: set(users[:i]) <= {x for x, _ in recs[u].of("joined")})
    recs["r-a"].wait_for(lambda: {u for u, _ in recs["r-a"].of("joined")} == {"r-b", "r-c"})
    recs["r-b"].wait_for(lambda: ("r-c", 0) in recs["r-b"].of("joined"))
    ops = []
    for i in range(100):
        for u in users:
            ops.append(rooms[u].send_room_message("%s:%d" % (u, i)))
    assert all(op.result(WAIT) == 200 for op in ops)
    for u in users:
        got = recs[u].wait_count("msg", 200)
        for other in users:
            if other != u:  # per sender, in order, exactly once
                assert [m for s, m in got if s == other] == ["%s:%d" % (other, i)
                                                             for i in range(100)]
        assert not any(s == u for s, _ in got)
    # push API on a node without members in the room, and to a user on another node
    status, answer = push(cluster[0].http_url, "SendBroadcast",
                          {"AppId": APP_ID, "RoomId": "r-room", "From": "srv", "Binary": False,
                           "Message": "from the push API"})
    assert status == 200, answer
    status, answer = push(cluster[2].http_url, "SendUnicast",
                          {"AppId": APP_ID, "To": "r-a", "From": "srv", "Binary": False,
                           "Message": "unicast"})
    assert status == 200, answer
    status, answer = push(cluster[2].http_url, "SendUnicast",
                          {"AppId": APP_ID, "To": "r-nobody", "From": "srv", "Binary": False,
                           "Message": "x"})
    assert status == 404 and answer["ResponseMetadata"]["Error"]["Code"] == "UserNotOnline"
    for u in users:
        recs[u].wait_for(lambda u=u: ("srv", "from the push API") in recs[u].of("msg"))
    # leaving: the others (on other nodes) see it, reason QUIT
    rooms["r-c"].leave_room().result(WAIT)
    for u in ("r-a", "r-b"):
        recs[u].wait_for(lambda u=u: ("r-c", UserOfflineReason.QUIT) in recs[u].of("leave"))
    status, answer = push(cluster[2].http_url, "SendBroadcast",
                          {"AppId": APP_ID, "RoomId": "r-empty", "From": "srv", "Binary": False,
                           "Message": "x"})
    assert status == 404 and answer["ResponseMetadata"]["Error"]["Code"] == "RoomNotFound"


def test_p2server_and_push_unicast_to_users_of_other_nodes(cluster: List[Node],
                                                           engines: Engines) -> None:
    app = AppServer()
    try:
        rec = AppRecorder()
        alice, _ = engines.login(cluster[1].url, "s-alice", rec=rec)
        bob, brec = engines.login(cluster[2].url, "s-bob")
        alice.set_server_params("sig", app.url("/ok")).result(WAIT)
        assert alice.send_server_message("hi").result(WAIT) == b"answer:hi"
        assert alice.send_message("s-bob", "peer").result(WAIT) == 0
        status, _ = push(cluster[0].http_url, "SendUnicast",
                         {"AppId": APP_ID, "To": "s-bob", "From": "appsrv", "Binary": True,
                          "Message": "AAE="})
        assert status == 200
        brec.wait_for(lambda: ("appsrv", b"\x00\x01") in brec.of("bin"))
        assert brec.of("msg") == [("s-alice", "peer")]
    finally:
        app.stop()


class TimedRecorder(Recorder):
    """A Recorder that also notes when each event came."""

    def __init__(self) -> None:
        super().__init__()
        self.times: List[float] = []

    def _add(self, name: str, *args: Any) -> None:
        with self.cond:
            self.times.append(time.monotonic())
            super()._add(name, *args)

    def first(self, pred: Any) -> float:
        with self.cond:
            return next(t for t, (n, a, _) in zip(self.times, self.events) if pred((n, a)))


def _check_acknowledged(sent: List[Tuple[str, Any]], received: List[str], what: str) -> int:
    """0 lost, duplicated or reordered among acknowledged messages; nothing received twice or
    out of order at all. Returns how many were acknowledged."""
    assert len(received) == len(set(received)), "%s: duplicates" % what
    index = {m: i for i, (m, _) in enumerate(sent)}
    positions = [index[m] for m in received]
    assert positions == sorted(positions), "%s: reordered" % what
    acked = [m for m, e in sent if e is None]
    got = set(received)
    lost = [m for m in acked if m not in got]
    assert lost == [], "%s: acknowledged but lost: %r" % (what, lost[:5])
    return len(acked)


def run_node_kill(seed: int, n: int = 600, limits: Any = None) -> Dict[str, Any]:
    """Three nodes; alice (first on node 0) and bob (first on node 1) exchange reliable peer and
    room messages while node 0 is SIGKILLed; dave (only node 0 in his list) never comes back.
    Alice resumes her session on another node with ``cluster_resume``, else logs in again."""
    rng = random.Random(seed)
    redis = RedisServer()
    resume = bool((limits or {}).get("cluster_resume"))
    nodes = start_nodes(redis.url, 3, limits)
    made: List[rts_sync.RTS] = []
    try:
        e = Engines()
        arec = TimedRecorder()
        # results on their way to the killed node are lost with it: those sends end TIMEOUT
        # after send_timeout (shortened here), never SUCCESS
        quick = {"send_timeout": 4.0}
        alice, _ = e.login(rotated(nodes, 0), "c-alice", quick, rec=arec)
        bob, brec = e.login(rotated(nodes, 1), "c-bob", quick)
        dave, _ = e.login(nodes[0].url, "c-dave", {"lost_after": 0.5})
        made = e.made
        aroom, arr, _ = e.room(alice, "c-room")
        broom, brr, _ = e.room(bob, "c-room")
        e.room(dave, "c-room")
        brr.wait_for(lambda: ("c-dave", 0) in brr.of("joined"))
        kill_at = rng.randrange(n // 4, n // 2)
        ab: List[Any] = []
        ba: List[Any] = []
        room_ab: List[Any] = []
        t0 = time.monotonic()
        for i in range(n):
            ab.append(("a%d" % i, alice.send_message("c-bob", "a%d" % i)))
            ba.append(("b%d" % i, bob.send_message("c-alice", "b%d" % i)))
            room_ab.append(("ra%d" % i, aroom.send_room_message("ra%d" % i)))
            if i == kill_at:
                nodes[0].kill()
                killed_at = time.monotonic()
            if i % 20 == 19:  # keep traffic in flight across the kill, not all at once
                ab[-20][1].exception(WAIT * 2)
        sent_ab = [(m, op.exception(WAIT * 2)) for m, op in ab]
        sent_ba = [(m, op.exception(WAIT * 2)) for m, op in ba]
        sent_room = [(m, op.exception(WAIT * 2)) for m, op in room_ab]
        # failover: both logged in (again) through a live node, in their room again
        how = Reason.RESUMED if resume else Reason.CONNECT_SUCCESS
        arec.wait_for(lambda: (S.RECONNECTED, how) in arec.of("state"))
        failover = arec.first(lambda ev: ev[0] == "state" and ev[1][0] == S.RECONNECTED) - killed_at
        assert alice.send_message("c-bob", "after").result(WAIT) == 0
        assert bob.send_message("c-alice", "after").result(WAIT) == 0
        brec.wait_for(lambda: ("c-alice", "after") in brec.of("msg"))
        arec.wait_for(lambda: ("c-bob", "after") in arec.of("msg"))
        got_b = [m for u, m in brec.of("msg") if m != "after"]
        got_a = [m for u, m in arec.of("msg") if m != "after"]
        acked = _check_acknowledged(sent_ab, got_b, "alice->bob")
        acked += _check_acknowledged(sent_ba, got_a, "bob->alice")
        got_room = [m for u, m in brr.of("msg") if u == "c-alice"]
        room_acked = _check_acknowledged(sent_room, got_room, "room alice->bob")
        # dave's node is gone and dave cannot fail over: within the node timeout he is offline
        # and bob sees him leave the room, DROPPED
        brr.wait_for(lambda: ("c-dave", UserOfflineReason.DROPPED) in brr.of("leave"))
        assert bob.get_peer_online_status("c-dave").result(WAIT) == 0
        assert bob.get_peer_online_status("c-alice").result(WAIT) == 1
        return {"acked_peer": acked, "acked_room": room_acked, "sent": 3 * n,
                "failover_s": round(failover, 2), "seconds": round(time.monotonic() - t0, 2)}
    finally:
        for rts in made:
            rts.destroy()
        stop_nodes(nodes)
        redis.stop()


@pytest.mark.parametrize("limits", MODES)
def test_node_killed_mid_traffic_fails_over_and_loses_nothing_acknowledged(limits: Any) -> None:
    figures = run_node_kill(seed=1, limits=limits)
    print("node kill:", figures)
    assert figures["acked_peer"] > 0 and figures["acked_room"] > 0
    assert wait_no_threads() == []


@pytest.mark.soak
@pytest.mark.parametrize("limits", MODES)
@pytest.mark.parametrize("seed", range(10))
def test_node_kill_soak(seed: int, limits: Any) -> None:
    print("node kill %d:" % seed, run_node_kill(seed=100 + seed, n=1500, limits=limits))


def all_online(rts: rts_sync.RTS, uid: str, n: int = 20) -> bool:
    """``n`` concurrent online-status queries for ``uid``, all answered ONLINE."""
    ops = [rts.get_peer_online_status(uid) for _ in range(n)]
    return [op.result(WAIT) for op in ops] == [1] * n


def redis_errors(node: Node) -> int:
    for line in node.metrics().splitlines():
        if line.startswith("rts_cluster_redis_errors_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("no rts_cluster_redis_errors_total in /metrics")


@pytest.mark.parametrize("limits", MODES)
def test_redis_restart_unhealthy_refuses_logins_and_recovers(limits: Any) -> None:
    redis = RedisServer()
    nodes = start_nodes(redis.url, 2, limits)
    resume = bool(limits.get("cluster_resume"))
    e = Engines()
    try:
        alice, arec = e.login(nodes[0].url, "x-alice")
        bob, brec = e.login(nodes[1].url, "x-bob")
        carol, crec = e.login(nodes[0].url, "x-carol")
        aroom, arr, _ = e.room(alice, "x-room")
        broom, brr, _ = e.room(bob, "x-room")
        e.room(bob, "x-far")  # a room with members on node 1 only
        assert alice.send_message("x-bob", "before").result(WAIT) == 0
        # concurrent lookups leave several idle connections in each node's Redis pool; a
        # restart makes them all stale, and none may fail a command afterwards
        assert all_online(alice, "x-bob") and all_online(bob, "x-alice")
        redis.stop()
        for node in nodes:
            body = node.wait_health(503)
            assert body["cluster"]["redis"] == "unavailable"
        # a new login is refused with a clear code; the SDK's operation fails with it
        late = rts_sync.create_rts(APP_ID, Recorder(), FAST, server_url=nodes[1].url)
        e.made.append(late)
        with pytest.raises(RTSError) as err:
            late.login(token("x-late"), "x-late").result(WAIT)
        assert err.value.code == LoginErrorCode.SERVER_ERROR
        # the push API cannot reach users or rooms of other nodes: a clear 503, not a 200
        # for a message that may be lost, nor a 404 for a user who is online
        for action, where in (("SendUnicast", {"To": "x-bob"}),
                              ("SendBroadcast", {"RoomId": "x-far"})):
            status, answer = push(nodes[0].http_url, action,
                                  dict(where, AppId=APP_ID, From="srv", Binary=False, Message="m"))
            assert status == 503, answer
            assert answer["ResponseMetadata"]["Error"]["Code"] == "ServiceUnavailable"
        # sessions on one node still talk to each other; with cluster resume every frame
        # waits until Redis has it, so the message goes through once Redis is back
        local = alice.send_message("x-carol", "local")
        if not resume:
            assert local.result(WAIT) == 0
        else:  # held by its node while Redis is down (a second is plenty to see that)
            with pytest.raises(concurrent.futures.TimeoutError):
                local.result(1.0)
        redis.start()  # empty: every node registers its users and rooms again by itself
        for node in nodes:
            node.wait_health(200, nodes=2)
        assert local.result(WAIT) == 0
        crec.wait_for(lambda: ("x-alice", "local") in crec.of("msg"))
        errors = [redis_errors(node) for node in nodes]
        assert late.login(token("x-late"), "x-late").result(WAIT) == 0
        assert all_online(alice, "x-bob") and all_online(bob, "x-alice")
        assert late.get_peer_online_status("x-bob").result(WAIT) == 1
        ops = [alice.send_message("x-bob", "m%d" % i) for i in range(100)]
        assert [op.result(WAIT) for op in ops] == [0] * 100
        # healthy again means healthy: not one Redis error since (stale pooled connections
        # are retried on a fresh connection)
        assert [redis_errors(node) for node in nodes] == errors
        assert [m for _, m in brec.wait_count("msg", 101)] == ["before"] + ["m%d" % i
                                                                          for i in range(100)]
        assert aroom.send_room_message("room after").result(WAIT) == 200
        brr.wait_for(lambda: ("x-alice", "room after") in brr.of("msg"))
        assert "rts_cluster_redis_errors_total" in nodes[0].metrics()
    finally:
        for rts in e.made:
            rts.destroy()
        stop_nodes(nodes)
        redis.stop()
    assert wait_no_threads() == []


def test_single_node_needs_no_redis() -> None:
    """Without --redis nothing changes: no cluster, no redis connection, healthz as before."""
    from rts_sync.testing import serve_in_thread

    with serve_in_thread({APP_ID: "k"}) as srv:
        assert srv.stats() == {"status": "ok", "sessions": 0, "connections": 0}


def test_stale_pooled_redis_connections_are_retried_after_a_restart() -> None:
    """A Redis restart leaves every idle pooled connection dead; the next command on each one
    must go through on a fresh connection instead of failing (and making the node unhealthy)."""
    import asyncio

    from rts_sync.server.app import HUB
    from rts_sync.testing import serve_in_thread

    redis = RedisServer()
    try:
        with serve_in_thread({APP_ID: APP_KEY}, redis_url=redis.url) as srv:
            assert srv._runner is not None
            cluster = srv._runner.app[HUB].cluster
            assert cluster is not None

            async def gets(n: int) -> List[Any]:
                return await asyncio.gather(*[cluster._redis.get("k%d" % i) for i in range(n)],
                                            return_exceptions=True)

            def run(n: int) -> List[Any]:
                return asyncio.run_coroutine_threadsafe(gets(n), srv._loop).result(WAIT)

            assert run(20) == [None] * 20  # 20 connections now idle in the pool
            redis.stop()
            redis.start()
            assert run(20) == [None] * 20  # each was dead; each retried once on a new one
    finally:
        redis.stop()


def test_stopped_node_hands_its_sessions_over_with_cluster_resume() -> None:
    """SIGTERM (a rolling restart) with cluster resume: the node writes its sessions to Redis
    as released before it closes, so their clients resume on another node at once, keeping
    their session (no re-login), rooms and every message."""
    run_stop_hand_over()


@pytest.mark.soak
@pytest.mark.parametrize("i", range(10))
def test_stop_hand_over_soak(i: int) -> None:
    run_stop_hand_over()


def run_stop_hand_over() -> None:
    redis = RedisServer()
    nodes = start_nodes(redis.url, 2, {"cluster_resume": 1})
    e = Engines()
    try:
        arec = TimedRecorder()
        alice, _ = e.login(rotated(nodes, 0), "h-alice", rec=arec)
        bob, brec = e.login(nodes[1].url, "h-bob")
        aroom, arr, _ = e.room(alice, "h-room")
        broom, brr, _ = e.room(bob, "h-room")
        sent = [("m%d" % i, alice.send_message("h-bob", "m%d" % i)) for i in range(200)]
        to_alice = [("b%d" % i, bob.send_message("h-alice", "b%d" % i)) for i in range(200)]
        stopped_at = time.monotonic()
        nodes[0].stop()
        sent += [("n%d" % i, alice.send_message("h-bob", "n%d" % i)) for i in range(200)]
        arec.wait_for(lambda: (S.RECONNECTED, Reason.RESUMED) in arec.of("state"))
        resumed_in = arec.first(lambda ev: ev[0] == "state" and ev[1][0] == S.RECONNECTED)
        assert any("handed 1 of 1 sessions over" in line for line in nodes[0].log)
        outcome = [(m, op.exception(WAIT)) for m, op in sent]
        back = [(m, op.exception(WAIT)) for m, op in to_alice]
        # a handed-over session keeps everything: nothing fails, nothing is lost or doubled
        assert [(m, exc) for m, exc in outcome + back if exc is not None][:3] == []
        assert [m for _, m in brec.wait_count("msg", 400)] == [m for m, _ in sent]
        assert [m for _, m in arec.wait_count("msg", 200)] == [m for m, _ in to_alice]
        assert aroom.send_room_message("still in the room").result(WAIT) == 200
        brr.wait_for(lambda: ("h-alice", "still in the room") in brr.of("msg"))
        assert bob.get_peer_online_status("h-alice").result(WAIT) == 1
        print("resumed %.2f s after the SIGTERM" % (resumed_in - stopped_at))
    finally:
        for rts in e.made:
            rts.destroy()
        stop_nodes(nodes)
        redis.stop()
    assert wait_no_threads() == []
