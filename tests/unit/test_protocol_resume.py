"""Resume: reopen(), resume_from() and replay, on a ConnectionPair (sans-IO, no sockets)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_pair import ConnectionPair, acked, rejected

from rts_sync.errors import LocalProtocolError, RemoteProtocolError
from rts_sync.protocol import (
    MAX_PAYLOAD,
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
)

PEER, ROOM = DeliverKind.PEER, DeliverKind.ROOM



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
