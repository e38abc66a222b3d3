"""Cluster resume (``--limit cluster_resume=1``) against a real redis-server and real node
processes: a session resumed on another node after its node was SIGKILLed (unacknowledged
deliveries replayed with their seqs, their sender told SUCCESS only once the client ACKed them
there); an SDK engine whose connection drops coming back through another, live node (the old one
hands the session over: same session, rooms and presence, nothing acknowledged lost, nobody sees
it leave), with messages in flight across the cut and with none; resumes of sessions replaced by
a new login ("kicked") or unknown ("expired")."""

from __future__ import annotations

import collections
import secrets
import time
from typing import Any, Callable, Iterator, List, Set, Tuple

import pytest
import websocket
from cluster_nodes import Node, RedisServer, start_nodes, stop_nodes
from conftest import APP_ID, WAIT, RoomRecorder, wait_no_threads
from test_cluster import Engines, TimedRecorder, _check_acknowledged
from test_server_protocol import RawClient, _open_clients

from rts_sync import ConnectionState, ConnectionStateChangeReason, UserMessageSendResult
from rts_sync import protocol as p
from rts_sync.testing import FaultProxy

S = ConnectionState
Reason = ConnectionStateChangeReason
#: The node limits that turn cluster resume on.
RESUME = {"cluster_resume": 1}
#: A takeover may wait for the old node (its hand-over, or its heartbeat key to expire).
TAKEOVER_WAIT = 10.0


class EarlyTimeout(AssertionError):
    """A sender told TIMEOUT although its receiver resumed in time and ACKed."""


class HandOverRace(AssertionError):
    """A message in flight across a hand-over duplicated, reordered or lost (the races the
    hand-over's freeze, the per-receiver fence, the ordered redirects and the room transit
    exist to prevent)."""


class Raw(RawClient):
    """A RawClient that, once ``auto_ack`` is off, acknowledges nothing unless ``ack()`` is
    called (RawClient acknowledges RESPONSEs and RESULTs, and with them everything before)."""

    auto_ack = True

    def _got(self, ev: Any) -> Any:
        return super()._got(ev) if self.auto_ack else ev

    def shut(self) -> None:
        """Close without waiting for an answer (its node may be dead)."""
        if self in _open_clients:
            _open_clients.remove(self)
        try:
            self.ws.close(timeout=0.5)
        except (OSError, websocket.WebSocketException):
            pass
        self.ws.shutdown()  # type: ignore[no-untyped-call]

    def resume(self, session_id: str, conn: p.Connection, last_seq: int) -> p.Welcome:
        """HELLO resume=(``session_id``, ``last_seq``) with ``conn`` (the session's client side,
        reopened); the answer must be a WELCOME."""
        conn.reopen()
        conn.in_seq = last_seq
        self.conn = conn
        self.raw(conn.hello(APP_ID, "raw-test", session_id=session_id))
        welcome = self.next_event(timeout=TAKEOVER_WAIT)
        assert isinstance(welcome, p.Welcome), welcome
        return welcome


class Clients:
    """Raw clients made in a test, all closed at its end."""

    def __init__(self) -> None:
        self.made: List[Raw] = []

    def new(self, url: str, hello: bool = True) -> Raw:
        c = Raw(url, hello=hello)
        self.made.append(c)
        return c

    def logged_in(self, url: str, uid: str) -> Tuple[Raw, str]:
        """A raw client logged in as ``uid``, and its session id."""
        c = self.new(url)
        resp = c.login(uid)
        assert resp.code == 0, resp
        sid = resp.result["session"]
        assert isinstance(sid, str) and sid
        return c, sid

    def close(self) -> None:
        for c in self.made:
            c.shut()


@pytest.fixture(scope="module")
def cluster() -> Iterator[List[Node]]:
    """Three resume-mode nodes sharing one redis-server (for tests that kill nothing)."""
    redis = RedisServer()
    nodes: List[Node] = []
    try:
        nodes = start_nodes(redis.url, 3, RESUME)
        yield nodes
    finally:
        stop_nodes(nodes)
        redis.stop()


