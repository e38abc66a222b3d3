"""Rooms through the public API against the real server on loopback: membership, presence,
broadcasts, codes, and the server's registry staying clean."""

from __future__ import annotations

import json
import threading
from typing import Any, List, Tuple

import pytest
from conftest import APP_ID, APP_KEY, WAIT, Recorder, RoomRecorder, login, metric, token

import rts_sync
from rts_sync import (
    ExceedQpsError,
    InvalidStateError,
    MessageTooLargeError,
    NotJoinedError,
    RoomError,
    RoomErrorCode,
    RoomMessageSendResult,
    RoomWarningCode,
    UserOfflineReason,
)
from rts_sync.testing import serve_in_thread


def joined(rts: rts_sync.RTS, room_id: str = "room1") -> Tuple[rts_sync.RTSRoom, RoomRecorder]:
    room = rts.create_room(room_id)
    rec = RoomRecorder()
    room.set_rts_room_event_handler(rec)
    assert room.join_room().result(WAIT) == 0
    return room, rec


def test_join_presence_and_leave(engines: Any) -> None:
    a, _ = login(engines, "alice")
    b, _ = login(engines, "bob")
    c, _ = login(engines, "carol")
    ra, reca = joined(a)
    [(room_id, uid, state, extra)] = reca.of("state")
    assert (room_id, uid, state) == ("room1", "alice", 0)
    info = json.loads(extra)
    assert info["join_type"] == 0 and 0 <= info["elapsed"] < WAIT * 1000
    rb, recb = joined(b)
    assert recb.wait_count("joined", 1) == [("alice", 0)]  # members already there
    assert reca.wait_count("joined", 1) == [("bob", 0)]
    rc, recc = joined(c)
    assert sorted(u for u, _ in recc.wait_count("joined", 2)) == ["alice", "bob"]
    reca.wait_count("joined", 2)
    assert recb.wait_count("joined", 2)[-1] == ("carol", 0)
    assert rb.joined and rb.room_id == "room1"
    # leaving: the leaver hears on_leave_room, the others on_user_leave(uid, QUIT)
    assert rb.leave_room().result(WAIT) == 0
    assert recb.of("left") == [()] and not rb.joined
    assert reca.wait_count("leave", 1) == [("bob", UserOfflineReason.QUIT)]
    assert recc.wait_count("leave", 1) == [("bob", 0)]
    # a dropped connection: the others see DROPPED
    c.destroy()
    assert reca.wait_count("leave", 2)[-1] == ("carol", UserOfflineReason.DROPPED)
    # logging out leaves every room as a quit
    a.logout().result(WAIT)
    rb.join_room().result(WAIT)
    b2, _ = login(engines, "dave")
    rd, recd = joined(b2)
    assert recd.wait_count("joined", 1) == [("bob", 0)]
    rb.leave_room().result(WAIT)
    rb.leave_room().result(WAIT)  # harmless when not in the room
    assert recd.wait_count("leave", 1) == [("bob", 0)]


def test_1000_broadcasts_from_two_senders_in_per_sender_order(engines: Any) -> None:
    a, _ = login(engines, "alice")
    b, _ = login(engines, "bob")
    c, _ = login(engines, "carol")
    ra, reca = joined(a)
    rb, recb = joined(b)
    rc, recc = joined(c)
    ops: List[Any] = []

    def send(room: rts_sync.RTSRoom, tag: str) -> None:
        ops.extend(room.send_room_message("%s%d" % (tag, i)) for i in range(1000))

    senders = [threading.Thread(target=send, args=(ra, "a")),
               threading.Thread(target=send, args=(rb, "b"))]
    for t in senders:
        t.start()
    for t in senders:
        t.join()
    assert all(op.result(WAIT) == RoomMessageSendResult.SUCCESS == 200 for op in ops)
    got = recc.wait_count("msg", 2000)
    for sender, tag in (("alice", "a"), ("bob", "b")):
        assert [m for u, m in got if u == sender] == ["%s%d" % (tag, i) for i in range(1000)]
    # each sender got the other's messages and none of its own
    assert {u for u, _ in reca.wait_count("msg", 1000)} == {"bob"}
    assert {u for u, _ in recb.wait_count("msg", 1000)} == {"alice"}
    results = reca.wait_count("result", 1000)
    assert sorted(results) == [(i, 200) for i in range(1, 1001)]
    assert len(recc.of("msg")) == 2000


