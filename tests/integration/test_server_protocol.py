"""The server against a raw protocol client: websocket-client + rts_sync.protocol, no SDK, no mocks."""

from __future__ import annotations

import gc
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Iterator, List, Optional, Tuple, Union

import pytest
import websocket

from rts_sync import protocol as p
from rts_sync.protocol import CloseCode, Connection, Op, Role, TargetKind
from rts_sync.testing import ServerHandle, serve_in_thread
from rts_sync.token import mint_login_token

APP_ID = "rtsapp000000000000000001"
APP_KEY = "test-app-key-0001"
OTHER_APP_ID = "rtsapp000000000000000002"
UNKNOWN_APP_ID = "rtsapp000000000000000099"

RELIABLE, UNRELIABLE = 0, 1


_open_clients: List[RawClient] = []


class result_like:
    """Equal to any RESULT with this code, seqs and body, whatever its own server seq."""

    def __init__(self, code: int, seqs: tuple, body: object = None) -> None:
        self.key = (code, tuple(seqs), body)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, p.Result) and (other.code, other.seqs, other.body) == self.key

    def __repr__(self) -> str:
        return "result_like%r" % (self.key,)


@pytest.fixture(autouse=True)

def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


class RawClient:
    """A minimal protocol client; every event it does not ask for is kept in ``inbox``."""

    def __init__(self, server: Union[ServerHandle, str], app_id: str = APP_ID,
                 hello: bool = True) -> None:
        url = server.url if isinstance(server, ServerHandle) else server
        self.ws = websocket.create_connection(url, timeout=5)
        _open_clients.append(self)
        self.conn = Connection(Role.CLIENT)
        self.inbox: List[Any] = []
        self.welcome: Any = None  # the answer to HELLO: WELCOME, or CLOSE when refused
        if hello:
            self.ws.send_binary(self.conn.hello(app_id, "raw-test"))
            self.welcome = self.next_event()

    def close(self) -> None:
        self.ws.close()
        self.ws.shutdown()  # websocket-client keeps the socket open if the server closed first

    def raw(self, data: bytes) -> None:
        self.ws.send_binary(data)

    def next_event(self, timeout: float = 5.0) -> Any:
        """The next frame's event (Acked events from the server's ACKs are skipped)."""
        if self.inbox:
            return self.inbox.pop(0)
        self.ws.settimeout(timeout)
        while True:
            opcode, data = self.ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionError("closed with %d" % struct.unpack("!H", data[:2])[0])
            ev = self._got(self.conn.receive(data))
            if ev is not None and not isinstance(ev, p.Acked):
                return ev

    def _got(self, ev: Any) -> Any:
        """RESPONSEs and RESULTs are acknowledged at once (the server keeps them until then);
        DELIVERs only when a test calls ``ack()``."""
        if isinstance(ev, (p.Response, p.Result)):
            try:
                self.ack()
            except (OSError, websocket.WebSocketException):
                pass  # the server is closing this connection (e.g. after LOGOUT)
        return ev

    def expect(self, kind: type, timeout: float = 5.0) -> Any:
        """The next event of ``kind``, keeping the others for later."""
        for i, ev in enumerate(self.inbox):
            if isinstance(ev, kind):
                return self.inbox.pop(i)
        kept = []
        try:
            while True:
                self.ws.settimeout(timeout)
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise ConnectionError("closed with %d" % struct.unpack("!H", data[:2])[0])
                ev = self._got(self.conn.receive(data))
                if isinstance(ev, kind):
                    return ev
                if ev is not None and not isinstance(ev, p.Acked):
                    kept.append(ev)
        finally:
            self.inbox.extend(kept)

    def nothing_for(self, seconds: float, kind: type = object) -> None:
        """Assert that no event of ``kind`` arrives within ``seconds``."""
        with pytest.raises(websocket.WebSocketTimeoutException):
            ev = self.expect(kind, timeout=seconds)
            pytest.fail("unexpected %r" % (ev,))

    def expect_close(self, code: int) -> Tuple[Optional[p.Close], int]:
        """Read to the end: the protocol CLOSE (if any) and the WebSocket close code, both ``code``."""
        close_ev: Optional[p.Close] = None
        self.ws.settimeout(5)
        while True:
            frame = self.ws.recv_frame()  # raw: no close reply (the server may be gone already)
            opcode, data = frame.opcode, frame.data
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                ws_code = struct.unpack("!H", data[:2])[0]
                break
            if opcode not in (websocket.ABNF.OPCODE_BINARY, websocket.ABNF.OPCODE_CONT):
                continue
            ev = p.decode(data, p.default_max_frame())
            if isinstance(ev, p.Close):
                close_ev = ev
        assert close_ev is not None and close_ev.code == code, close_ev
        assert ws_code == code
        return close_ev, ws_code

    def request(self, op: int, *args: Any) -> p.Response:
        rid, data = self.conn.request(op, args)
        self.raw(data)
        resp = self.expect(p.Response)
        assert resp.rid == rid
        return resp  # type: ignore[no-any-return]

    def login(self, uid: str, token: Optional[str] = None) -> p.Response:
        if token is None:
            token = mint_login_token(APP_ID, APP_KEY, uid)
        return self.request(Op.LOGIN, token, uid, None, 0)

    def send(self, target: str, payload: Any, config: int = RELIABLE,
             kind: int = TargetKind.PEER) -> int:
        seq, data = self.conn.send(kind, target, config, payload, reliable=config == RELIABLE)
        self.raw(data)
        return seq

    def ack(self) -> None:
        data = self.conn.ack()
        if data is not None:
            self.raw(data)