def _logs(nodes: List[Node]) -> str:
    """The nodes' recent log lines, for a failure's message."""
    return "".join("\n-- node %d:\n%s" % (i, "".join(list(node.log)[-20:]))
                   for i, node in enumerate(nodes))


def _code(op: Any, timeout: float = WAIT * 2) -> int:
    """The result code of a send operation (0: SUCCESS)."""
    exc = op.exception(timeout)
    return 0 if exc is None else int(exc.code)


def test_deliveries_unacknowledged_on_a_dead_node_are_replayed_on_another() -> None:
    n = 20
    redis = RedisServer()
    nodes: List[Node] = []
    e = Engines()
    clients = Clients()
    try:
        nodes = start_nodes(redis.url, 3, RESUME)
        bob, sid = clients.logged_in(nodes[0].url, "d-bob")
        bob.auto_ack = False  # from now on bob acknowledges nothing
        arec = TimedRecorder()
        alice, _ = e.login(nodes[2].url, "d-alice", rec=arec)
        ops = [alice.send_message("d-bob", "m%d" % i) for i in range(n)]
        first = [bob.expect(p.Deliver) for _ in range(n)]
        assert [(d.kind, d.sender, d.payload) for d in first] == [
            (p.DeliverKind.PEER, "d-alice", "m%d" % i) for i in range(n)]
        seqs = [d.seq for d in first]
        assert seqs == sorted(seqs) and len(set(seqs)) == n and min(seqs) > 1
        assert not any(op.done() for op in ops)  # nothing acknowledged: no result yet
        nodes[0].kill()
        # bob comes back once the cluster knows node 0 is dead (as a client does after its
        # heartbeat timeout, longer than node_timeout), through node 1, having taken nothing
        # (last_seq 0); the resume window (5 s) is still open
        for node in nodes[1:]:
            node.wait_health(200, nodes=2)
        bob2 = clients.new(nodes[1].url, hello=False)
        bob2.auto_ack = False
        welcome = bob2.resume(sid, bob.conn, 0)
        assert welcome.params.get("resumed") is True, welcome.params
        assert welcome.params.get("last_seq") == 1  # the LOGIN request
        assert welcome.params.get("session") == sid
        replayed: List[Any] = []
        while len([ev for ev in replayed if isinstance(ev, p.Deliver)]) < n:
            replayed.append(bob2.next_event(timeout=WAIT))
        again = [ev for ev in replayed if isinstance(ev, p.Deliver)]
        assert [(d.seq, d.kind, d.sender, d.payload) for d in again] == [
            (d.seq, d.kind, d.sender, d.payload) for d in first]
        # anything else replayed is a frame bob had not acknowledged either (the LOGIN RESPONSE)
        others = [ev for ev in replayed if not isinstance(ev, p.Deliver)]
        assert all(isinstance(ev, p.Response) and ev.seq == 1 for ev in others), others
        # nothing was acknowledged anywhere yet: no SUCCESS for alice (no false success)
        assert (UserMessageSendResult.SUCCESS,) not in [r[1:] for r in arec.of("result")]
        early = [(msgid, code) for msgid, code in arec.of("result")]
        acked_at = time.monotonic()
        bob2.ack()
        # bob has them now: every one of alice's sends ends SUCCESS, and only now
        codes = [_code(op) for op in ops]
        if codes != [0] * n:
            raise EarlyTimeout("alice's results: %r (before bob's ACK on node 1: %r)"
                               % (codes, early))
        with arec.cond:
            results = [(t, a) for t, (name, a, _) in zip(arec.times, arec.events)
                       if name == "result"]
        assert all(t >= acked_at for t, _ in results), "a result before bob's ACK on node 1"
        # the session goes on, on node 1: a new message arrives with the next seq
        op = alice.send_message("d-bob", "after")
        d = bob2.expect(p.Deliver, timeout=WAIT)
        assert (d.sender, d.payload) == ("d-alice", "after") and d.seq > max(seqs)
        bob2.ack()
        assert _code(op) == 0
        assert alice.get_peer_online_status("d-bob").result(WAIT) == 1
    finally:
        clients.close()
        for rts in e.made:
            rts.destroy()
        stop_nodes(nodes)
        redis.stop()
    assert wait_no_threads() == []


