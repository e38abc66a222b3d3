"""Reconnect, resume and re-login through real faults (rts_sync.testing.FaultProxy) against the
real server; the chaos run is here too (once in the quick suite, 20 times under ``-m soak``)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

import psutil
import pytest
from conftest import APP_ID, APP_KEY, WAIT, Recorder, RoomRecorder, token, wait_no_threads

import rts_sync
from rts_sync import (
    ConnectionBrokenError,
    ConnectionState,
    ConnectionStateChangeReason,
    LoginErrorCode,
    SendTimeoutError,
    UserMessageSendResult,
    UserOfflineReason,
)
from rts_sync.testing import FaultProxy, serve_in_thread

S = ConnectionState
Reason = ConnectionStateChangeReason
FAST = {"heartbeat_interval": 0.5, "heartbeat_timeout": 0.8,
        "reconnect_backoff_base": 0.05, "reconnect_backoff_cap": 0.4}


@pytest.fixture
def proxy(server: Any) -> Iterator[FaultProxy]:
    with FaultProxy(server.host, server.port) as fp:
        yield fp


def make(url: str, uid: str, params: Any = None, room: str = "") -> Tuple[rts_sync.RTS, Recorder]:
    rec = Recorder()
    rts = rts_sync.create_rts(APP_ID, rec, dict(FAST, **(params or {})), server_url=url)
    rts.login(token(uid), uid).result(WAIT)
    return rts, rec


def test_resume_after_cuts_loses_nothing(server: Any, proxy: FaultProxy) -> None:
    alice, arec = make(proxy.url(), "alice")
    bob, brec = make(server.url, "bob")
    try:
        ops = []
        for i in range(300):
            ops.append(alice.send_message("bob", "a%d" % i))
            ops.append(bob.send_message("alice", "b%d" % i))
            if i in (100, 200):
                proxy.cut()
        assert all(op.result(WAIT) == 0 for op in ops)
        assert [m for _, m in brec.wait_count("msg", 300)] == ["a%d" % i for i in range(300)]
        assert [m for _, m in arec.wait_count("msg", 300)] == ["b%d" % i for i in range(300)]
        states = arec.of("state")
        assert (S.RECONNECTED, Reason.RESUMED) in states
        assert any(s == S.RECONNECTING for s, _ in states)
        assert len(brec.of("msg")) == 300 and len(arec.of("msg")) == 300  # no duplicates
    finally:
        alice.destroy()
        bob.destroy()
    assert wait_no_threads() == []


def run_chaos(seed: int, n: int = 1000, rooms: int = 200) -> Dict[str, Any]:
    """Two engines exchange ``n`` reliable messages each way and ``rooms`` room messages each
    while every connection is cut at random every 100-500 ms. Returns figures."""
    rng = random.Random(seed)
    with serve_in_thread(apps={APP_ID: APP_KEY}) as srv, FaultProxy(srv.host, srv.port) as fp:
        alice, arec = make(fp.url(), "alice")
        bob, brec = make(fp.url(), "bob")
        rooms_rec = {}
        room_objs = []
        for e, u in ((alice, "alice"), (bob, "bob")):
            r = e.create_room("chaos")
            rr = RoomRecorder()
            r.set_rts_room_event_handler(rr)
            r.join_room().result(WAIT)
            rooms_rec[u] = rr
            room_objs.append(r)
        stop = threading.Event()
        cut_done = threading.Semaphore(0)
        cuts = [0]

        def chaos() -> None:
            while not stop.wait(rng.uniform(0.1, 0.5)):  # the fault schedule, not a sync fix
                fp.cut()
                cuts[0] += 1
                cut_done.release()

        cutter = threading.Thread(target=chaos, name="chaos")
        t0 = time.monotonic()
        cutter.start()
        ops: List[Any] = []
        try:
            window: List[Any] = []
            for i in range(n):
                window.append(alice.send_message("bob", "a%d" % i))
                window.append(bob.send_message("alice", "b%d" % i))
                if i < rooms:
                    window.append(room_objs[0].send_room_message("ra%d" % i))
                    window.append(room_objs[1].send_room_message("rb%d" % i))
                if i % 50 == 49:  # 20 rounds, each after the next cut: traffic spans the cuts
                    assert cut_done.acquire(timeout=WAIT)
                if len(window) >= 60:  # and a window of results keeps some always in flight
                    ops.extend(window)
                    for op in window[:30]:
                        op.exception(WAIT * 3)
                    window = window[30:]
            ops.extend(window)
            results = [op.exception(WAIT * 3) for op in ops]
        finally:
            stop.set()
            cutter.join()
        elapsed = time.monotonic() - t0
        try:
            failed = [e for e in results if e is not None]
            assert failed == [], failed[:5]
            got_b = [m for _, m in brec.wait_count("msg", n, WAIT * 3)]
            got_a = [m for _, m in arec.wait_count("msg", n, WAIT * 3)]
            ra = [m for _, m in rooms_rec["alice"].wait_count("msg", rooms, WAIT * 3)]
            rb = [m for _, m in rooms_rec["bob"].wait_count("msg", rooms, WAIT * 3)]
            assert got_b == ["a%d" % i for i in range(n)], "peer alice->bob lost/dup/reordered"
            assert got_a == ["b%d" % i for i in range(n)], "peer bob->alice lost/dup/reordered"
            assert rb == ["ra%d" % i for i in range(rooms)], "room alice->bob"
            assert ra == ["rb%d" % i for i in range(rooms)], "room bob->alice"
            resumes = sum(1 for s in arec.of("state") + brec.of("state")
                          if s == (S.RECONNECTED, Reason.RESUMED))
        finally:
            alice.destroy()
            bob.destroy()
    return {"cuts": cuts[0], "seconds": round(elapsed, 2), "resumes": resumes,
            "messages": len(ops)}


def test_chaos_nothing_lost_duplicated_or_reordered() -> None:
    figures = run_chaos(seed=1)
    assert figures["cuts"] >= 20 and figures["resumes"] >= 1, figures
    print("chaos:", figures)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(20))
def test_chaos_soak(seed: int) -> None:
    print("chaos %d:" % seed, run_chaos(seed=100 + seed))


def test_half_open_link_is_detected_within_the_heartbeat_timeout(server: Any,
                                                                  proxy: FaultProxy) -> None:
    alice, arec = make(proxy.url(), "alice")
    try:
        proxy.stall("down", True)  # the server's frames stop arriving; the TCP link stays up
        t0 = time.monotonic()
        arec.wait_for(lambda: (S.RECONNECTING, Reason.HEARTBEAT_TIMEOUT) in arec.of("state"))
        detected = time.monotonic() - t0
        proxy.stall("down", False)
        arec.wait_for(lambda: (S.RECONNECTED, Reason.RESUMED) in arec.of("state"))
        # detection needs at most one missed ping interval plus the timeout
        assert detected < FAST["heartbeat_interval"] + FAST["heartbeat_timeout"] + 1.0, detected
        print("half-open detected after %.2fs" % detected)
        assert alice.get_peer_online_status("alice").result(WAIT) == 1
    finally:
        alice.destroy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server_process(port: int) -> subprocess.Popen:  # type: ignore[type-arg]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rts_sync.server", "--app", "%s:%s" % (APP_ID, APP_KEY),
         "--port", str(port), "--log-level", "INFO"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on" in line:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc
    raise AssertionError("rts-server did not start")


def test_server_killed_mid_traffic_then_restarted() -> None:
    port = free_port()
    url = "ws://127.0.0.1:%d/rts" % port
    proc = start_server_process(port)
    params = {"send_timeout": 2.0, "lost_after": 0.5}
    engines: List[rts_sync.RTS] = []
    try:
        alice, arec = make(url, "alice", params)
        bob, brec = make(url, "bob", params)
        engines += [alice, bob]
        room = alice.create_room("r")
        rr = RoomRecorder()
        room.set_rts_room_event_handler(rr)
        room.join_room().result(WAIT)
        ops = [alice.send_message("bob", "m%d" % i) for i in range(2000)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(WAIT)
        t0 = time.monotonic()
        outcomes = [op.exception(WAIT) for op in ops]  # every one resolves, none hangs
        assert all(e is None or isinstance(e, (SendTimeoutError, ConnectionBrokenError))
                   for e in outcomes)
        assert time.monotonic() - t0 < params["send_timeout"] + WAIT
        arec.wait_for(lambda: any(s == S.LOST for s, _ in arec.of("state")))
        proc = start_server_process(port)  # the same address again, with no session state
        arec.wait_for(lambda: (S.RECONNECTED, Reason.CONNECT_SUCCESS) in arec.of("state"),
                      timeout=WAIT * 2)
        # logged in again by itself and back in its room, as a re-join
        rr.wait_for(lambda: any(st[2] == 0 and '"join_type": 1' in st[3]
                                for st in rr.of("state")))
        # bob logs in again on his own schedule (his backoff): wait for him too
        brec.wait_for(lambda: (S.RECONNECTED, Reason.CONNECT_SUCCESS) in brec.of("state"),
                      timeout=WAIT * 2)
        assert alice.send_message("bob", "after").result(WAIT) == 0
        assert bob.get_peer_online_status("alice").result(WAIT) == 1
    finally:
        for e in engines:
            e.destroy()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_duplicate_login_does_not_reconnect(server: Any, proxy: FaultProxy) -> None:
    old, orec = make(proxy.url(), "alice")
    new, _ = make(server.url, "alice")
    try:
        orec.wait_for(lambda: (S.DISCONNECTED, Reason.KICKED) in orec.of("state"))
        # enough round trips for several backoff steps (base 0.05 s) to have passed
        for _ in range(50):
            new.get_peer_online_status("alice").result(WAIT)
        assert proxy.connections_total == 1 and old.stats()["logged_in"] is False
    finally:
        old.destroy()
        new.destroy()


def test_outside_the_resume_window_logs_in_again_and_rejoins() -> None:
    with serve_in_thread(apps={APP_ID: APP_KEY}, limits={"resume_window": 0.3}) as srv, \
            FaultProxy(srv.host, srv.port) as fp:
        alice, arec = make(fp.url(), "alice", {"connect_timeout": 0.5})
        bob, _ = make(srv.url, "bob")
        try:
            rooms = {}
            for e, u in ((alice, "alice"), (bob, "bob")):
                r = e.create_room("r")
                rooms[u] = RoomRecorder()
                r.set_rts_room_event_handler(rooms[u])
                r.join_room().result(WAIT)
            fp.blackhole(True)
            fp.cut()
            # the server gives the session up: bob sees alice dropped
            rooms["bob"].wait_for(lambda: ("alice", UserOfflineReason.DROPPED)
                                  in rooms["bob"].of("leave"))
            pending = alice.send_message("bob", "during the outage")
            fp.blackhole(False)
            arec.wait_for(lambda: (S.RECONNECTED, Reason.CONNECT_SUCCESS) in arec.of("state"))
            with pytest.raises((ConnectionBrokenError, SendTimeoutError)):
                pending.result(WAIT)  # its fate is unknown: an error, never silence
            rooms["alice"].wait_for(lambda: any('"join_type": 1' in st[3]
                                                for st in rooms["alice"].of("state")))
            rooms["bob"].wait_for(lambda: ("alice", 0) in rooms["bob"].of("joined"))
            assert alice.send_message("bob", "after").result(WAIT) == 0
        finally:
            alice.destroy()
            bob.destroy()


def test_relogin_refused_waits_for_update_login_token() -> None:
    with serve_in_thread(apps={APP_ID: APP_KEY}, limits={"resume_window": 0}) as srv, \
            FaultProxy(srv.host, srv.port) as fp:
        alice, arec = make(fp.url(), "alice")
        try:
            alice.update_login_token(token("mallory"))  # wrong uid: the next login is refused
            fp.cut()
            arec.wait_for(lambda: ("alice", LoginErrorCode.INVALID_TOKEN)
                          in [a[:2] for a in arec.of("login")])
            arec.wait_for(lambda: (S.DISCONNECTED, Reason.TOKEN_EXPIRED) in arec.of("state"))
            tries = fp.connections_total
            assert alice.update_login_token(token("alice")) == 0
            arec.wait_for(lambda: (S.RECONNECTED, Reason.CONNECT_SUCCESS) in arec.of("state"))
            assert fp.connections_total == tries + 1  # no storm while waiting for the token
            assert alice.get_peer_online_status("alice").result(WAIT) == 1
        finally:
            alice.destroy()


def test_destroy_is_prompt_during_a_stalled_connect_and_during_backoff(server: Any,
                                                                        proxy: FaultProxy) -> None:
    proxy.blackhole(True)
    rts = rts_sync.create_rts(APP_ID, Recorder(), FAST, server_url=proxy.url())
    op = rts.login(token("alice"), "alice")  # the handshake never completes
    t0 = time.monotonic()
    rts.destroy()
    assert time.monotonic() - t0 < 1.0
    assert op.exception(WAIT) is not None
    proxy.blackhole(False)
    slow = dict(FAST, reconnect_backoff_base=30.0, reconnect_backoff_cap=60.0)
    rts, rec = make(proxy.url(), "bob", slow)
    proxy.refuse(True)
    proxy.cut()
    rec.wait_for(lambda: any(s == S.RECONNECTING for s, _ in rec.of("state")))
    t0 = time.monotonic()
    rts.destroy()  # waiting out a long backoff: interrupted at once
    assert time.monotonic() - t0 < 1.0
    assert wait_no_threads() == []


def test_200_create_login_destroy_cycles_leave_nothing_behind(server: Any) -> None:
    proc = psutil.Process(os.getpid())

    def cycle(i: int) -> None:
        with rts_sync.create_rts(APP_ID, server_url=server.url) as rts:
            rts.login(token("c%d" % (i % 7)), "c%d" % (i % 7)).result(WAIT)

    for i in range(20):  # warm up caches and pools
        cycle(i)
    assert wait_no_threads() == []
    threads, fds, rss = threading.active_count(), proc.num_fds(), proc.memory_info().rss
    for i in range(200):
        cycle(i)
    assert wait_no_threads() == []
    assert threading.active_count() == threads
    # the in-process server may still be closing the last few of its own sockets
    assert proc.num_fds() <= fds + 4
    grown = proc.memory_info().rss - rss
    print("200 cycles: RSS %+d KiB" % (grown // 1024))
    assert grown < 16 * 1024 * 1024


def test_callbacks_slow_lane_raising_callback_and_reentrant_calls(server: Any) -> None:
    gate = threading.Event()
    errors: List[BaseException] = []

    class Handler(Recorder):
        rts: rts_sync.RTS

        def on_message_received(self, uid: str, message: str) -> None:
            if message == "boom":
                raise RuntimeError("a user bug")  # logged; later messages still arrive
            if uid == "bob" and message == "slow":
                gate.wait(WAIT)  # stalls only bob's lane
            if message == "nested":
                try:
                    self.rts.get_peer_online_status("bob").result()
                except rts_sync.InvalidStateError as exc:
                    errors.append(exc)
                self.rts.send_message(uid, "reply from a callback")
            super().on_message_received(uid, message)

    h = Handler()
    alice = rts_sync.create_rts(APP_ID, h, server_url=server.url)
    h.rts = alice
    bob, brec = make(server.url, "bob")
    carol, _ = make(server.url, "carol")
    try:
        alice.login(token("alice"), "alice").result(WAIT)
        bob.send_message("alice", "slow").result(WAIT)
        carol.send_message("alice", "boom").result(WAIT)
        for i in range(5):
            carol.send_message("alice", "c%d" % i)
        h.wait_for(lambda: len([m for u, m in h.of("msg") if u == "carol"]) == 5)
        assert not any(u == "bob" for u, _ in h.of("msg"))  # bob's lane is still stalled
        gate.set()
        h.wait_for(lambda: ("bob", "slow") in h.of("msg"))
        bob.send_message("alice", "nested").result(WAIT)
        assert brec.wait_count("msg", 1) == [("alice", "reply from a callback")]
        assert len(errors) == 1 and "deadlock" in str(errors[0])
    finally:
        for e in (alice, bob, carol):
            e.destroy()


def test_send_timeout_fires_when_the_send_was_written_by_the_calling_thread(
        server: Any, proxy: FaultProxy) -> None:
    """A send written directly by the caller while the I/O thread sleeps without a timeout must
    still wake it for its deadline: with heartbeats far apart and the link stalled, the send
    fails with TIMEOUT after send_timeout, not at the next heartbeat."""
    params = {"send_timeout": 1.0, "heartbeat_interval": 30.0, "heartbeat_timeout": 50.0}
    alice, arec = make(proxy.url(), "alice", params)
    bob, _ = make(server.url, "bob")
    try:
        assert alice.send_message("bob", "first").result(WAIT) == 0  # the I/O thread idles after
        proxy.stall("up", True)
        t0 = time.monotonic()
        op = alice.send_message("bob", "stalled")
        with pytest.raises(SendTimeoutError):
            op.result(WAIT)
        assert time.monotonic() - t0 < 1.0 + 5.0  # far from the next heartbeat (30 s)
        assert (op.msg_id, UserMessageSendResult.TIMEOUT) in arec.of("result")
    finally:
        proxy.stall("up", False)
        alice.destroy()
        bob.destroy()