def test_binary_broadcast_two_rooms_and_pull_queue(engines: Any) -> None:
    a, _ = login(engines, "alice")
    b, _ = login(engines, "bob", parameters={"message_queue_size": 100})
    ra1, _ = joined(a, "r1")
    ra2, _ = joined(a, "r2")
    rb1, recb1 = joined(b, "r1")
    rb2, recb2 = joined(b, "r2")
    assert ra1.send_room_binary_message(b"\x00\x01" * 100).result(WAIT) == 200
    assert ra2.send_room_message("to r2").result(WAIT) == 200
    assert ra1.send_room_binary_message(bytearray(b"x")).result(WAIT) == 200
    assert recb1.wait_count("bin", 2) == [("alice", b"\x00\x01" * 100), ("alice", b"x")]
    assert recb2.wait_count("msg", 1) == [("alice", "to r2")] and recb2.of("bin") == []
    got = []
    for m in b.messages(timeout=WAIT):
        got.append((m.kind, m.room_id, m.uid, m.message))
        if len(got) == 3:
            break
    assert sorted(got, key=repr) == sorted([("room", "r1", "alice", b"\x00\x01" * 100),
                                            ("room", "r2", "alice", "to r2"),
                                            ("room", "r1", "alice", b"x")], key=repr)


def test_room_codes(engines: Any) -> None:
    rts, rec = engines()
    room = rts.create_room("room1")
    rr = RoomRecorder()
    room.set_rts_room_event_handler(rr)
    with pytest.raises(InvalidStateError) as ei:
        room.join_room()  # not logged in
    assert ei.value.code == -3
    op = room.send_room_message("x")
    with pytest.raises(NotJoinedError) as ni:
        op.result(WAIT)
    assert ni.value.code == RoomMessageSendResult.NOT_JOIN == 100 and op.msg_id == 1
    assert rr.wait_count("result", 1) == [(1, 100)]
    rts.login(token("alice"), "alice").result(WAIT)
    room.join_room().result(WAIT)
    with pytest.raises(InvalidStateError) as ji:
        room.join_room()
    assert ji.value.code == -2
    for big in ("x" * 65537, b"x" * 65537):
        send = room.send_room_message if isinstance(big, str) else room.send_room_binary_message
        with pytest.raises(MessageTooLargeError) as ti:
            send(big).result(WAIT)  # type: ignore[arg-type]
        assert ti.value.code == 103
    assert room.send_room_message("y" * 65536).result(WAIT) == 200
    with pytest.raises(TypeError):
        room.send_room_message(b"x")  # type: ignore[arg-type]
    # create_room errors: callback and exception with the code
    for bad, code in (("bad room!", RoomErrorCode.ROOM_ID_ILLEGAL), ("", -1007),
                      ("x" * 129, -1007), ("room1", RoomErrorCode.ROOM_ALREADY_EXIST)):
        with pytest.raises(RoomError) as ri:
            rts.create_room(bad)
        assert ri.value.code == code
    created = rec.wait_count("create", 4)
    assert created == [("bad room!", -1007), ("", -1007), ("x" * 129, -1007), ("room1", -1013)]
    room.destroy()
    with pytest.raises(InvalidStateError):
        room.join_room()
    again = rts.create_room("room1")  # the id is free again
    assert again.join_room().result(WAIT) == 0


def test_room_rate_limit_gives_exceed_qps() -> None:
    with serve_in_thread(apps={APP_ID: APP_KEY}, limits={"room_qps": 1}) as srv:
        with rts_sync.create_rts(APP_ID, server_url=srv.url) as a:
            a.login(token("alice"), "alice").result(WAIT)
            room, _ = joined(a)
            assert room.send_room_message("1").result(WAIT) == 200
            with pytest.raises(ExceedQpsError) as ei:
                room.send_room_message("2").result(WAIT)
            assert ei.value.code == 5