def _joined(rr: RoomRecorder, uids: Set[str]) -> Callable[[], bool]:
    return lambda: uids <= {u for u, _ in rr.of("joined")}


def _received(rr: RoomRecorder, msgs: Set[Tuple[str, str]]) -> Callable[[], bool]:
    return lambda: msgs <= set(rr.of("msg"))


def _check_order(what: str, sent: List[Tuple[str, Any]], got: List[str]) -> None:
    """``got`` in the order of ``sent``; else say where, and what became of the messages."""
    index = {m: i for i, (m, _) in enumerate(sent)}
    pos = [index[m] for m in got]
    bad = next((i for i in range(1, len(pos)) if pos[i] < pos[i - 1]), None)
    if bad is not None:
        window = got[max(0, bad - 3):bad + 3]
        fate = {m: getattr(exc, "code", 0) for m, exc in sent if m in window}
        raise HandOverRace("%s: reordered: received ... %s ... (result codes %r)"
                             % (what, ", ".join(window), fate))


def _idle(nodes: List[Node], timeout: float = WAIT) -> None:
    """Until no node serves a session any more (the previous test's end their sessions
    asynchronously; /healthz of other processes is all there is to poll)."""
    deadline = time.monotonic() + timeout
    while any(node.health()[1]["sessions"] for node in nodes):
        assert time.monotonic() < deadline, [node.health()[1] for node in nodes]
        time.sleep(0.05)


