"""Connection state (rts_sync.protocol.connection): handshake, directions, sequences, acks, resume.

Everything goes through a ConnectionPair: a client and a server Connection with the wire between
them, fed frames in order, duplicated, replayed and malformed, in both directions. A resume is
``ConnectionPair.resume()``: both sides ``reopen()``, HELLO carries the session and the client's
last seq, WELCOME the server's, and each side sends what ``resume_from`` returns. No sockets, no
sleeps, no mocks.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rts_sync.errors import LocalProtocolError, RemoteProtocolError
from rts_sync.protocol import (
    MAX_PAYLOAD,
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
    decode,
    default_max_frame,
    encode,
    encode_deliver_tail,
    negotiate,
)

PEER, ROOM = DeliverKind.PEER, DeliverKind.ROOM


class ConnectionPair:
    """A client Connection and a server Connection, and a wire that moves bytes between them."""

    def __init__(self, handshake: bool = True) -> None:
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)
        if handshake:
            self.handshake()

    def peer(self, conn: Connection) -> Connection:
        return self.server if conn is self.client else self.client

    def move(self, sender: Connection, *frames: bytes) -> List[Any]:
        """Feed ``frames``, sent by ``sender``, to the other side; what its receive() returned."""
        receiver = self.peer(sender)
        return [receiver.receive(data) for data in frames]

    def c2s(self, *frames: bytes) -> List[Any]:
        return self.move(self.client, *frames)

    def s2c(self, *frames: bytes) -> List[Any]:
        return self.move(self.server, *frames)

    def handshake(self) -> None:
        [hello] = self.c2s(self.client.hello("app-1", "test"))
        version = negotiate(hello.versions)
        assert version is not None
        [welcome] = self.s2c(self.server.welcome(version, {"max_payload": MAX_PAYLOAD}))
        assert welcome.version == version

    def resume(self, session_id: str = "s-1",
               keep: Optional[Callable[[Any], bool]] = None) -> Tuple[List[bytes], List[bytes]]:
        """A new WebSocket for the same session, as the server and the SDK do it.

        Both sides ``reopen()``; the client's HELLO asks to resume ``session_id`` with its last
        seq; the server frees what that acknowledges, answers WELCOME ``resumed``/``last_seq``; the
        client frees what that acknowledges. Returns (server replay, client resend), not yet moved.
        """
        self.client.reopen()
        self.server.reopen()
        assert self.client.phase is self.server.phase is ConnectionPhase.HANDSHAKE
        [hello] = self.c2s(self.client.hello("app-1", "test", session_id=session_id))
        assert hello.resume == (session_id, self.client.in_seq)
        replay = self.server.resume_from(hello.resume[1], keep=keep)[1]
        [welcome] = self.s2c(self.server.welcome(
            1, {"resumed": True, "last_seq": self.server.in_seq}))
        assert (self.client.phase, self.server.phase) == (ConnectionPhase.OPEN, ConnectionPhase.OPEN)
        resend = self.client.resume_from(welcome.params["last_seq"])[1]
        return replay, resend


def acked(conn: Connection) -> bytes:
    """``conn.ack()``, which must have something new to acknowledge."""
    data = conn.ack()
    assert data is not None
    return data


def rejected(conn: Connection, data: bytes, code: int = CloseCode.PROTOCOL_ERROR) -> None:
    """``conn`` must refuse ``data`` with a RemoteProtocolError of ``code``, and be CLOSED after."""
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(data)
    assert info.value.code == code
    assert conn.phase is ConnectionPhase.CLOSED


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


# ---------------------------------------------------------------------------------------------- resume
def test_full_resume_takes_every_frame_exactly_once_in_order() -> None:
    p = ConnectionPair()
    by_server: List[Any] = []  # what each side took, over both sockets
    by_client: List[Any] = []

    def up(*frames: bytes) -> List[Any]:
        got = p.c2s(*frames)
        by_server.extend(ev for ev in got if isinstance(ev, (Request, Send)))
        return got

    def down(*frames: bytes) -> List[Any]:
        got = p.s2c(*frames)
        by_client.extend(ev for ev in got if isinstance(ev, (Response, Result, Deliver, Notice)))
        return got

    # ---- first socket: login, acknowledged both ways
    rid1, login = p.client.request(Op.LOGIN, ("tok", "alice", None, 0))
    up(login)
    down(p.server.respond(rid1, 0, {"session": "s-1"}))  # server seq 1
    assert up(acked(p.client)) == [Acked(1, ())]
    assert down(acked(p.server)) == [Acked(1, ())]
    assert p.client.unacked_count == p.server.unacked_count == 0
    # ---- then traffic both ways, partly lost with the socket
    _, s2 = p.client.send(TargetKind.PEER, "bob", 0, "m2")
    _, s3 = p.client.send(TargetKind.PEER, "bob", 2, "m3", reliable=False)
    rid4, r4 = p.client.request(Op.JOIN_ROOM, ("room", 0))
    _, s5 = p.client.send(TargetKind.ROOM, "room", 0, "m5")
    rid6, r6 = p.client.request(Op.ONLINE_STATUS, ("bob",))
    _, s7 = p.client.send(TargetKind.PEER, "bob", 2, "m7", reliable=False)
    up(s2, s3, r4)  # s5, r6 and s7 are lost
    res2 = p.server.result(0, (2,))
    resp3 = p.server.respond(rid4, 0, {"members": ["bob"], "join_type": 0})
    _, d4 = p.server.deliver(PEER, "bob", None, "hi", tag="d4")
    _, u0 = p.server.deliver(ROOM, "bob", "room", "fast", reliable=False)
    _, n5 = p.server.notice(NoticeKind.USER_JOINED, ("room", "carol", 0), tag="n5")
    _, d6 = p.server.deliver(ROOM, "carol", "room", b"all", tag="d6")
    res7 = p.server.result(0, (3,))
    down(res2, resp3)
    assert up(acked(p.client)) == [Acked(3, ())]  # frees res2 and resp3
    down(d4, u0)  # taken, but the client's ACK(4) is lost, as is the server's ACK(4)
    assert p.client.ack() == encode(Ack(4)) and p.server.ack() == encode(Ack(4))
    assert p.client.unacked_frames() == [s2, r4, s5, r6]
    assert p.server.unacked_frames() == [d4, n5, d6, res7]

    # ---- second socket: resume
    replay, resend = p.resume("s-1")
    assert replay == [n5, d6, res7]  # d4 is freed by the HELLO's last_seq 4
    assert resend == [s5, r6]  # s2 and r4 are freed by the WELCOME's last_seq 4; s7 is gone
    # a confused sender sends everything twice: the copies are dropped
    assert down(*replay, *replay)[3:] == [None] * 3
    assert up(*resend, *resend)[2:] == [None] * 2
    assert by_server == [Request(1, Op.LOGIN, ("tok", "alice", None, 0)), Send(2, 0, "bob", 0, "m2"),
                         Send(3, 0, "bob", 2, "m3"), Request(4, Op.JOIN_ROOM, ("room", 0)),
                         Send(5, 1, "room", 0, "m5"), Request(6, Op.ONLINE_STATUS, ("bob",))]
    assert by_client == [Response(1, 1, 0, {"session": "s-1"}), Result(2, 0, (2,)),
                         Response(3, 4, 0, {"members": ["bob"], "join_type": 0}),
                         Deliver(4, PEER, "bob", None, "hi"), Deliver(0, ROOM, "bob", "room", "fast"),
                         Notice(5, NoticeKind.USER_JOINED, ("room", "carol", 0)),
                         Deliver(6, ROOM, "carol", "room", b"all"), Result(7, 0, (3,))]
    assert (rid4, rid6) == (4, 6)
    assert up(acked(p.client)) == [Acked(7, ("n5", "d6"))]
    assert down(acked(p.server)) == [Acked(6, ())]
    assert p.client.unacked_count == p.server.unacked_count == 0
    # both sequences go on where they were
    assert p.client.request(Op.LOGOUT)[0] == 8
    assert p.server.notice(NoticeKind.KICKED, (1,))[0] == 8


def test_resume_with_nothing_lost_resends_nothing() -> None:
    p = ConnectionPair()
    p.c2s(p.client.request(Op.LOGIN, ("tok", "alice", None, 0))[1])
    p.s2c(p.server.respond(1, 0, {"session": "s-1"}))
    assert p.resume() == ([], [])  # the HELLO and WELCOME acknowledged everything
    assert p.client.unacked_count == p.server.unacked_count == 0
    assert p.client.peer_acked == p.server.peer_acked == 1


def test_resume_of_a_client_that_took_nothing() -> None:
    p = ConnectionPair()
    frames = [p.server.notice(NoticeKind.USER_LEFT, ("r", "bob", 1))[1], p.server.respond(1, 0)]
    replay, resend = p.resume()
    assert replay == frames and resend == []
    assert [ev.seq for ev in p.s2c(*replay)] == [1, 2]


def test_frames_made_between_sockets_are_held_and_replayed() -> None:
    """A message for a client whose socket is gone (within the resume window) waits in unacked."""
    p = ConnectionPair()
    p.server.reopen()  # the socket died; no HELLO yet
    _, d1 = p.server.deliver(PEER, "bob", None, "while away", tag="d1")
    _, s1 = p.client.send(TargetKind.PEER, "bob", 0, "from the client")  # queued by the SDK
    replay, resend = p.resume()
    assert (replay, resend) == ([d1], [s1])
    assert p.s2c(*replay) == [Deliver(1, PEER, "bob", None, "while away")]
    assert p.c2s(*resend) == [Send(1, PEER, "bob", 0, "from the client")]


def test_keep_drops_tagged_frames_for_good_and_the_client_accepts_the_gap() -> None:
    p = ConnectionPair()
    sent = [p.server.deliver(PEER, "bob", None, "m%d" % i, tag="d%d" % i)[1] for i in (1, 2, 3)]
    sent.append(p.server.respond(1, 0))  # seq 4, untagged
    sent.append(p.server.deliver(PEER, "bob", None, "m5", tag="d5")[1])
    p.s2c(sent[0])  # the client took 1; the rest was lost
    asked: List[Any] = []

    def keep(tag: Any) -> bool:
        asked.append(tag)
        return tag != "d3"  # timed out meanwhile: the sender was told TIMEOUT

    replay, resend = p.resume(keep=keep)
    assert asked == ["d2", "d3", "d5"]  # untagged frames are always kept, never asked about
    assert replay == [sent[1], sent[3], sent[4]] and resend == []
    assert p.server.unacked_tags() == ["d2", None, "d5"]
    assert [ev.seq for ev in p.s2c(*replay)] == [2, 4, 5]  # no 3: a gap, accepted
    assert p.c2s(acked(p.client)) == [Acked(5, ("d2", "d5"))]
    assert p.server.unacked_count == 0
    assert p.s2c(sent[2]) == [None]  # had it come after all, it would be a duplicate


def test_keep_dropping_the_newest_frame_leaves_a_gap_before_the_next_one() -> None:
    p = ConnectionPair()
    d1 = p.server.deliver(PEER, "bob", None, "m1", tag="d1")[1]
    p.server.deliver(PEER, "bob", None, "m2", tag="d2")
    replay, _ = p.resume(keep=lambda tag: tag != "d2")
    assert replay == [d1]
    assert p.s2c(*replay)[0].seq == 1
    seq, d3 = p.server.deliver(PEER, "bob", None, "m3", tag="d3")
    assert seq == 3 and p.s2c(d3)[0].seq == 3
    assert p.c2s(acked(p.client)) == [Acked(3, ("d1", "d3"))]


def test_keep_is_not_asked_about_frames_the_peer_already_has() -> None:
    p = ConnectionPair()
    frames = [p.server.deliver(PEER, "bob", None, "m", tag=i)[1] for i in (1, 2, 3)]
    p.s2c(*frames[:2])
    asked: List[Any] = []
    replay, _ = p.resume(keep=lambda tag: asked.append(tag) is None)
    assert asked == [3] and replay == frames[2:]


@pytest.mark.parametrize("side", ["client", "server"])
def test_resume_from_beyond_out_seq_is_a_remote_protocol_error(side: str) -> None:
    p = ConnectionPair()
    p.client.send(TargetKind.PEER, "bob", 0, "x")
    p.client.request(Op.LOGOUT)
    p.server.deliver(PEER, "bob", None, "x", tag="t")
    conn = getattr(p, side)
    before = conn.unacked_frames()
    conn.reopen()
    with pytest.raises(RemoteProtocolError) as info:
        conn.resume_from(conn.out_seq + 1)
    assert info.value.code == CloseCode.PROTOCOL_ERROR
    assert conn.unacked_frames() == before and conn.peer_acked == 0  # nothing freed
    assert conn.resume_from(conn.out_seq)[1] == []  # exactly out_seq is fine


def test_hello_claiming_more_than_the_server_sent_is_refused() -> None:
    """A HELLO whose last_seq the server never reached (a stale or forged session)."""
    p = ConnectionPair()
    p.s2c(p.server.deliver(PEER, "bob", None, "x")[1])
    p.server.reopen()
    [hello] = p.c2s(encode(Hello((1,), "app-1", "", ("s-1", 2))))
    with pytest.raises(RemoteProtocolError):
        p.server.resume_from(hello.resume[1])
    assert p.server.unacked_count == 1


@pytest.mark.parametrize(
    "ev", [Request(1, Op.LOGOUT), Send(1, 0, "bob", 0, "x"), Ack(0), Ping(1), Pong(1)], ids=repr)
def test_a_reopened_server_wants_hello_first(ev: Event) -> None:
    p = ConnectionPair()
    p.c2s(p.client.send(TargetKind.PEER, "bob", 0, "x")[1])
    p.server.reopen()
    assert p.server.phase is ConnectionPhase.HANDSHAKE
    rejected(p.server, encode(ev))


@pytest.mark.parametrize(
    "ev", [Response(1, 1, 0), Result(1, 0, (1,)), Deliver(1, PEER, "bob", None, "x"),
           Deliver(0, PEER, "bob", None, "x"), Notice(1, NoticeKind.KICKED, (1,)), Ack(0), Ping(1)],
    ids=repr)
def test_a_reopened_client_wants_welcome_first(ev: Event) -> None:
    p = ConnectionPair()
    p.s2c(p.server.deliver(PEER, "bob", None, "x")[1])
    p.client.reopen()
    assert p.client.phase is ConnectionPhase.HANDSHAKE
    p.client.hello("app-1", session_id="s-1")
    rejected(p.client, encode(ev))


def test_a_second_hello_or_welcome_after_a_resume_is_refused() -> None:
    p = ConnectionPair()
    p.resume()
    rejected(p.server, p.client.hello("app-1", session_id="s-1"))
    q = ConnectionPair()
    q.resume()
    rejected(q.client, encode(Welcome(1, {"resumed": True, "last_seq": 0})))


def test_reopen_twice_in_a_row_and_resume_again_later() -> None:
    p = ConnectionPair()
    taken_by_client: List[int] = []
    taken_by_server: List[int] = []
    for round_ in range(4):
        _, s = p.client.send(TargetKind.PEER, "bob", 0, "c%d" % round_)
        _, d = p.server.deliver(PEER, "bob", None, "s%d" % round_, tag=round_)
        if round_ % 2:  # every other socket dies before anything got through
            p.client.reopen()
            p.server.reopen()  # a second reopen before any handshake changes nothing
        replay, resend = p.resume()
        taken_by_client += [ev.seq for ev in p.s2c(*replay, d) if ev is not None]
        taken_by_server += [ev.seq for ev in p.c2s(*resend, s) if ev is not None]
    assert taken_by_client == taken_by_server == [1, 2, 3, 4]
    assert p.client.out_seq == p.server.out_seq == 4


def test_reopen_after_close_allows_a_new_handshake() -> None:
    p = ConnectionPair()
    _, d1 = p.server.deliver(PEER, "bob", None, "x", tag="d1")
    p.s2c(p.server.close(CloseCode.GOING_AWAY, "restart"))
    assert p.client.phase is p.server.phase is ConnectionPhase.CLOSED
    replay, _ = p.resume()
    assert replay == [d1]
    assert p.s2c(*replay)[0].seq == 1
    assert p.c2s(p.client.close(CloseCode.NORMAL)) == [Close(1000)]  # and close again, once


def test_reopen_makes_the_next_ack_acknowledge_everything_again() -> None:
    p = ConnectionPair()
    p.s2c(*[p.server.deliver(PEER, "bob", None, "x")[1] for _ in range(3)])
    p.c2s(*[p.client.send(TargetKind.PEER, "bob", 0, "x")[1] for _ in range(2)])
    assert p.client.ack() == encode(Ack(3)) and p.server.ack() == encode(Ack(2))
    assert p.client.ack() is None and p.server.ack() is None
    p.resume()
    assert p.client.ack() == encode(Ack(3)) and p.server.ack() == encode(Ack(2))
    assert p.client.ack() is None and p.server.ack() is None
    assert p.c2s(encode(Ack(3))) == [Acked(3, ())]  # a repeated ACK changes nothing


def test_reopen_keeps_both_sequences_and_the_unacked_frames() -> None:
    p = ConnectionPair()
    _, s1 = p.client.send(TargetKind.PEER, "bob", 0, "x")
    _, r2 = p.client.request(Op.LOGOUT)
    resp = p.server.respond(2, 0)
    _, n2 = p.server.notice(NoticeKind.KICKED, (1,), tag="n")
    p.s2c(resp)
    state = [(c.out_seq, c.in_seq, c.peer_acked, c.unacked_frames()) for c in (p.client, p.server)]
    p.client.reopen()
    p.server.reopen()
    assert [(c.out_seq, c.in_seq, c.peer_acked, c.unacked_frames())
            for c in (p.client, p.server)] == state == [(2, 1, 0, [s1, r2]), (2, 0, 0, [resp, n2])]


def test_resume_from_reports_the_tags_it_frees() -> None:
    p = ConnectionPair()
    frames = [p.server.deliver(PEER, "bob", None, "m%d" % i, tag="d%d" % i)[1] for i in (1, 2, 3)]
    p.s2c(*frames[:2])  # taken; the client's ACK(2) was lost with the socket
    p.client.reopen()
    p.server.reopen()
    [hello] = p.c2s(p.client.hello("app-1", session_id="s-1"))
    out = p.server.resume_from(hello.resume[1])
    # like receiving ACK(2), the HELLO's last_seq must tell the server which tagged frames it freed
    assert isinstance(out, tuple) and out[0] == Acked(2, ("d1", "d2")) and out[1] == [frames[2]]


@pytest.mark.parametrize("last_seq", ["1", None, 1.5, True, -1], ids=repr)
def test_resume_from_refuses_a_last_seq_that_is_not_a_seq(last_seq: Any) -> None:
    p = ConnectionPair()
    p.client.send(TargetKind.PEER, "bob", 0, "x")
    p.client.send(TargetKind.PEER, "bob", 0, "y")
    p.client.reopen()
    p.client.hello("app-1", session_id="s-1")
    welcome = p.client.receive(encode(Welcome(1, {"resumed": True, "last_seq": last_seq})))
    with pytest.raises(RemoteProtocolError):
        p.client.resume_from(welcome.params["last_seq"])


#: What may happen, one step at a time, to a session that loses its socket now and then.
STEPS = st.lists(st.sampled_from([
    "request", "send", "send_unreliable", "respond", "result", "deliver", "deliver_unreliable",
    "notice", "up", "up", "down", "down", "client_ack", "server_ack", "drop"]), max_size=80)


@settings(max_examples=300, deadline=None)
@given(STEPS, st.sets(st.integers(1, 80), max_size=10))
def test_any_losses_and_resumes_take_every_reliable_frame_exactly_once_in_order(
        steps: List[str], expired: Set[int]) -> None:
    p = ConnectionPair()
    up_wire: List[bytes] = []  # in flight on the current socket
    down_wire: List[bytes] = []
    sent_up: Dict[int, Any] = {}  # seq -> event, and whether it must arrive
    sent_down: Dict[int, Any] = {}
    must_up: List[int] = []
    must_down: List[int] = []
    dropped: List[int] = []
    taken_up: List[Any] = []
    taken_down: List[Any] = []

    def keep(tag: int) -> bool:
        if tag in expired:
            dropped.append(tag)
            return False
        return True

    def client_out(seq: int, data: bytes, reliable: bool = True) -> None:
        up_wire.append(data)
        sent_up[seq] = decode(data, default_max_frame())
        if reliable:
            must_up.append(seq)

    def server_out(seq: int, data: bytes, reliable: bool = True) -> None:
        down_wire.append(data)
        if reliable:
            sent_down[seq] = decode(data, default_max_frame())
            must_down.append(seq)

    def move_up() -> None:
        ev = p.server.receive(up_wire.pop(0))
        if isinstance(ev, (Request, Send)):
            taken_up.append(ev)

    def move_down() -> None:
        ev = p.client.receive(down_wire.pop(0))
        if isinstance(ev, (Response, Result, Notice)) or (isinstance(ev, Deliver) and ev.seq):
            taken_down.append(ev)

    for step in steps:
        if step == "request":
            client_out(*p.client.request(Op.ONLINE_STATUS, ("bob",)))
        elif step == "send":
            client_out(*p.client.send(TargetKind.PEER, "bob", 0, "m"))
        elif step == "send_unreliable":
            client_out(*p.client.send(TargetKind.PEER, "bob", 2, "u", reliable=False), reliable=False)
        elif step == "respond":
            data = p.server.respond(1, 0, "r")
            server_out(p.server.out_seq, data)
        elif step == "result":
            data = p.server.result(0, (1,))
            server_out(p.server.out_seq, data)
        elif step == "deliver":
            seq = p.server.out_seq + 1
            server_out(*p.server.deliver(PEER, "bob", None, "d", tag=seq))
        elif step == "deliver_unreliable":
            server_out(*p.server.deliver(PEER, "bob", None, "u", reliable=False), reliable=False)
        elif step == "notice":
            seq = p.server.out_seq + 1
            server_out(*p.server.notice(NoticeKind.USER_JOINED, ("r", "bob", 0), tag=seq))
        elif step == "up" and up_wire:
            move_up()
        elif step == "down" and down_wire:
            move_down()
        elif step == "client_ack":
            data = p.client.ack()
            if data is not None:
                up_wire.append(data)
        elif step == "server_ack":
            data = p.server.ack()
            if data is not None:
                down_wire.append(data)
        elif step == "drop":  # the socket dies with whatever was in flight
            up_wire.clear()
            down_wire.clear()
            replay, resend = p.resume(keep=keep)
            down_wire.extend(replay)
            up_wire.extend(resend)
    # the last socket lives on: everything in flight arrives, then both sides acknowledge
    for _ in range(2):
        while up_wire or down_wire:
            if up_wire:
                move_up()
            if down_wire:
                move_down()
        for conn, wire in ((p.client, up_wire), (p.server, down_wire)):
            data = conn.ack()
            if data is not None:
                wire.append(data)

    assert [ev.rid if isinstance(ev, Request) else ev.seq for ev in taken_up] == sorted(
        {ev.rid if isinstance(ev, Request) else ev.seq for ev in taken_up})  # in order, once
    assert [ev for ev in taken_up if (ev.rid if isinstance(ev, Request) else ev.seq) in must_up] == [
        sent_up[seq] for seq in must_up]
    assert all(ev == sent_up[ev.rid if isinstance(ev, Request) else ev.seq] for ev in taken_up)
    assert set(dropped) <= set(expired)
    assert taken_down == [sent_down[seq] for seq in must_down if seq not in dropped]
    assert p.client.unacked_count == p.server.unacked_count == 0
    assert (p.client.peer_acked, p.server.peer_acked) == (p.server.in_seq, p.client.in_seq)


# --------------------------------------------------------------------------------------------- limits
def test_frame_over_max_frame_is_a_local_error_and_changes_nothing() -> None:
    p = ConnectionPair()
    big = b"\x00" * default_max_frame()
    for out in (lambda: p.client.send(TargetKind.PEER, "bob", 0, big),
                lambda: p.client.request(Op.LOGIN, (big,)),
                lambda: p.server.deliver(PEER, "alice", None, big, tag="t"),
                lambda: p.server.result(0, (1,), big),
                lambda: p.server.respond(1, 0, big)):
        with pytest.raises(LocalProtocolError) as info:
            out()
        assert info.value.code == CloseCode.FRAME_TOO_LARGE
    assert p.client.out_seq == p.server.out_seq == 0
    assert p.client.unacked_count == p.server.unacked_count == 0
    seq, data = p.client.send(TargetKind.PEER, "bob", 0, b"\x00" * MAX_PAYLOAD)  # the max still fits
    assert seq == 1 and p.c2s(data)[0].payload == b"\x00" * MAX_PAYLOAD


def test_small_max_frame_both_ways() -> None:
    client, server = Connection(Role.CLIENT, max_frame=40), Connection(Role.SERVER, max_frame=40)
    data = client.hello("a" * 30)
    assert len(data) <= 40
    assert server.receive(data) == Hello((1,), "a" * 30)
    with pytest.raises(LocalProtocolError):
        client.hello("a" * 40)
    big = Connection(Role.CLIENT).hello("a" * 40)
    rejected(Connection(Role.SERVER, max_frame=40), big, CloseCode.FRAME_TOO_LARGE)


@pytest.mark.parametrize("build", [
    lambda c: c.send(7, "bob", 0, "x"),
    lambda c: c.send(TargetKind.PEER, 5, 0, "x"),
    lambda c: c.request(0),
    lambda c: c.request(Op.LOGIN, (object(),)),
    lambda c: c.close(5),
], ids=["send-kind", "send-target", "request-op", "request-args", "close-code"])
def test_invalid_local_frame_is_a_local_error(build: Callable[[Connection], Any]) -> None:
    p = ConnectionPair()
    with pytest.raises(LocalProtocolError):
        build(p.client)
