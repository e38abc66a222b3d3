"""The SDK against a rogue server (rogue.py): garbage, text, huge frames, lies in frame headers,
a WELCOME with nonsense, frames in the wrong order or direction, sequence gaps and duplicates,
silence, a broken HTTP upgrade. Whatever it does, the SDK ends up in a clean error state: the
login fails with a code (and the engine can log in again), or the session ends with reason
PROTOCOL_ERROR and the engine reconnects with backoff. Never a dead thread or a hang, and
``destroy()`` leaves no thread or descriptor behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cbor2
import pytest
from conftest import APP_ID, WAIT, Recorder, our_threads, token, wait_no_threads
from rogue import Peer, RogueServer, unmasked_frame

import rts_sync
from rts_sync import ConnectionState, ConnectionStateChangeReason, LoginError
from rts_sync import protocol as p

S = ConnectionState
Reason = ConnectionStateChangeReason
FAST = {"heartbeat_interval": 0.5, "heartbeat_timeout": 0.8, "connect_timeout": 1.5,
        "request_timeout": 1.5, "reconnect_backoff_base": 0.05, "reconnect_backoff_cap": 0.4}
MAX_FRAME = p.default_max_frame()
#: Connections on which the rogue misbehaves after the login before it behaves.
MISBEHAVING = 3

Make = Callable[..., Tuple[rts_sync.RTS, Recorder]]


@pytest.fixture
def make() -> Iterator[Make]:
    """Engines with FAST parameters, destroyed at the end; no thread of theirs may remain."""
    made: List[rts_sync.RTS] = []

    def factory(url: Any, **params: Any) -> Tuple[rts_sync.RTS, Recorder]:
        rec = Recorder()
        rts = rts_sync.create_rts(APP_ID, rec, dict(FAST, **params), server_url=url)
        made.append(rts)
        return rts, rec

    yield factory
    for rts in made:
        t0 = time.monotonic()
        rts.destroy()
        assert time.monotonic() - t0 < 2.0
    assert wait_no_threads() == []


def engine_threads_alive() -> bool:
    names = our_threads()
    return any(n.startswith("rts-io-") for n in names) and any(
        n.startswith("rts-supervisor-") for n in names)


async def well_behaved(peer: Peer) -> None:
    await peer.handshake()
    await peer.login()
    await peer.serve()


# ------------------------------------------------------------------------ during the login
async def _garbage(peer: Peer) -> None:
    await peer.recv()
    await peer.send(b"\xff\x00 this is not CBOR")
    await peer.linger()


async def _text(peer: Peer) -> None:
    await peer.recv()
    await peer.ws.send_str("hello, text")
    await peer.linger()


async def _huge_claim(peer: Peer) -> None:
    await peer.recv()
    peer.write_raw(unmasked_frame(b"x" * 16, length=1 << 40))  # 1 TB promised, 16 bytes sent
    await peer.linger()


async def _huge_frame(peer: Peer) -> None:
    await peer.recv()
    await peer.send(b"\x00" * (MAX_FRAME + 1))
    await peer.linger()


async def _endless_fragments(peer: Peer) -> None:
    await peer.recv()
    peer.write_raw(unmasked_frame(b"\x85", fin=False))
    for _ in range(200):  # never a final fragment: the limit is reached first
        peer.write_raw(unmasked_frame(b"\x00" * 1000, opcode=0, fin=False))
        await asyncio.sleep(0)
    await peer.linger()


async def _masked_frames(peer: Peer) -> None:
    await peer.recv()
    peer.write_raw(bytes([0x82, 0x80 | 4]) + b"\x01\x02\x03\x04" + b"abcd")
    await peer.linger()


async def _bad_version(peer: Peer) -> None:
    await peer.recv()
    await peer.send(p.encode(p.Welcome(999, {"max_frame": 1})))
    await peer.linger()


async def _welcome_not_a_map(peer: Peer) -> None:
    await peer.recv()
    await peer.send(cbor2.dumps([2, 1, ["not", "a", "map"]]))
    await peer.linger()


async def _deliver_before_welcome(peer: Peer) -> None:
    await peer.recv()
    await peer.send(p.encode(p.Deliver(1, 0, "mallory", None, "too early")))
    await peer.linger()


async def _hello_to_the_client(peer: Peer) -> None:
    await peer.recv()
    await peer.send(p.encode(p.Hello((1,), APP_ID)))
    await peer.linger()


async def _silent(peer: Peer) -> None:
    await peer.linger()  # reads everything, answers nothing


async def _silent_after_welcome(peer: Peer) -> None:
    await peer.handshake()
    await peer.linger()  # the LOGIN and the PINGs go unanswered


async def _ws_pings_instead_of_welcome(peer: Peer) -> None:
    await peer.recv()
    for _ in range(300):  # alive at the WebSocket level, never a WELCOME
        await peer.ws.ping(b"still here")
        await asyncio.sleep(0.05)


async def _closes_at_once(peer: Peer) -> None:
    await peer.ws.close(code=4999, message=b"go away")


async def _aborts_tcp(peer: Peer) -> None:
    await peer.recv()
    assert peer.request.transport is not None
    peer.request.transport.abort()


async def _close_frame(peer: Peer) -> None:
    await peer.recv()
    await peer.send(p.encode(p.Close(4999, "x" * 200)))
    await peer.linger()


async def _login_refused_with_an_unknown_code(peer: Peer) -> None:
    await peer.handshake()
    await peer.login(code=123456, result=[b"\x00", {"reason": 7}])
    await peer.linger()


LOGIN_CASES: Dict[str, Tuple[Any, int, Reason]] = {
    "garbage": (_garbage, -1001, Reason.PROTOCOL_ERROR),
    "text": (_text, -1001, Reason.PROTOCOL_ERROR),
    "header-claims-1TB": (_huge_claim, -1001, Reason.PROTOCOL_ERROR),
    "frame-over-limit": (_huge_frame, -1001, Reason.PROTOCOL_ERROR),
    "endless-fragments": (_endless_fragments, -1001, Reason.PROTOCOL_ERROR),
    "masked-server-frame": (_masked_frames, -1001, Reason.PROTOCOL_ERROR),
    "welcome-version-999": (_bad_version, -1001, Reason.PROTOCOL_ERROR),
    "welcome-params-not-a-map": (_welcome_not_a_map, -1001, Reason.PROTOCOL_ERROR),
    "deliver-before-welcome": (_deliver_before_welcome, -1001, Reason.PROTOCOL_ERROR),
    "hello-to-the-client": (_hello_to_the_client, -1001, Reason.PROTOCOL_ERROR),
    "silent": (_silent, -1001, Reason.HEARTBEAT_TIMEOUT),
    "silent-after-welcome": (_silent_after_welcome, -1001, Reason.HEARTBEAT_TIMEOUT),
    "ws-pings-instead-of-welcome": (_ws_pings_instead_of_welcome, -1001, Reason.HEARTBEAT_TIMEOUT),
    "closes-at-once": (_closes_at_once, -1001, Reason.SERVER_CLOSED),
    "aborts-tcp": (_aborts_tcp, -1001, None),
    "close-frame-4999": (_close_frame, -1001, Reason.SERVER_CLOSED),
    "login-refused-unknown-code": (_login_refused_with_an_unknown_code, 123456, Reason.LOGOUT),
}


@pytest.mark.parametrize("case", list(LOGIN_CASES))
def test_misbehaving_server_fails_the_login_with_a_code_and_the_engine_lives_on(
        make: Make, case: str) -> None:
    script, code, reason = LOGIN_CASES[case]
    with RogueServer(script) as rogue:
        rts, rec = make(rogue.url)
        t0 = time.monotonic()
        with pytest.raises(LoginError) as ei:
            rts.login(token("alice"), "alice").result(WAIT)
        assert ei.value.code == code
        assert time.monotonic() - t0 < 5.0
        assert rec.wait_count("login", 1)[0][:2] == ("alice", code)
        rec.wait_for(lambda: rec.of("state") and rec.of("state")[-1][0] == S.DISCONNECTED)
        if reason is not None:
            assert rec.of("state")[-1] == (S.DISCONNECTED, reason)
        assert engine_threads_alive()
        # the same engine logs in fine once the server behaves
        rogue.script = well_behaved
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        assert rts.get_peer_online_status("bob").result(WAIT) == 1
        assert rts.send_message("bob", "hi").result(WAIT) == 0
        assert rogue.errors == []


RAW_CASES: Dict[str, Optional[bytes]] = {
    "http-200": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "http-garbage": b"\x00\xffSSH-2.0-not-http\r\n\r\n",
    "upgrade-with-wrong-accept": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm9wZQ==\r\n\r\n"),
    "never-answers": None,
}


@pytest.mark.parametrize("case", list(RAW_CASES))
def test_a_broken_http_upgrade_fails_the_login_with_connect_failed(make: Make, case: str) -> None:
    with RogueServer(raw=RAW_CASES[case], raw_mode=True) as rogue:
        rts, rec = make(rogue.url)
        t0 = time.monotonic()
        with pytest.raises(LoginError) as ei:
            rts.login(token("alice"), "alice").result(WAIT)
        assert ei.value.code == -1001 and "cannot connect" in str(ei.value)
        assert time.monotonic() - t0 < FAST["connect_timeout"] + 2
        rec.wait_for(lambda: (S.DISCONNECTED, Reason.CONNECT_FAILED) in rec.of("state"))
        assert engine_threads_alive()


# ----------------------------------------------------------------------- after the login
def _after_login(misbehave: Callable[[Peer], Any]) -> Callable[[Peer], Any]:
    """Log the client in (again: a re-login after a refused resume), then misbehave, on the
    first three connections; behave from the fourth on."""

    async def script(peer: Peer) -> None:
        hello = await peer.recv()
        assert isinstance(hello, p.Hello)
        await peer.send(peer.conn.welcome(1, {"resumed": False, "resume_error": "expired"}
                                          if hello.resume is not None else {}))
        await peer.login()
        if peer.n > MISBEHAVING:
            await peer.serve()
            return
        await asyncio.sleep(0.05)
        await misbehave(peer)
        await peer.linger(5)
    return script


async def _send(peer: Peer, data: bytes) -> None:
    await peer.send(data)


AFTER_LOGIN: Dict[str, Callable[[Peer], Any]] = {
    "garbage": lambda peer: _send(peer, b"\x9f\x9f\x9f"),
    "text": lambda peer: peer.ws.send_str("{}"),
    "ack-beyond-what-was-sent": lambda peer: _send(peer, p.encode(p.Ack(10**9))),
    "second-welcome": lambda peer: _send(peer, p.encode(p.Welcome(1, {}))),
    "room-notice-of-the-wrong-shape": lambda peer: _send(
        peer, peer.conn.notice(p.NoticeKind.USER_JOINED, [5, None])[1]),
    "room-message-without-a-room": lambda peer: _send(
        peer, peer.conn.deliver(p.DeliverKind.ROOM, "mallory", None, "x")[1]),
    "header-claims-2**62": lambda peer: asyncio.sleep(
        0, peer.write_raw(unmasked_frame(b"", length=1 << 62))),
    "trailing-bytes": lambda peer: _send(peer, p.encode(p.Ping(1)) + b"\x00"),
}


@pytest.mark.parametrize("case", list(AFTER_LOGIN))
def test_misbehaving_server_after_login_ends_the_session_and_the_engine_reconnects_with_backoff(
        make: Make, case: str) -> None:
    with RogueServer(_after_login(AFTER_LOGIN[case])) as rogue:
        rts, rec = make(rogue.url)
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        rec.wait_for(lambda: (S.RECONNECTING, Reason.PROTOCOL_ERROR) in rec.of("state"))
        rec.wait_for(lambda: len(rogue.accepted) > MISBEHAVING, timeout=WAIT * 2)
        rec.wait_for(lambda: (S.RECONNECTED, Reason.CONNECT_SUCCESS) in rec.of("state")
                     and rec.of("state")[-1][0] == S.RECONNECTED, timeout=WAIT)
        assert rts.send_message("bob", "after").result(WAIT) == 0
        # three sessions ended in protocol errors, and one reconnect followed each (after its
        # backoff: the policy itself is unit-tested), no more
        assert len(rogue.accepted) == MISBEHAVING + 1
        assert rogue.accepted[-1] - rogue.accepted[0] < 5.0
        assert engine_threads_alive()
        assert rogue.errors == []


# ------------------------------------------------------------- sequences, gaps, nonsense
def test_sequence_gaps_and_duplicates_deliver_each_message_once_in_order(make: Make) -> None:
    acked: List[int] = []

    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.login()  # its RESPONSE is server seq 1
        d = {name: peer.conn.deliver(p.DeliverKind.PEER, "mallory", None, name)[1]
             for name in ("old", "a", "gap", "c", "e")}  # seqs 2, 3, 4, 5, 6
        unreliable = peer.conn.deliver(p.DeliverKind.PEER, "mallory", None, "u", reliable=False)[1]
        for data in (d["a"], d["a"], d["old"], d["c"], d["c"], d["gap"], unreliable, unreliable,
                     d["e"], d["a"]):
            await peer.send(data)
        await peer.serve(until=lambda: peer.conn.peer_acked >= 6)
        acked.append(peer.conn.peer_acked)
        await peer.serve()

    with RogueServer(script) as rogue:
        rts, rec = make(rogue.url)
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        rec.wait_count("msg", 5)
        time.sleep(0.2)
        assert [m for _, m in rec.of("msg")] == ["a", "c", "u", "u", "e"]
        rec.wait_for(lambda: acked == [6])
        assert rts.send_message("bob", "x").result(WAIT) == 0
        assert rogue.errors == []


def test_nonsense_in_welcome_and_login_params_is_ignored(make: Make) -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake({"max_frame": "lots", "resumed": "yes", "last_seq": -5,
                              "resume_error": 7, "login_timeout": None, "session": [1, 2],
                              "extra": {"deep": [b"\x00", {"x": 1.5}]}})
        await peer.login(result={"session": 42, "members": "x", "extra": [None]})
        await peer.serve()

    with RogueServer(script) as rogue:
        rts, rec = make(rogue.url)
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        assert rts.send_message("bob", "hi").result(WAIT) == 0
        assert rts.get_peer_online_status("bob").result(WAIT) == 1
        assert [s for s, _ in rec.of("state")] == [S.CONNECTING, S.CONNECTED]


def test_answers_to_unknown_requests_and_sends_are_ignored(make: Make) -> None:
    async def script(peer: Peer) -> None:
        await peer.handshake()
        await peer.login()
        await peer.send(peer.conn.respond(999, 0, "who asked?"))
        await peer.send(peer.conn.result(0, [777, 778]))
        await peer.send(peer.conn.notice(200, [b"?"])[1])  # a notice kind it does not know
        await peer.serve()

    with RogueServer(script) as rogue:
        rts, rec = make(rogue.url)
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        assert rts.send_message("bob", "hi").result(WAIT) == 0
        assert [s for s, _ in rec.of("state")] == [S.CONNECTING, S.CONNECTED]


def test_destroy_during_a_hostile_exchange_leaves_nothing(make: Make) -> None:
    stop = threading.Event()

    async def script(peer: Peer) -> None:
        await peer.recv()
        while not stop.is_set():  # a stream of garbage-free but never-ending fragments
            peer.write_raw(unmasked_frame(b"\x00", opcode=0x9))
            await asyncio.sleep(0.001)

    with RogueServer(script) as rogue:
        rts, _ = make(rogue.url)
        op = rts.login(token("alice"), "alice")
        time.sleep(0.3)
        t0 = time.monotonic()
        rts.destroy()
        assert time.monotonic() - t0 < 2.0
        assert op.done()
        stop.set()