def run_connection_drop(nodes: List[Node], prefix: str, n: int) -> None:
    """alice is on node 0 through a fault proxy, bob on node 1, carol on node 0, all three in
    one room; alice's link is cut (and the proxy refuses her from then on) after ``n // 3`` of
    ``n`` rounds of reliable peer and room messages (n = 0: with nothing in flight). She must
    come back through node 1 resuming her session, which node 0 hands over."""
    _idle(nodes)
    ua, ub, uc, room_id = (prefix + x for x in ("alice", "bob", "carol", "room"))
    e = Engines()
    proxy = FaultProxy("127.0.0.1", nodes[0].port).start()
    try:
        arec = TimedRecorder()
        alice, _ = e.login([proxy.url(), nodes[1].url], ua, {"connect_timeout": 3.0},
                           rec=arec)
        assert proxy.active_connections == 1  # alice is on node 0, through the proxy
        bob, brec = e.login(nodes[1].url, ub)
        carol, crec = e.login(nodes[0].url, uc)  # stays on node 0
        assert [node.health()[1]["sessions"] for node in nodes] == [2, 1, 0]
        aroom, arr, _ = e.room(alice, room_id)
        broom, brr, _ = e.room(bob, room_id)
        croom, crr, _ = e.room(carol, room_id)
        for rr, others in ((arr, {ub, uc}), (brr, {ua, uc}), (crr, {ua, ub})):
            rr.wait_for(_joined(rr, others))
        ab: List[Tuple[str, Any]] = []
        ba: List[Tuple[str, Any]] = []
        room_ab: List[Tuple[str, Any]] = []
        room_ba: List[Tuple[str, Any]] = []
        cut_at = n // 3
        for i in range(n):
            ab.append(("a%d" % i, alice.send_message(ub, "a%d" % i)))
            ba.append(("b%d" % i, bob.send_message(ua, "b%d" % i)))
            room_ab.append(("ra%d" % i, aroom.send_room_message("ra%d" % i)))
            room_ba.append(("rb%d" % i, broom.send_room_message("rb%d" % i)))
            if i == cut_at:  # alice's link to node 0 breaks; she cannot come back that way
                proxy.refuse(True)
                proxy.cut()
            if i % 20 == 19:  # keep traffic in flight across the cut, not all at once
                ab[-20][1].exception(WAIT * 2)
        if n == 0:
            proxy.refuse(True)
            proxy.cut()
        sent_ab = [(m, op.exception(WAIT * 2)) for m, op in ab]
        sent_ba = [(m, op.exception(WAIT * 2)) for m, op in ba]
        sent_room_ab = [(m, op.exception(WAIT * 2)) for m, op in room_ab]
        sent_room_ba = [(m, op.exception(WAIT * 2)) for m, op in room_ba]
        # alice resumed her session through node 1 (node 0 handed it over): no new login
        arec.wait_for(lambda: (S.RECONNECTED, Reason.RESUMED) in arec.of("state"))
        states = arec.of("state")
        assert (S.RECONNECTED, Reason.CONNECT_SUCCESS) not in states, states
        assert len(arec.of("login")) == 1 and arec.of("logout") == [], arec.of("login")
        # node 0 no longer counts her (carol only), node 1 does (alice and bob)
        assert [node.health()[1]["sessions"] for node in nodes] == [1, 2, 0]
        assert proxy.active_connections == 0
        # after the resume, both ways, peer and room (carol's node 0 still sends alice the room)
        assert alice.send_message(ub, "after").result(WAIT) == 0
        assert bob.send_message(ua, "after").result(WAIT) == 0
        assert aroom.send_room_message("ra-after").result(WAIT) == 200
        assert broom.send_room_message("rb-after").result(WAIT) == 200
        assert croom.send_room_message("rc-after").result(WAIT) == 200
        brec.wait_for(lambda: (ua, "after") in brec.of("msg"))
        arec.wait_for(lambda: (ub, "after") in arec.of("msg"))
        for rr, msgs in ((arr, {(ub, "rb-after"), (uc, "rc-after")}),
                         (brr, {(ua, "ra-after"), (uc, "rc-after")}),
                         (crr, {(ua, "ra-after"), (ub, "rb-after")})):
            rr.wait_for(_received(rr, msgs))
        failed = {what: [(m, exc.code) for m, exc in sent if exc is not None]
                  for what, sent in (("alice->bob", sent_ab), ("bob->alice", sent_ba),
                                     ("room alice", sent_room_ab), ("room bob", sent_room_ba))}
        print("connection drop: failed sends %r" % (failed,))
        got_b = [m for u, m in brec.of("msg") if m != "after"]
        got_a = [m for u, m in arec.of("msg") if m != "after"]
        for what, got, sent in (("alice->bob", got_b, sent_ab), ("bob->alice", got_a, sent_ba)):
            twice = [m for m, k in collections.Counter(got).items() if k > 1]
            if twice:
                raise HandOverRace("%s: delivered twice: %r (cut after %d; %s)" % (
                    what, twice, cut_at, _logs(nodes[:2])))
            _check_order(what, sent, got)
        got_room_b = [m for u, m in brr.of("msg") if u == ua and m != "ra-after"]
        got_room_a = [m for u, m in arr.of("msg") if u == ub and m != "rb-after"]
        got_room_c = [m for u, m in crr.of("msg") if u == ua and m != "ra-after"]
        acked = {}
        for what, sent, got in (("alice->bob", sent_ab, got_b), ("bob->alice", sent_ba, got_a),
                                ("room alice->bob", sent_room_ab, got_room_b),
                                ("room alice->carol", sent_room_ab, got_room_c),
                                ("room bob->alice", sent_room_ba, got_room_a)):
            try:
                acked[what] = _check_acknowledged(sent, got, what)
            except AssertionError as exc:
                raise HandOverRace(str(exc).splitlines()[0]) from exc
        print("connection drop: acknowledged %r of %d each" % (acked, n))
        assert all(v > cut_at for v in acked.values()) or n == 0, acked
        # a receiver that resumed is never NO_RECEIVER (3) for a message sent meanwhile
        absent = [m for m, exc in sent_ba if getattr(exc, "code", 0) == 3]
        if absent:
            raise HandOverRace("bob->alice: NO_RECEIVER while she was handed over: %r" % absent)
        # nobody saw alice leave (or join again): the session moved, it did not end
        for rr in (brr, crr):
            assert [a for a in rr.of("leave") if a[0] == ua] == [], rr.of("leave")
            assert [a for a in rr.of("joined") if a[0] == ua] == [(ua, 0)], rr.of("joined")
        assert arr.of("leave") == [] and arr.of("left") == []
        # her presence is on node 1 now, seen from both nodes
        assert bob.get_peer_online_status(ua).result(WAIT) == 1
        assert carol.get_peer_online_status(ua).result(WAIT) == 1
    finally:
        for rts in e.made:
            rts.destroy()
        proxy.stop()


