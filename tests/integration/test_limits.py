"""Every protective limit of the server is on by default, and each one holds against the real
server; the rate limits are off by default and hold when configured. (Limits tested elsewhere:
login timeout, connections per IP, sessions per app, p2p_qps in test_server_protocol.py; the slow
consumer there and in test_sdk_rooms.py; room_qps in test_sdk_rooms.py; server_qps in
test_app_server.py; push_qps in test_push_api.py.)"""

from __future__ import annotations

import base64
import os
import re
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

import pytest
from appserver import push
from conftest import APP_ID, APP_KEY, WAIT, metric, token
from hostile import ws_frame

import rts_sync
from rts_sync import ExceedQpsError, RoomError
from rts_sync import protocol as p
from rts_sync.protocol import CloseCode
from rts_sync.server import ws_guard
from rts_sync.server.config import Limits
from rts_sync.testing import ServerHandle, serve_in_thread
from rts_sync.token import mint_login_token

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
#: The limits that protect the server, each on by default (the rate limits are not among them).
PROTECTIVE = {
    "max_frame": 66560, "max_payload": 65536, "login_timeout": 10.0, "message_timeout": 10.0,
    "send_queue_frames": 4096, "slow_consumer_grace": 10.0, "resume_window": 30.0,
    "max_connections_per_ip": 10000, "max_sessions_per_app": 100000,
    "max_rooms_per_session": 1000, "room_notify_limit": 500, "app_server_timeout": 5.0,
    "app_server_concurrency": 64, "push_clock_skew": 300.0, "token_clock_skew": 300.0,
}
RATES = ("p2p_qps", "room_qps", "room_total_qps", "server_qps", "push_qps")


class RawWs:
    """A blocking WebSocket client that can lie in frame headers (hostile.ws_frame)."""

    def __init__(self, server: ServerHandle) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET /rts HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
                           "Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           % key).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0]
        self.conn = p.Connection(p.Role.CLIENT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(ws_frame(data))

    def close_code(self) -> Tuple[Optional[int], float]:
        """Read until the server's WebSocket close: (its code, seconds it took)."""
        t0 = time.monotonic()
        buf = b""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return None, time.monotonic() - t0
            buf += data
            while len(buf) >= 2:
                op, n = buf[0] & 0x0F, buf[1] & 0x7F
                head = 2
                if n == 126:
                    n, head = struct.unpack("!H", buf[2:4])[0], 4
                elif n == 127:
                    n, head = struct.unpack("!Q", buf[2:10])[0], 10
                if len(buf) < head + n:
                    break
                payload, buf = buf[head:head + n], buf[head + n:]
                if op == 0x8:
                    return struct.unpack("!H", payload[:2])[0], time.monotonic() - t0

    def close(self) -> None:
        self.sock.close()


def test_protective_limits_are_on_by_default_and_rate_limits_off() -> None:
    defaults = Limits()
    assert {name: getattr(defaults, name) for name in PROTECTIVE} == PROTECTIVE
    assert all(getattr(defaults, name) == 0 for name in RATES)
    assert set(Limits.names()) - set(PROTECTIVE) - set(RATES) <= {"node_heartbeat", "node_timeout",
                                                                      "cluster_resume"}


def test_every_limit_is_documented_in_security_md() -> None:
    text = DOCS.read_text()
    table = set(re.findall(r"^\| `([a-z_0-9]+)`", text, re.M))
    assert set(PROTECTIVE) | set(RATES) <= table


def test_a_default_server_announces_its_limits(server: ServerHandle) -> None:
    c = RawWs(server)
    c.send(c.conn.hello(APP_ID, "t"))
    data = c.sock.recv(65536)
    welcome = p.decode(data[2:], p.default_max_frame())  # one short unmasked frame
    assert isinstance(welcome, p.Welcome)
    assert (welcome.params["max_frame"], welcome.params["login_timeout"]) == (66560, 10.0)
    c.close()


@pytest.fixture(params=["as-installed", "ws_guard"])
def guarded_server(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerHandle]:
    """A server as installed (aiohttp 3.14.1 and later checks frame headers itself, older ones
    get rts_sync's ws_guard), and one that uses ws_guard whatever aiohttp is installed."""
    if request.param == "ws_guard":
        monkeypatch.setattr(ws_guard, "reader_checks_header", lambda: False)
    with serve_in_thread({APP_ID: APP_KEY}) as srv:
        yield srv


@pytest.mark.parametrize("claimed", [66561, 1 << 20, 1 << 40, (1 << 63) - 1])
@pytest.mark.parametrize("logged_in", [False, True])
def test_the_frame_size_is_checked_from_the_header_before_any_of_the_body(
        guarded_server: ServerHandle, claimed: int, logged_in: bool) -> None:
    """Only the header and 100 bytes are sent: the server must not wait for the rest."""
    c = RawWs(guarded_server)
    c.send(c.conn.hello(APP_ID, "t"))
    if logged_in:
        c.send(c.conn.request(p.Op.LOGIN, ("%s" % mint_login_token(APP_ID, APP_KEY, "big"),
                                          "big", None, 0))[1])
    c.sock.sendall(ws_frame(b"\x00" * 100, length=claimed))
    code, seconds = c.close_code()
    assert code == CloseCode.FRAME_TOO_LARGE and seconds < 2.0
    c.close()
    assert metric(guarded_server, "rts_protocol_errors_total") == 1


def test_an_oversized_frame_sent_with_the_upgrade_request_is_refused_too(
        guarded_server: ServerHandle) -> None:
    """The frames a client sends right behind its HTTP request, before the 101 comes back."""
    conn = p.Connection(p.Role.CLIENT)
    sock = socket.create_connection((guarded_server.host, guarded_server.port), timeout=WAIT)
    sock.sendall(b"GET /rts HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                 + ws_frame(conn.hello(APP_ID, "t")) + ws_frame(b"\x00" * 100, length=1 << 30))
    data = b""
    t0 = time.monotonic()
    while b"\x88" not in data.split(b"\r\n\r\n", 1)[-1] and time.monotonic() - t0 < 5:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    body = data.split(b"\r\n\r\n", 1)[1]
    close_at = body.index(b"\x88")  # the WebSocket close frame, after WELCOME and CLOSE
    assert struct.unpack("!H", body[close_at + 2:close_at + 4])[0] == CloseCode.FRAME_TOO_LARGE
    sock.close()


def test_pings_do_not_keep_an_unauthenticated_connection_open() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"login_timeout": 0.5}) as srv:
        c = RawWs(srv)
        c.send(c.conn.hello(APP_ID, "t"))
        c.sock.settimeout(0.1)
        t0 = time.monotonic()
        code: Any = None
        while time.monotonic() - t0 < 5 and code is None:
            c.send(c.conn.ping(1))
            try:
                code, _ = c.close_code()
            except socket.timeout:
                continue
        assert code == CloseCode.LOGIN_TIMEOUT and 0.4 < time.monotonic() - t0 < 3
        c.close()


