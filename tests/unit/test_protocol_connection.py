"""Connection state (rts_sync.protocol.connection): handshake, directions, sequences, acks, resume.

Everything goes through a ConnectionPair: a client and a server Connection with the wire between
them, fed frames in order, duplicated, replayed and malformed, in both directions. A resume is
``ConnectionPair.resume()``: both sides ``reopen()``, HELLO carries the session and the client's
last seq, WELCOME the server's, and each side sends what ``resume_from`` returns. No sockets, no
sleeps, no mocks.
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest
from protocol_pair import ConnectionPair, acked, rejected

from rts_sync.errors import LocalProtocolError
from rts_sync.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Acked,
    Close,
    CloseCode,
    Connection,
    ConnectionPhase,
    Deliver,
    DeliverKind,
    Event,
    Hello,
    Notice,
    NoticeKind,
    Op,
    Ping,
    Pong,
    Request,
    Response,
    Result,
    Role,
    Send,
    TargetKind,
    Welcome,
    encode,
    encode_deliver_tail,
    negotiate,
)

PEER, ROOM = DeliverKind.PEER, DeliverKind.ROOM



# ------------------------------------------------------------------------------------------ handshake
def test_handshake() -> None:
    p = ConnectionPair(handshake=False)
    assert p.client.phase is p.server.phase is ConnectionPhase.HANDSHAKE
    [hello] = p.c2s(p.client.hello("app-1", "rts_sync/0.1", versions=(3, 1)))
    assert hello == Hello((3, 1), "app-1", "rts_sync/0.1") and hello.resume is None
    assert p.server.phase is ConnectionPhase.HANDSHAKE  # until it answers
    version = negotiate(hello.versions)
    assert version == PROTOCOL_VERSION == 1
    [welcome] = p.s2c(p.server.welcome(version, {"heartbeat": 15}))
    assert welcome == Welcome(1, {"heartbeat": 15})
    assert (p.client.phase, p.server.phase) == (ConnectionPhase.OPEN, ConnectionPhase.OPEN)
    assert p.client.version == p.server.version == 1


def test_hello_with_session_id_asks_to_resume_from_the_clients_last_seq() -> None:
    client = Connection(Role.CLIENT)
    assert Connection(Role.SERVER).receive(client.hello("app-1", "sdk", session_id="s-9")) == Hello(
        (PROTOCOL_VERSION,), "app-1", "sdk", ("s-9", 0))
    p = ConnectionPair()
    for _ in range(3):
        p.s2c(p.server.deliver(PEER, "bob", None, "x")[1])
    p.client.reopen()
    assert Connection(Role.SERVER).receive(p.client.hello("app-1", session_id="s-1")).resume == ("s-1", 3)


def test_server_refuses_a_version_with_close_during_handshake() -> None:
    p = ConnectionPair(handshake=False)
    [hello] = p.c2s(p.client.hello("app-1", versions=(7,)))
    assert negotiate(hello.versions) is None
    [close] = p.s2c(p.server.close(CloseCode.UNSUPPORTED_VERSION, "no common version"))
    assert close == Close(CloseCode.UNSUPPORTED_VERSION, "no common version")
    assert p.client.phase is p.server.phase is ConnectionPhase.CLOSED


def test_client_may_close_during_handshake() -> None:
    p = ConnectionPair(handshake=False)
    assert p.c2s(p.client.close(CloseCode.NORMAL)) == [Close(1000)]
    assert p.server.phase is ConnectionPhase.CLOSED


def test_welcome_with_unsupported_version() -> None:
    p = ConnectionPair(handshake=False)
    p.c2s(p.client.hello("app-1"))
    rejected(p.client, encode(Welcome(2)), CloseCode.UNSUPPORTED_VERSION)
    assert p.client.version is None


@pytest.mark.parametrize(
    "ev", [Request(1, Op.LOGIN, ("t", "alice", None, 0)), Send(1, 0, "bob", 0, "x"), Ack(0), Ping(1),
           Pong(1)], ids=repr)
def test_server_rejects_frames_before_hello(ev: Event) -> None:
    rejected(Connection(Role.SERVER), encode(ev))


def test_server_rejects_frames_after_hello_before_it_sent_welcome() -> None:
    p = ConnectionPair(handshake=False)
    p.c2s(p.client.hello("app-1"))
    _, data = p.client.request(Op.LOGIN, ("t", "alice", None, 0))
    rejected(p.server, data)


@pytest.mark.parametrize(
    "ev", [Response(1, 1, 0), Result(1, 0, (1,)), Deliver(1, PEER, "bob", None, "x"),
           Notice(1, NoticeKind.KICKED, (1,)), Ack(0), Ping(1), Pong(1)], ids=repr)
def test_client_rejects_frames_before_welcome(ev: Event) -> None:
    client = Connection(Role.CLIENT)
    client.hello("app-1")
    rejected(client, encode(ev))


CLIENT_BOUND_ONLY = [Welcome(1), Response(1, 1, 0), Result(1, 0, (1,)), Deliver(1, PEER, "a", None, "x"),
                     Notice(1, NoticeKind.KICKED, (0,))]
SERVER_BOUND_ONLY = [Hello((1,), "app"), Hello((1,), "app", "", ("s", 0)), Request(1, Op.LOGOUT),
                     Send(1, TargetKind.PEER, "b", 0, "x")]


@pytest.mark.parametrize("handshake", [False, True], ids=["handshake", "open"])
@pytest.mark.parametrize(
    ("side", "ev"),
    [("server", ev) for ev in CLIENT_BOUND_ONLY] + [("client", ev) for ev in SERVER_BOUND_ONLY],
    ids=repr,
)
def test_wrong_direction_frames(handshake: bool, side: str, ev: Event) -> None:
    p = ConnectionPair(handshake=handshake)
    rejected(getattr(p, side), encode(ev))


def test_second_hello_rejected() -> None:
    p = ConnectionPair()
    rejected(p.server, p.client.hello("app-1"))


def test_second_welcome_rejected() -> None:
    p = ConnectionPair()
    rejected(p.client, encode(Welcome(1)))


def test_second_hello_before_welcome_rejected() -> None:
    p = ConnectionPair(handshake=False)
    data = p.client.hello("app-1")
    p.c2s(data)
    rejected(p.server, data)


def test_negotiate() -> None:
    assert negotiate((1,)) == 1
    assert negotiate((5, 4, 1)) == 1
    assert negotiate((1, 2, 3), (3, 2)) == 3
    assert negotiate((2,)) is None
    assert negotiate(()) is None
    assert negotiate((1,), ()) is None


# -------------------------------------------------------------------------------- requests and pings
def test_request_ids_increment_and_responses_come_back() -> None:
    p = ConnectionPair()
    rids = []
    for op, args in ((Op.LOGIN, ("tok", "alice", None, 0)), (Op.ONLINE_STATUS, ("bob",)), (Op.LOGOUT, ())):
        rid, data = p.client.request(op, args)
        [req] = p.c2s(data)
        assert req == Request(rid, op, args)
        rids.append(rid)
    assert rids == [1, 2, 3] and p.server.in_seq == 3
    # responses may come in any order; each takes the next server seq
    assert p.s2c(p.server.respond(2, 0, 1)) == [Response(1, 2, 0, 1)]
    assert p.s2c(p.server.respond(1, 0, {"session": "s"})) == [Response(2, 1, 0, {"session": "s"})]
    assert p.client.in_seq == 2 and p.server.out_seq == 2
    assert Connection(Role.CLIENT).request(Op.LOGOUT)[0] == 1  # per connection


def test_request_ids_come_from_the_client_sequence_shared_with_sends() -> None:
    p = ConnectionPair()
    r1, d1 = p.client.request(Op.LOGIN, ("tok", "alice", None, 0))
    s2, d2 = p.client.send(TargetKind.PEER, "bob", 0, "a")
    s3, d3 = p.client.send(TargetKind.PEER, "bob", 2, "b", reliable=False)
    r4, d4 = p.client.request(Op.JOIN_ROOM, ("room", 0))
    s5, d5 = p.client.send(TargetKind.ROOM, "room", 0, b"c")
    r6, d6 = p.client.request(Op.LOGOUT)
    assert (r1, s2, s3, r4, s5, r6) == (1, 2, 3, 4, 5, 6) and p.client.out_seq == 6
    # requests are held until acked, like reliable sends; the unreliable send is not
    assert p.client.unacked_frames() == [d1, d2, d4, d5, d6]
    assert p.client.unacked_tags() == [None] * 5
    got = p.c2s(d1, d2, d3, d4, d5, d6)
    assert got == [Request(1, Op.LOGIN, ("tok", "alice", None, 0)), Send(2, 0, "bob", 0, "a"),
                   Send(3, 0, "bob", 2, "b"), Request(4, Op.JOIN_ROOM, ("room", 0)),
                   Send(5, 1, "room", 0, b"c"), Request(6, Op.LOGOUT)]
    assert p.server.in_seq == 6
    assert p.s2c(acked(p.server)) == [Acked(6, ())]
    assert p.client.unacked_count == 0 and p.client.peer_acked == 6


def test_request_ids_skip_numbers_taken_by_unreliable_sends_and_the_server_accepts_the_gap() -> None:
    p = ConnectionPair()
    _, lost = p.client.send(TargetKind.PEER, "bob", 1, "lost", reliable=False)
    rid, data = p.client.request(Op.ONLINE_STATUS, ("bob",))
    assert rid == 2
    assert p.c2s(data) == [Request(2, Op.ONLINE_STATUS, ("bob",))]  # seq 1 never arrived
    assert p.c2s(lost) == [None]  # arriving late it is taken as a duplicate
    assert p.s2c(acked(p.server)) == [Acked(2, ())]


def test_the_server_sequence_is_shared_by_response_result_deliver_and_notice() -> None:
    p = ConnectionPair()
    rid, req = p.client.request(Op.LOGIN, ("tok", "alice", None, 0))
    seq, send = p.client.send(TargetKind.PEER, "bob", 0, "x")
    p.c2s(req, send)
    r1 = p.server.respond(rid, 0, {"session": "s-1"})
    d2 = p.server.deliver(PEER, "bob", None, "hi", tag="d2")
    u = p.server.deliver(ROOM, "bob", "room", "fast", reliable=False)
    r3 = p.server.result(0, (seq,))
    n4 = p.server.notice(NoticeKind.USER_JOINED, ("room", "carol", 5), tag="n4")
    d5 = p.server.deliver_tail(encode_deliver_tail(ROOM, "carol", "room", b"all"), tag="d5")
    r6 = p.server.result(1, (seq,), b"body")
    assert [d2[0], u[0], n4[0], d5[0]] == [2, 0, 4, 5] and p.server.out_seq == 6
    assert p.server.unacked_frames() == [r1, d2[1], r3, n4[1], d5[1], r6]
    assert p.server.unacked_tags() == [None, "d2", None, "n4", "d5", None]
    got = p.s2c(r1, d2[1], u[1], r3, n4[1], d5[1], r6)
    assert got == [Response(1, rid, 0, {"session": "s-1"}), Deliver(2, PEER, "bob", None, "hi"),
                   Deliver(0, ROOM, "bob", "room", "fast"), Result(3, 0, (seq,)),
                   Notice(4, NoticeKind.USER_JOINED, ("room", "carol", 5)),
                   Deliver(5, ROOM, "carol", "room", b"all"), Result(6, 1, (seq,), b"body")]
    assert p.client.in_seq == 6
    assert p.c2s(acked(p.client)) == [Acked(6, ("d2", "n4", "d5"))]
    assert p.server.unacked_count == 0


def test_responses_and_results_are_deduplicated_and_acked() -> None:
    p = ConnectionPair()
    rid, req = p.client.request(Op.ONLINE_STATUS, ("bob",))
    seq, send = p.client.send(TargetKind.PEER, "bob", 0, "x")
    p.c2s(req, send)
    resp = p.server.respond(rid, 0, 1)
    res = p.server.result(3, (seq,))
    got = p.s2c(resp, resp, res, resp, res, res)
    assert got == [Response(1, rid, 0, 1), None, Result(2, 3, (seq,)), None, None, None]
    assert p.client.in_seq == 2
    assert p.c2s(acked(p.client)) == [Acked(2, ())]
    assert p.client.ack() is None
    assert p.server.unacked_count == 0 and p.server.peer_acked == 2
    assert p.s2c(resp, res) == [None, None]  # still duplicates after the ack
    assert p.client.ack() is None


def test_an_ack_frees_responses_and_results_up_to_its_seq_only() -> None:
    p = ConnectionPair()
    frames = [p.server.respond(1, 0), p.server.result(0, (1,)), p.server.respond(2, 0)]
    p.s2c(frames[0])
    assert p.c2s(acked(p.client)) == [Acked(1, ())]
    assert p.server.unacked_frames() == frames[1:]
    p.s2c(*frames[1:])
    assert p.c2s(acked(p.client)) == [Acked(3, ())]
    assert p.server.unacked_frames() == []


def test_ping_pong_both_ways() -> None:
    p = ConnectionPair()
    assert p.c2s(p.client.ping(5)) == [Ping(5)]
    assert p.s2c(p.server.pong(5)) == [Pong(5)]
    assert p.s2c(p.server.ping(6)) == [Ping(6)]
    assert p.c2s(p.client.pong(6)) == [Pong(6)]
    assert p.client.ack() is None and p.server.ack() is None  # not sequenced


# --------------------------------------------------------------------------------- client sequences
def test_client_send_seqs_increment_and_unreliable_ones_are_not_kept() -> None:
    p = ConnectionPair()
    s1, d1 = p.client.send(TargetKind.PEER, "bob", 0, "one")
    s2, d2 = p.client.send(TargetKind.PEER, "bob", 1, "two", reliable=False)
    s3, d3 = p.client.send(TargetKind.ROOM, "room", 0, b"three")
    assert (s1, s2, s3) == (1, 2, 3)
    assert p.client.out_seq == 3
    assert p.client.unacked_count == 2
    assert p.client.unacked_frames() == [d1, d3]
    assert p.c2s(d1, d2, d3) == [Send(1, 0, "bob", 0, "one"), Send(2, 0, "bob", 1, "two"),
                                 Send(3, 1, "room", 0, b"three")]
    assert p.server.in_seq == 3
    assert p.s2c(p.server.result(0, (1, 2, 3))) == [Result(1, 0, (1, 2, 3))]
    assert p.s2c(acked(p.server)) == [Acked(3, ())]  # a client's frames carry no tags
    assert p.client.unacked_count == 0 and p.client.peer_acked == 3


# ------------------------------------------------------------------------------------------ duplicates
def _sequenced(p: ConnectionPair, kind: str) -> Tuple[Connection, bytes]:
    """One sequenced frame of ``kind``, made by the side that sends it: (sender, bytes)."""
    if kind == "send":
        return p.client, p.client.send(TargetKind.PEER, "bob", 0, "x")[1]
    if kind == "request":
        return p.client, p.client.request(Op.ONLINE_STATUS, ("bob",))[1]
    if kind == "deliver":
        return p.server, p.server.deliver(PEER, "alice", None, "x")[1]
    if kind == "response":
        return p.server, p.server.respond(1, 0, 1)
    if kind == "result":
        return p.server, p.server.result(0, (1,))
    return p.server, p.server.notice(NoticeKind.USER_JOINED, ("room", "alice", 0))[1]


@pytest.mark.parametrize("kind", ["send", "request", "deliver", "notice", "response", "result"])
def test_duplicated_frames_are_dropped(kind: str) -> None:
    p = ConnectionPair()
    made = [_sequenced(p, kind) for _ in range(3)]
    sender = made[0][0]
    receiver = p.peer(sender)
    f1, f2, f3 = (data for _, data in made)
    got = p.move(sender, f1, f1, f2, f1, f2, f3, f3, f2)
    assert [ev is not None for ev in got] == [True, False, True, False, False, True, False, False]
    assert [getattr(ev, "seq", getattr(ev, "rid", None)) for ev in got if ev is not None] == [1, 2, 3]
    assert receiver.in_seq == 3


def test_mixed_stream_fed_duplicated_in_both_directions() -> None:
    p = ConnectionPair()
    down = [p.server.deliver(PEER, "bob", None, "m%d" % i)[1] for i in range(2)]
    down.append(p.server.notice(NoticeKind.ROOM_STATE, ("r", 0, "{}"))[1])
    down += [p.server.deliver(ROOM, "bob", "r", "m%d" % i)[1] for i in range(2)]
    up = [p.client.send(TargetKind.PEER, "bob", 0, b"%d" % i)[1] for i in range(4)]
    for frames, move in ((down, p.s2c), (up, p.c2s)):
        once = [ev for ev in move(*[f for f in frames for _ in range(2)]) if ev is not None]
        assert [ev.seq for ev in once] == [1, 2, 3, 4, 5][:len(frames)]
    assert p.client.in_seq == 5 and p.server.in_seq == 4


def test_unreliable_delivers_have_seq_0_and_are_never_deduplicated() -> None:
    p = ConnectionPair()
    seq, data = p.server.deliver(ROOM, "alice", "room", "fast", reliable=False, tag="ignored")
    assert seq == 0 and p.server.out_seq == 0 and p.server.unacked_count == 0
    _, reliable = p.server.deliver(ROOM, "alice", "room", "slow")
    got = p.s2c(data, data, reliable, data, reliable)
    assert got == [Deliver(0, ROOM, "alice", "room", "fast")] * 2 + [
        Deliver(1, ROOM, "alice", "room", "slow"), Deliver(0, ROOM, "alice", "room", "fast"), None]
    assert p.client.in_seq == 1


# ------------------------------------------------------------------------------------------------ acks
def test_cumulative_ack_frees_unacked_and_returns_tags_in_order() -> None:
    p = ConnectionPair()
    frames = [p.server.deliver(PEER, "alice", None, "a", tag="t1")[1],
              p.server.deliver(PEER, "alice", None, "b", tag="t2")[1],
              p.server.deliver(PEER, "alice", None, "c")[1],  # untagged
              p.server.notice(NoticeKind.KICKED, (1,), tag="t4")[1]]
    p.server.deliver(PEER, "alice", None, "d", reliable=False, tag="never kept")
    assert p.server.out_seq == 4 and p.server.unacked_tags() == ["t1", "t2", None, "t4"]
    p.s2c(*frames[:2])
    assert p.c2s(acked(p.client)) == [Acked(2, ("t1", "t2"))]
    assert p.server.peer_acked == 2 and p.server.unacked_frames() == frames[2:]
    p.s2c(*frames[2:])
    assert p.c2s(acked(p.client)) == [Acked(4, ("t4",))]
    assert p.server.unacked_count == 0
    assert p.c2s(encode(Ack(1))) == [Acked(1, ())]  # stale: changes nothing
    assert p.server.peer_acked == 4


def test_ack_between_two_reliable_sends_frees_only_the_older() -> None:
    p = ConnectionPair()
    d1 = p.client.send(TargetKind.PEER, "bob", 0, "1")[1]
    p.client.send(TargetKind.PEER, "bob", 1, "2", reliable=False)
    d3 = p.client.send(TargetKind.PEER, "bob", 0, "3")[1]
    assert p.s2c(encode(Ack(2))) == [Acked(2, ())]
    assert p.client.unacked_frames() == [d3] and d1 != d3


@pytest.mark.parametrize("side", ["client", "server"])
def test_ack_beyond_out_seq_rejected(side: str) -> None:
    p = ConnectionPair()
    p.server.deliver(PEER, "a", None, "x")
    p.client.send(TargetKind.PEER, "b", 0, "x")
    conn = getattr(p, side)
    assert conn.out_seq == 1
    rejected(conn, encode(Ack(2)))


def test_ack_returns_none_when_nothing_new() -> None:
    p = ConnectionPair()
    assert p.client.ack() is None and p.server.ack() is None
    data = p.server.deliver(PEER, "a", None, "x")[1]
    p.s2c(data)
    assert p.client.ack() == encode(Ack(1))
    assert p.client.ack() is None
    p.s2c(data)  # duplicate
    p.s2c(p.server.deliver(PEER, "a", None, "y", reliable=False)[1])
    assert p.client.ack() is None
    p.s2c(p.server.notice(NoticeKind.KICKED, (0,))[1])
    assert p.client.ack() == encode(Ack(2))


# ----------------------------------------------------------------------------------------------- close
def _every_output(conn: Connection) -> List[Callable[[], Any]]:
    return [lambda: conn.ping(1), lambda: conn.pong(1), lambda: conn.close(1000),
            lambda: conn.request(Op.LOGOUT), lambda: conn.respond(1, 0),
            lambda: conn.send(TargetKind.PEER, "b", 0, "x"), lambda: conn.result(0, (1,)),
            lambda: conn.deliver(PEER, "a", None, "x"), lambda: conn.notice(NoticeKind.KICKED, (1,)),
            lambda: conn.deliver_tail(encode_deliver_tail(PEER, "a", None, "x"))]


@pytest.mark.parametrize("closer", ["client", "server"])
def test_after_close_nothing_is_accepted_or_sent(closer: str) -> None:
    p = ConnectionPair()
    conn = getattr(p, closer)
    other = p.peer(conn)
    p.s2c(p.server.deliver(PEER, "a", None, "x")[1])  # both sides took a sequenced frame,
    p.c2s(p.client.send(TargetKind.PEER, "b", 0, "x")[1])  # so ack() would have news
    assert p.move(conn, conn.close(CloseCode.GOING_AWAY, "restart")) == [Close(1001, "restart")]
    other.close(CloseCode.NORMAL, "bye too")  # answering a CLOSE with a CLOSE is allowed once
    for c in (conn, other):
        assert c.phase is ConnectionPhase.CLOSED
        assert c.ack() is None
        rejected(c, encode(Ping(2)))
        for out in _every_output(c):
            with pytest.raises(LocalProtocolError):
                out()
        assert c.out_seq == 1 and c.unacked_count == 1


def test_protocol_error_closes_the_connection() -> None:
    p = ConnectionPair()
    rejected(p.server, b"\xff")
    # the peer may still be told why, once
    assert p.s2c(p.server.close(CloseCode.PROTOCOL_ERROR, "bad")) == [Close(4400, "bad")]
    with pytest.raises(LocalProtocolError):
        p.server.close(CloseCode.PROTOCOL_ERROR)
    rejected(p.server, encode(Ping(1)))


def test_close_reason_is_cut_to_200_characters() -> None:
    p = ConnectionPair()
    assert p.c2s(p.client.close(1000, "\u00e9" * 500)) == [Close(1000, "\u00e9" * 200)]