def test_connection_drop_resumes_on_another_live_node(cluster: List[Node]) -> None:
    """Reliable peer and room messages both ways across the cut (as run_node_kill)."""
    run_connection_drop(cluster, "l-", 300)
    assert wait_no_threads() == []


@pytest.mark.soak
@pytest.mark.parametrize("i", range(10))
def test_connection_drop_hand_over_soak(cluster: List[Node], i: int) -> None:
    run_connection_drop(cluster, "s%d-" % i, 300)


def test_connection_drop_hand_over_keeps_session_rooms_and_presence(cluster: List[Node]) -> None:
    """The same hand-over with nothing in flight: the mechanics alone, which must hold."""
    run_connection_drop(cluster, "q-", 0)
    assert wait_no_threads() == []


def test_resume_of_a_session_replaced_by_a_new_login_is_refused(cluster: List[Node]) -> None:
    clients = Clients()
    try:
        old, sid = clients.logged_in(cluster[0].url, "k-eve")
        new, new_sid = clients.logged_in(cluster[1].url, "k-eve")
        assert new_sid != sid
        notice = old.expect(p.Notice)
        assert notice.kind == p.NoticeKind.KICKED and list(notice.args) == [1]
        old.expect_close(p.CloseCode.DUPLICATE_LOGIN)
        for node in (cluster[2], cluster[0]):
            again = clients.new(node.url, hello=False)
            welcome = again.resume(sid, p.Connection(p.Role.CLIENT), 0)
            assert welcome.params.get("resumed") is False, welcome.params
            assert welcome.params.get("resume_error") == "kicked", welcome.params
        # the new session is untouched: online, and it works
        new.raw(new.conn.ping(5))
        assert new.expect(p.Pong).token == 5
        watcher, _ = clients.logged_in(cluster[2].url, "k-watch")
        assert watcher.request(p.Op.ONLINE_STATUS, "k-eve").result == 1
    finally:
        clients.close()
    assert wait_no_threads() == []


def test_unknown_session_resume_is_refused_as_expired(cluster: List[Node]) -> None:
    clients = Clients()
    try:
        c = clients.new(cluster[0].url, hello=False)
        welcome = c.resume(secrets.token_hex(16), p.Connection(p.Role.CLIENT), 0)
        assert welcome.params.get("resumed") is False, welcome.params
        assert welcome.params.get("resume_error") == "expired", welcome.params
        assert "last_seq" not in welcome.params
        # the connection is usable for a new session
        resp = c.login("x-frank")
        assert resp.code == 0, resp
        assert isinstance(resp.result["session"], str)
        other, _ = clients.logged_in(cluster[1].url, "x-watch")
        assert other.request(p.Op.ONLINE_STATUS, "x-frank").result == 1
    finally:
        clients.close()
    assert wait_no_threads() == []