def logged_in(server: ServerHandle, uid: str) -> RawClient:
    c = RawClient(server)
    assert c.login(uid).code == 0
    return c


def metric_lines(server: ServerHandle) -> List[str]:
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as resp:
        return resp.read().decode().splitlines()  # type: ignore[no-any-return]


def still_works(c: RawClient) -> None:
    c.raw(c.conn.ping(77))
    assert c.expect(p.Pong).token == 77


# ---------------------------------------------------------------------------------- handshake
def test_handshake_welcomes_with_limits(server: ServerHandle) -> None:
    c = RawClient(server)
    assert c.welcome is not None and c.welcome.version == p.PROTOCOL_VERSION
    params = c.welcome.params
    assert params["max_frame"] == p.default_max_frame() and params["max_payload"] == 65536
    assert params["server"].startswith("rts_sync/") and params["login_timeout"] == 10.0


def test_unknown_app_is_rejected(server: ServerHandle) -> None:
    c = RawClient(server, app_id=UNKNOWN_APP_ID)
    assert isinstance(c.welcome, p.Close)  # the answer to HELLO is CLOSE, not WELCOME
    assert c.welcome.code == CloseCode.REJECTED
    with pytest.raises(ConnectionError, match="4403"):
        c.next_event()


def test_no_common_version(server: ServerHandle) -> None:
    c = RawClient(server, hello=False)
    c.raw(p.encode(p.Hello((99, 100), APP_ID, "future-sdk")))
    c.expect_close(CloseCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("frame, code", [
    (b"\xff\x00 not cbor", CloseCode.PROTOCOL_ERROR),
    (p.encode(p.Hello((1,), APP_ID)), CloseCode.PROTOCOL_ERROR),  # a second HELLO
    (p.encode(p.Welcome(1, {})), CloseCode.PROTOCOL_ERROR),  # wrong direction
    (p.encode(p.Request(1, 200, ())), CloseCode.PROTOCOL_ERROR),  # unknown op
    (p.encode(p.Request(1, Op.LOGIN, ("x",))), CloseCode.PROTOCOL_ERROR),  # wrong arity
    ("a text message", CloseCode.PROTOCOL_ERROR),
], ids=["garbage", "second-hello", "wrong-direction", "unknown-op", "arity", "text"])
def test_bad_frame_closes_only_that_connection(server: ServerHandle,
                                               frame: Any, code: int) -> None:
    bystander = logged_in(server, "bystander")
    bad = RawClient(server)
    if isinstance(frame, str):
        bad.ws.send(frame)
    else:
        bad.raw(frame)
    bad.expect_close(code)
    still_works(bystander)
    assert server.stats()["sessions"] == 1
    assert "rts_protocol_errors_total 1" in metric_lines(server)


def test_oversized_frame_closes_only_that_connection() -> None:
    # A small limit, so that the whole frame is in the server's buffer when it closes (with a
    # default-sized one the client may see a TCP reset while still sending).
    with serve_in_thread({APP_ID: APP_KEY}, limits={"max_payload": 1000}) as srv:
        max_frame = 1000 + p.FRAME_OVERHEAD
        bystander = RawClient(srv)
        assert bystander.login("bystander").code == 0
        # A frame of exactly max_frame bytes is allowed (its payload is too big: RESULT 103).
        overhead = len(p.encode(p.Send(1, 0, "bystander", 0, b"x" * 1500))) - 1500
        seq, frame = bystander.conn.send(TargetKind.PEER, "bystander", RELIABLE,
                                            b"x" * (max_frame - overhead))
        assert len(frame) == max_frame
        bystander.raw(frame)
        assert bystander.expect(p.Result) == result_like(103, (seq,))
        bad = RawClient(srv)
        bad.raw(b"\x00" * (max_frame + 1))
        bad.expect_close(CloseCode.FRAME_TOO_LARGE)
        still_works(bystander)
        assert "rts_protocol_errors_total 1" in metric_lines(srv)
        bad.close()
        bystander.close()


def test_frame_before_hello_is_a_protocol_error(server: ServerHandle) -> None:
    bystander = logged_in(server, "bystander")
    bad = RawClient(server, hello=False)
    bad.raw(p.encode(p.Ping(1)))
    bad.expect_close(CloseCode.PROTOCOL_ERROR)
    still_works(bystander)


def test_ping_pong_before_login(server: ServerHandle) -> None:
    c = RawClient(server)
    still_works(c)


# ---------------------------------------------------------------------------------- login
def test_login_ok(server: ServerHandle) -> None:
    c = RawClient(server)
    resp = c.login("alice")
    assert resp.code == 0 and isinstance(resp.result["session"], str)
    assert server.stats() == {"status": "ok", "sessions": 1, "connections": 1}
    again = c.login("alice")  # already logged in on this connection
    assert again.code == -1001


@pytest.mark.parametrize("token, reason", [
    (mint_login_token(APP_ID, "not-the-key", "alice"), "signature"),
    (mint_login_token(OTHER_APP_ID, APP_KEY, "alice"), "another app"),
    (mint_login_token(APP_ID, APP_KEY, "alice", lifetime_s=10, now=int(time.time()) - 100), "expired"),
    (mint_login_token(APP_ID, APP_KEY, "bob"), "another user"),
    ("001garbage", "malformed"),
], ids=["bad-signature", "wrong-app", "expired", "wrong-uid", "malformed"])
def test_login_invalid_token(server: ServerHandle, token: str,
                             reason: str) -> None:
    c = RawClient(server)
    resp = c.login("alice", token)
    assert resp.code == -1000 and reason in resp.result["reason"]
    assert c.login("alice").code == 0  # a failed login leaves the connection usable


def test_login_invalid_user_id(server: ServerHandle) -> None:
    c = RawClient(server)
    assert c.login("bad uid!", mint_login_token(APP_ID, APP_KEY, "bad uid!")).code == -1002


def test_duplicate_login_kicks_the_old_session(server: ServerHandle) -> None:
    old = logged_in(server, "alice")
    new = logged_in(server, "alice")
    notice = old.expect(p.Notice)
    assert notice.kind == p.NoticeKind.KICKED and list(notice.args) == [1]
    old.expect_close(CloseCode.DUPLICATE_LOGIN)
    still_works(new)
    watcher = logged_in(server, "watcher")
    assert watcher.request(Op.ONLINE_STATUS, "alice").result == 1
    assert server.stats()["sessions"] == 2


def test_login_timeout() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"login_timeout": "0.3"}) as srv:
        c = RawClient(srv)
        t0 = time.monotonic()
        c.expect_close(CloseCode.LOGIN_TIMEOUT)
        assert 0.2 < time.monotonic() - t0 < 3