def test_rooms_per_session_limit() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"max_rooms_per_session": 2}) as srv:
        with rts_sync.create_rts(APP_ID, server_url=srv.url) as a:
            a.login(token("alice"), "alice").result(WAIT)
            r1, r2, r3 = (a.create_room("room%d" % i) for i in (1, 2, 3))
            assert r1.join_room().result(WAIT) == 0 and r2.join_room().result(WAIT) == 0
            with pytest.raises(RoomError) as ei:
                r3.join_room().result(WAIT)
            assert ei.value.code == -1001 and "too many rooms" in str(ei.value)
            assert r1.leave_room().result(WAIT) == 0
            assert r3.join_room().result(WAIT) == 0  # room for one more now


def test_room_total_qps_limits_a_room_whatever_the_sender() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"room_total_qps": 2}) as srv:
        with rts_sync.create_rts(APP_ID, server_url=srv.url) as a, \
                rts_sync.create_rts(APP_ID, server_url=srv.url) as b:
            rooms = []
            for e, uid in ((a, "alice"), (b, "bob")):
                e.login(token(uid), uid).result(WAIT)
                rooms.append(e.create_room("busy"))
                assert rooms[-1].join_room().result(WAIT) == 0
            ops = [rooms[i % 2].send_room_message("m%d" % i) for i in range(4)]
            codes = []
            for op in ops:
                try:
                    codes.append(op.result(WAIT))
                except ExceedQpsError as exc:
                    codes.append(exc.code)
            assert codes.count(200) == 2 and codes.count(5) == 2, codes
            other = a.create_room("quiet")  # another room has its own budget
            assert other.join_room().result(WAIT) == 0
            assert other.send_room_message("x").result(WAIT) == 200


def test_p2p_qps_through_the_sdk_fails_the_excess_with_exceed_qps() -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"p2p_qps": 3}) as srv:
        with rts_sync.create_rts(APP_ID, server_url=srv.url) as a, \
                rts_sync.create_rts(APP_ID, server_url=srv.url) as b:
            a.login(token("alice"), "alice").result(WAIT)
            b.login(token("bob"), "bob").result(WAIT)
            ops = [a.send_message("bob", "m%d" % i) for i in range(6)]
            outcomes = [op.exception(WAIT) for op in ops]
            assert outcomes[:3] == [None] * 3
            assert any(isinstance(e, ExceedQpsError) and e.code == 5 for e in outcomes[3:])


def test_a_push_api_body_over_one_mebibyte_is_refused_unread(server: ServerHandle) -> None:
    status, answer = push(server.http_url, "SendUnicast", {}, data=b"x" * (2 << 20))
    assert status in (400, 413)
    if status == 400:
        assert answer["ResponseMetadata"]["Error"]["Code"] == "InvalidParameter"