def test_same_uid_joining_from_another_engine_replaces_the_old(engines: Any) -> None:
    old, old_rec = login(engines, "alice")
    bob, _ = login(engines, "bob")
    r_old, rec_old = joined(old)
    r_bob, rec_bob = joined(bob)
    new, _ = login(engines, "alice")
    assert rec_old.wait_count("state", 2)[-1] == ("room1", "alice",
                                                  RoomErrorCode.DUPLICATE_LOGIN, "")
    assert old_rec.wait_count("logout", 1) == [(1,)]
    assert rec_bob.wait_count("leave", 1) == [("alice", UserOfflineReason.DROPPED)]
    r_new, _ = joined(new)
    assert rec_bob.wait_count("joined", 2)[-1] == ("alice", 0)


def test_notify_limit_stops_presence_and_warns_once() -> None:
    with serve_in_thread(apps={APP_ID: APP_KEY}, limits={"room_notify_limit": 3}) as srv:
        engines = [rts_sync.create_rts(APP_ID, Recorder(), server_url=srv.url) for _ in range(5)]
        try:
            recs = []
            for i, e in enumerate(engines):
                e.login(token("u%d" % i), "u%d" % i).result(WAIT)
                recs.append(joined(e)[1])
            warn = ("room1", "u0", RoomWarningCode.USER_NOTIFY_STOP, "")
            recs[0].wait_for(lambda: warn in recs[0].of("state"))
            # u0 heard of u1 and u2 joining, then the warning, and nothing of u3, u4
            assert [u for u, _ in recs[0].of("joined")] == ["u1", "u2"]
            assert recs[0].of("state").count(warn) == 1
            assert recs[4].of("joined") == []  # a quiet room lists no members
        finally:
            for e in engines:
                e.destroy()


def test_churn_leaves_the_registry_empty(server: Any) -> None:
    engines = [rts_sync.create_rts(APP_ID, server_url=server.url) for _ in range(20)]
    try:
        for i, e in enumerate(engines):
            e.login(token("c%d" % i), "c%d" % i).result(WAIT)
        for _ in range(3):
            rooms = [e.create_room("churn%d" % (i % 4)) for i, e in enumerate(engines)]
            for op in [r.join_room() for r in rooms]:
                assert op.result(WAIT) == 0
            assert metric(server, "rts_room_members") == 20
            assert metric(server, "rts_rooms") == 4
            for i, r in enumerate(rooms):  # half leave, half destroy the room object
                if i % 2:
                    r.leave_room().result(WAIT)
                r.destroy()
        for e in engines:  # a final round trip per engine: every LEAVE has been handled
            assert e.get_peer_online_status("c0").result(WAIT) == 1
        assert metric(server, "rts_room_members") == 0
        assert metric(server, "rts_rooms") == 0
    finally:
        for e in engines:
            e.destroy()


def test_stuck_member_is_disconnected_and_others_get_everything() -> None:
    limits = {"send_queue_frames": 64, "slow_consumer_grace": 0.5}
    with serve_in_thread(apps={APP_ID: APP_KEY}, limits=limits) as srv:
        with rts_sync.create_rts(APP_ID, server_url=srv.url) as a, \
                rts_sync.create_rts(APP_ID, server_url=srv.url) as b, \
                rts_sync.create_rts(APP_ID, None, {"message_queue_size": 1,
                                                   "callback_queue_size": 8},
                                    server_url=srv.url) as stuck:
            for e, u in ((a, "alice"), (b, "bob"), (stuck, "stuck")):
                e.login(token(u), u).result(WAIT)
            ra, _ = joined(a)
            rb, recb = joined(b)
            joined(stuck)  # its queue of 1 is never read: it stops reading the socket
            ops = [ra.send_room_message("m%d-" % i + "x" * 1000) for i in range(3000)]
            assert all(op.result(WAIT * 3) == 200 for op in ops)
            got = recb.wait_count("msg", 3000, WAIT * 3)
            assert [m.split("-")[0] for _, m in got] == ["m%d" % i for i in range(3000)]
            assert metric(srv, "rts_slow_consumer_disconnects_total") == 1