def test_logout(server: ServerHandle) -> None:
    watcher = logged_in(server, "watcher")
    c = logged_in(server, "alice")
    seq = c.send("watcher", "bye", config=UNRELIABLE)
    assert c.request(Op.LOGOUT).code == 0
    assert c.expect(p.Result) == result_like(0, (seq,))  # written before the server closes
    c.expect_close(CloseCode.NORMAL)
    assert watcher.request(Op.ONLINE_STATUS, "alice").result == 0


def test_requests_that_need_login(server: ServerHandle) -> None:
    c = RawClient(server)
    assert c.request(Op.LOGOUT).code == 105
    assert c.request(Op.ONLINE_STATUS, "bob").code == 105
    seq = c.send("bob", "hi")
    assert c.expect(p.Result) == result_like(105, (seq,))


def test_online_status(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    assert alice.request(Op.ONLINE_STATUS, "bob").result == 0
    logged_in(server, "bob")
    assert alice.request(Op.ONLINE_STATUS, "bob").result == 1
    assert alice.request(Op.ONLINE_STATUS, "not a valid id!").result == 0


def test_server_params_checks_and_sends_before_params_or_join(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    for args in [("", "http://x/"), ("s", "ftp://x/"), ("s", "http:///nohost"), (1, "http://x/"),
                 ("s", "http://x:bad/"), ("s", None)]:
        resp = alice.request(Op.SET_SERVER_PARAMS, *args)
        assert resp.code == 1000 and resp.result["reason"], args
    room_seq = alice.send("room1", "hi", kind=TargetKind.ROOM)
    assert alice.expect(p.Result) == result_like(100, (room_seq,))
    server_seq = alice.send("", "hi", kind=TargetKind.SERVER)
    assert alice.expect(p.Result) == result_like(106, (server_seq,))
    assert alice.request(Op.SET_SERVER_PARAMS, "sig", "http://127.0.0.1:1/").code == 200


# ---------------------------------------------------------------------------------- messages
def test_reliable_result_only_after_receiver_acks(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    seqs = [alice.send("bob", "m%d" % i) for i in range(3)] + [alice.send("bob", b"\x00\x01")]
    got = [bob.expect(p.Deliver) for _ in seqs]
    assert [d.payload for d in got] == ["m0", "m1", "m2", b"\x00\x01"]  # the sender's order
    first = got[0].seq  # after the RESPONSE to bob's login: one server sequence per session
    assert [d.seq for d in got] == [first + i for i in range(4)]
    assert all(d.sender == "alice" for d in got)
    alice.nothing_for(0.3, p.Result)  # bob has the frames but has not acknowledged them
    bob.ack()
    codes = {}
    while len(codes) < len(seqs):
        r = alice.expect(p.Result)
        codes.update({s: r.code for s in r.seqs})
    assert codes == {s: 0 for s in seqs}
    assert alice.conn.peer_acked == seqs[-1]  # the server acknowledged every SEND


def test_duplicate_send_is_ignored(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    seq, frame = alice.conn.send(TargetKind.PEER, "bob", RELIABLE, "once")
    alice.raw(frame)
    alice.raw(frame)  # resent, e.g. after a reconnect
    assert bob.expect(p.Deliver).payload == "once"
    bob.ack()
    assert alice.expect(p.Result) == result_like(0, (seq,))
    bob.nothing_for(0.2, p.Deliver)
    alice.nothing_for(0.01, p.Result)


def test_no_receiver(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    s1 = alice.send("nobody", "hi")
    assert alice.expect(p.Result) == result_like(3, (s1,))
    s2 = alice.send("not valid!", "hi", config=UNRELIABLE)
    assert alice.expect(p.Result) == result_like(3, (s2,))


def test_payload_size_limit(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    s1 = alice.send("bob", b"x" * 65537)
    assert alice.expect(p.Result) == result_like(103, (s1,))
    s2 = alice.send("bob", "\u00e9" * 32769)  # 32,769 characters, 65,538 UTF-8 bytes
    assert alice.expect(p.Result) == result_like(103, (s2,))
    s3 = alice.send("bob", b"y" * 65536)  # exactly 64 KB is fine
    assert len(bob.expect(p.Deliver).payload) == 65536
    bob.ack()
    assert alice.expect(p.Result) == result_like(0, (s3,))


def test_unreliable_result_is_immediate(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    bob = logged_in(server, "bob")
    seq = alice.send("bob", "quick", config=UNRELIABLE)
    assert alice.expect(p.Result) == result_like(0, (seq,))  # bob never acks
    d = bob.expect(p.Deliver)
    assert d.seq == 0 and d.payload == "quick" and d.sender == "alice"


def test_message_timeout_gives_one_timeout_result() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"message_timeout": 0.3}) as srv:
        alice, bob = RawClient(srv), RawClient(srv)
        assert alice.login("alice").code == 0 and bob.login("bob").code == 0
        seq = alice.send("bob", "slow")
        assert bob.expect(p.Deliver).payload == "slow"
        assert alice.expect(p.Result, timeout=3) == result_like(1, (seq,))
        bob.ack()  # too late: no second result
        alice.nothing_for(0.3, p.Result)


def test_receiver_gone_before_ack_gives_timeout() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"resume_window": 0}) as srv:
        alice = logged_in(srv, "alice")
        bob = RawClient(srv)
        assert bob.login("bob").code == 0
        seq = alice.send("bob", "lost")
        bob.expect(p.Deliver)
        bob.close()  # no resume window: the session ends with the connection
        assert alice.expect(p.Result, timeout=3) == result_like(1, (seq,))


def test_receiver_that_does_not_resume_gives_timeout_after_message_timeout() -> None:
    limits = {"resume_window": 30, "message_timeout": 0.5}
    with serve_in_thread({APP_ID: APP_KEY}, limits=limits) as srv:
        alice = logged_in(srv, "alice")
        bob = logged_in(srv, "bob")
        seq = alice.send("bob", "lost")
        bob.expect(p.Deliver)
        bob.close()  # a drop: the session waits for a resume; bob is still online meanwhile
        assert alice.request(Op.ONLINE_STATUS, "bob").result == 1
        assert alice.expect(p.Result, timeout=5) == result_like(1, (seq,))


def test_exceed_qps() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"p2p_qps": "2"}) as srv:
        alice, bob = RawClient(srv), RawClient(srv)
        assert alice.login("alice").code == 0 and bob.login("bob").code == 0
        seqs = [alice.send("bob", "m", config=UNRELIABLE) for _ in range(3)]
        codes = {}
        while len(codes) < 3:
            r = alice.expect(p.Result)
            codes.update({s: r.code for s in r.seqs})
        assert codes == {seqs[0]: 0, seqs[1]: 0, seqs[2]: 5}


def test_slow_consumer_is_closed_and_its_sender_is_paced_not_stalled() -> None:
    limits = {"send_queue_frames": 4, "slow_consumer_grace": 0.5}
    with serve_in_thread({APP_ID: APP_KEY}, limits=limits) as srv:
        alice, bob = RawClient(srv), RawClient(srv)
        assert alice.login("alice").code == 0 and bob.login("bob").code == 0
        big = b"z" * 60000
        codes: List[int] = []
        t0 = time.monotonic()
        for _ in range(400):  # bob never reads: the socket buffers fill, then his queue
            seq = alice.send("bob", big, config=UNRELIABLE)
            r = alice.expect(p.Result)
            assert r.seqs == (seq,)
            codes.append(r.code)
            if r.code == 3:
                break
        assert codes[0] == 0 and codes[-1] == 3  # delivered while bob's buffers took them
        assert 0.4 < time.monotonic() - t0 < 5  # paced for about the grace period, not for ever
        assert alice.request(Op.ONLINE_STATUS, "bob").result == 0
        assert "rts_slow_consumer_disconnects_total 1" in metric_lines(srv)
        still_works(alice)
        alice.close()
        bob.close()


def test_connection_and_session_limits() -> None:
    limits = {"max_connections_per_ip": 2, "max_sessions_per_app": 1}
    with serve_in_thread({APP_ID: APP_KEY}, limits=limits) as srv:
        a, b = RawClient(srv), RawClient(srv)
        c = RawClient(srv, hello=False)
        c.expect_close(CloseCode.REJECTED)  # a third connection from 127.0.0.1
        assert a.login("alice").code == 0
        resp = b.login("bob")
        assert resp.code == -1001 and "too many sessions" in resp.result["reason"]
        assert b.login("alice").code == 0  # the same uid replaces its session: not one more
        a.expect_close(CloseCode.DUPLICATE_LOGIN)
        for x in (a, b, c):
            x.close()


# ---------------------------------------------------------------------------------- http + lifecycle
def test_healthz_and_metrics(server: ServerHandle) -> None:
    alice = logged_in(server, "alice")
    alice.send("nobody", "x")
    alice.expect(p.Result)
    eve = RawClient(server)
    assert eve.login("eve", "garbage").code == -1000
    with urllib.request.urlopen(server.http_url + "/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health == {"status": "ok", "sessions": 1, "connections": 2} == server.stats()
    with urllib.request.urlopen(server.http_url + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    lines = set(text.splitlines())
    assert "rts_connections 2" in lines
    assert 'rts_sessions{app="%s"} 1' % APP_ID in lines
    assert 'rts_logins_total{result="success"} 1' in lines
    assert 'rts_logins_total{result="invalid_token"} 1' in lines
    assert 'rts_messages_total{kind="peer"} 0' in lines
    assert "# TYPE rts_frames_in_total counter" in lines
    assert "rts_protocol_errors_total 0" in lines and "rts_slow_consumer_disconnects_total 0" in lines


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def test_stop_leaves_no_thread_and_no_fd() -> None:
    gc.collect()
    before_threads, before_fds = set(threading.enumerate()), _fds()
    srv = serve_in_thread({APP_ID: APP_KEY})
    assert any(t.name.startswith("rts-server-") for t in threading.enumerate())
    c = RawClient(srv)
    assert c.login("alice").code == 0
    srv.stop()
    c.expect_close(CloseCode.GOING_AWAY)
    c.close()
    srv.stop()  # idempotent
    gc.collect()
    assert set(threading.enumerate()) == before_threads
    assert _fds() == before_fds
    with pytest.raises(RuntimeError):
        srv.stats()


def test_startup_error_is_raised(server: ServerHandle) -> None:
    with pytest.raises(OSError):
        serve_in_thread({APP_ID: APP_KEY}, port=server.port)
    with pytest.raises(ValueError, match="unknown limit"):
        serve_in_thread({APP_ID: APP_KEY}, limits={"no_such_limit": 1})


def test_cli_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from rts_sync.server.__main__ import main

    assert main(["--app", "no-colon-here"]) == 2
    assert main(["--app", APP_ID + ":" + APP_KEY, "--limit", "no_such_limit=1"]) == 2
    assert main(["--app", APP_ID + ":" + APP_KEY, "--limit", "login_timeout=soon"]) == 2
    assert main(["--app", "short:key"]) == 2
    assert main([]) == 2
    assert "unknown limit" in capsys.readouterr().err


def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rts_sync.server", "--app", "%s:%s" % (APP_ID, APP_KEY),
         "--port", "0", "--log-level", "INFO"], stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                break
        else:
            pytest.fail("the server did not start")
        c = RawClient("ws://127.0.0.1:%d/rts" % port)
        assert c.login("alice").code == 0
        proc.send_signal(signal.SIGTERM)
        c.expect_close(CloseCode.GOING_AWAY)
        c.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
