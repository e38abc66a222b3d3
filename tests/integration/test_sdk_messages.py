"""Peer-to-peer messages through the public API against the real server on loopback."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest
from conftest import WAIT, Recorder, login, token

import rts_sync
from rts_sync import (
    ClientClosed,
    ConnectionBrokenError,
    InvalidArgumentError,
    MessageConfig,
    MessageTooLargeError,
    NoReceiverError,
    NotLoggedInError,
    SendTimeoutError,
    UserMessageSendResult,
)


def test_2000_reliable_messages_arrive_complete_and_in_order(engines: Any) -> None:
    alice, arec = login(engines, "alice")
    bob, brec = login(engines, "bob")
    ops = [alice.send_message("bob", "m%d" % i) for i in range(2000)]
    assert [op.msg_id for op in ops] == list(range(1, 2001))
    assert all(op.result(WAIT) == UserMessageSendResult.SUCCESS for op in ops)
    got = brec.wait_count("msg", 2000)
    assert got == [("alice", "m%d" % i) for i in range(2000)]
    results = arec.wait_count("result", 2000)
    assert sorted(results) == [(i, 0) for i in range(1, 2001)]
    assert len(brec.of("msg")) == 2000  # nothing duplicated


def test_binary_round_trip_and_text_unicode(engines: Any) -> None:
    alice, _ = login(engines, "alice")
    bob, brec = login(engines, "bob")
    blobs = [bytes(range(256)) * 4, b"", b"\x00" * 65536]
    for b in blobs:
        assert alice.send_binary_message("bob", b).result(WAIT) == 0
    assert alice.send_message("bob", "你好, 🌍").result(WAIT) == 0
    assert [m for _, m in brec.wait_count("bin", 3)] == blobs
    assert brec.wait_count("msg", 1) == [("alice", "你好, 🌍")]
    assert alice.send_binary_message("bob", bytearray(b"ba")).result(WAIT) == 0
    assert brec.wait_count("bin", 4)[-1] == ("alice", b"ba")


def test_unreliable_messages(engines: Any) -> None:
    alice, _ = login(engines, "alice")
    bob, brec = login(engines, "bob")
    for cfg in (MessageConfig.UNRELIABLE_ORDERED, MessageConfig.UNRELIABLE_UNORDERED):
        assert alice.send_message("bob", "u%d" % cfg, cfg).result(WAIT) == 0
    assert [m for _, m in brec.wait_count("msg", 2)] == ["u1", "u2"]


def test_error_codes_through_operation_and_callback(engines: Any) -> None:
    alice, rec = login(engines, "alice")
    cases = [
        (alice.send_message("nobody", "x"), NoReceiverError, 3),
        (alice.send_message("not a valid id!", "x"), NoReceiverError, 3),
        (alice.send_message("alice", "x" * 65537), MessageTooLargeError, 103),
        (alice.send_message("alice", "é" * 32769), MessageTooLargeError, 103),  # 65538 UTF-8 bytes
        (alice.send_binary_message("alice", b"x" * 65537), MessageTooLargeError, 103),
    ]
    for op, cls, code in cases:
        with pytest.raises(cls) as ei:
            op.result(WAIT)
        assert ei.value.code == code
    results = dict(rec.wait_count("result", len(cases)))
    assert [results[op.msg_id] for op, _, _ in cases] == [c for _, _, c in cases]
    # exactly 64 KB is fine
    assert alice.send_message("alice", "y" * 65536).result(WAIT) == 0


def test_not_logged_in_and_call_time_errors(engines: Any) -> None:
    rts, rec = engines()
    op = rts.send_message("bob", "x")
    with pytest.raises(NotLoggedInError) as ei:
        op.result(WAIT)
    assert ei.value.code == 105 and op.msg_id == 1
    assert rec.wait_count("result", 1) == [(1, 105)]
    with pytest.raises(InvalidArgumentError) as ai:
        rts.send_message("", "x")
    assert ai.value.code == -2
    with pytest.raises(TypeError):
        rts.send_message("bob", b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rts.send_binary_message("bob", "text")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        rts.send_message("bob", "x", 7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        rts.send_message("bob", "\ud800")
    rts.destroy()
    with pytest.raises(ClientClosed) as ci:
        rts.send_message("bob", "x")
    assert ci.value.code == -1


def test_message_ids_are_shared_and_sequential_across_threads(engines: Any) -> None:
    alice, _ = login(engines, "alice")
    bob, brec = login(engines, "bob")
    ids: List[int] = []
    lock = threading.Lock()

    def sender(k: int) -> None:
        for i in range(200):
            op = alice.send_message("bob", "%d-%d" % (k, i))
            with lock:
                ids.append(op.msg_id)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == list(range(1, 801))
    got = brec.wait_count("msg", 800)
    for k in range(4):  # each sending thread's messages arrive in its order
        mine = [m for _, m in got if m.startswith("%d-" % k)]
        assert mine == ["%d-%d" % (k, i) for i in range(200)]


def test_pull_style_messages(engines: Any) -> None:
    alice, _ = login(engines, "alice")
    bob, _ = login(engines, "bob", parameters={"message_queue_size": 16})
    for i in range(50):  # more than the queue holds: the sender is slowed, nothing is lost
        alice.send_message("bob", "p%d" % i)
    alice.send_binary_message("bob", b"end")
    got = []
    for m in bob.messages(timeout=WAIT):
        got.append(m)
        if len(got) == 51:
            break
    assert [m.message for m in got[:50]] == ["p%d" % i for i in range(50)]
    assert got[50].binary and got[50].uid == "alice" and got[50].kind == "peer"
    with pytest.raises(rts_sync.InvalidStateError):
        next(alice.messages(timeout=0))


def test_server_going_away_fails_pending_sends_within_their_timeout() -> None:
    from conftest import APP_ID, APP_KEY

    from rts_sync.testing import serve_in_thread

    with serve_in_thread(apps={APP_ID: APP_KEY}) as srv:
        rec = Recorder()
        with rts_sync.create_rts(APP_ID, rec, {"send_timeout": 2.0}, server_url=srv.url) as alice, \
                rts_sync.create_rts(APP_ID, None, {"message_queue_size": 1},
                                    server_url=srv.url) as bob:
            alice.login(token("alice"), "alice").result(WAIT)
            bob.login(token("bob"), "bob").result(WAIT)
            # bob's queue of 1 is never drained: some of alice's messages stay unacknowledged
            ops = [alice.send_message("bob", "x" * 1000) for _ in range(20000)]
            srv.stop()
            errors = [op.exception(WAIT) for op in ops]
            # the server is gone for good: every message not confirmed fails, none hangs
            assert all(e is None or isinstance(e, (SendTimeoutError, ConnectionBrokenError))
                       for e in errors)
            assert any(e is not None for e in errors)
            rec.wait_for(lambda: any(s[0] == rts_sync.ConnectionState.RECONNECTING
                                     for s in rec.of("state")))
            assert alice.stats()["logged_in"] is True  # still wants to be: it keeps trying


def test_engines_through_a_separate_server_process(engines: Any) -> None:
    """The deployable rts-server process, not the in-process one: login, status, messages."""
    import subprocess
    import sys

    from conftest import APP_ID, APP_KEY

    proc = subprocess.Popen(
        [sys.executable, "-m", "rts_sync.server", "--app", "%s:%s" % (APP_ID, APP_KEY),
         "--host", "127.0.0.1", "--port", "0", "--log-level", "INFO"],
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                url = "ws://127.0.0.1:%d/rts" % port
                break
        assert url, "rts-server did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        alice, arec = login(engines, "alice", url=url)
        bob, brec = login(engines, "bob", url=url)
        assert alice.get_peer_online_status("bob").result(WAIT) == 1
        ops = [alice.send_message("bob", "n%d" % i) for i in range(500)]
        ops.append(bob.send_binary_message("alice", b"\x00bin"))
        assert all(op.result(WAIT) == 0 for op in ops)
        assert [m for _, m in brec.wait_count("msg", 500)] == ["n%d" % i for i in range(500)]
        assert arec.wait_count("bin", 1) == [("bob", b"\x00bin")]
        proc.terminate()
        assert proc.wait(10) == 0
        # the server went away (GOING_AWAY): the engine keeps its session and reconnects
        arec.wait_for(lambda: (rts_sync.ConnectionState.RECONNECTING,
                               rts_sync.ConnectionStateChangeReason.SERVER_CLOSED)
                      in arec.of("state"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_send_results_nobody_observes_skip_the_callback_thread_but_user_code_never_runs_on_io(
        server: Any, engines: Any) -> None:
    """With a handler that has no on_message_send_result, a result nobody waits for is resolved
    on the I/O thread; a done callback added to an operation still never runs there."""
    from conftest import APP_ID

    from rts_sync import RTSEventHandler

    with rts_sync.create_rts(APP_ID, RTSEventHandler(), server_url=server.url) as quiet:
        assert quiet.login(token("quiet"), "quiet").result(WAIT) == 0
        _quiet_sends(quiet, *login(engines, "bob"))


def _quiet_sends(quiet: Any, bob: Any, brec: Recorder) -> None:
    plain = [quiet.send_message("bob", "p%d" % i) for i in range(300)]
    watched = [quiet.send_message("bob", "w%d" % i) for i in range(300)]
    threads: List[str] = []
    done = threading.Event()
    lock = threading.Lock()

    def record(op: Any) -> None:
        with lock:
            threads.append(threading.current_thread().name)
            if len(threads) == len(watched):
                done.set()

    for op in watched:
        op.add_done_callback(record)
    assert [op.result(WAIT) for op in plain + watched] == [0] * 600
    assert done.wait(WAIT)
    assert not [t for t in threads if t.startswith("rts-io")]
    assert len(brec.wait_count("msg", 600)) == 600
