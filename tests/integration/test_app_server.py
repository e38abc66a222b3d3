"""Messages to the application server (P2Server) through the public API, against the real server
and a real HTTP application server on loopback (fast, failing, slow, absent). No mocks."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from typing import Any, Iterator, List

import pytest
from appserver import AK, SK, AppServer, EngineFactory, engine_factory
from conftest import APP_ID, APP_KEY, OTHER_APP_ID, OTHER_APP_KEY, WAIT, metric

import rts_sync
from rts_sync import (
    AppServerFailedError,
    AppServerUnreachableError,
    ExceedQpsError,
    InvalidArgumentError,
    InvalidStateError,
    MessageTooLargeError,
    NotLoggedInError,
    ServerParamsNotSetError,
)
from rts_sync.testing import ServerHandle, serve_in_thread
from rts_sync.token import mint_login_token

TIMEOUT = 1.0  # the server's app_server_timeout in these tests
SIG = "sig-of-alice"


@pytest.fixture
def app() -> Iterator[AppServer]:
    a = AppServer()
    yield a
    a.stop()


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with serve_in_thread({APP_ID: APP_KEY, OTHER_APP_ID: OTHER_APP_KEY},
                         limits={"app_server_timeout": TIMEOUT, "server_qps": 20},
                         access_keys={AK: SK}) as handle:
        yield handle


@pytest.fixture
def ports(app: AppServer) -> List[int]:
    return [app.port]


@pytest.fixture
def engines(server: ServerHandle, ports: List[int]) -> Iterator[EngineFactory]:
    yield from engine_factory(server, ports)


def login(engines: EngineFactory, uid: str, **kw: Any) -> Any:
    rts, rec = engines(**kw)
    app_id = kw.get("app_id", APP_ID)
    key = OTHER_APP_KEY if app_id == OTHER_APP_ID else APP_KEY
    assert rts.login(mint_login_token(app_id, key, uid), uid).result(WAIT) == 0
    return rts, rec


def with_params(engines: EngineFactory, uid: str, url: str, sig: str = SIG) -> Any:
    rts, rec = login(engines, uid)
    assert rts.set_server_params(sig, url).result(WAIT) == 200
    return rts, rec


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()  # nothing listens there now: connections are refused
    return port


# ---------------------------------------------------------------------------- set_server_params
def test_set_server_params_validation_result_and_kept_params(engines: EngineFactory,
                                                             app: AppServer) -> None:
    rts, rec = engines()
    with pytest.raises(InvalidStateError) as ei:
        rts.set_server_params(SIG, app.url("/ok"))
    assert ei.value.code == -3
    rts.login(mint_login_token(APP_ID, APP_KEY, "alice"), "alice").result(WAIT)
    for sig, url in [("", app.url("/ok")), (SIG, "ftp://127.0.0.1/x"), (SIG, "http://"),
                     (SIG, "127.0.0.1:80/x"), (SIG, ""), (SIG, "http://host:99999/")]:
        with pytest.raises(InvalidArgumentError) as ai:
            rts.set_server_params(sig, url)
        assert ai.value.code == -2
    with pytest.raises(TypeError):
        rts.set_server_params(SIG, b"http://127.0.0.1/")  # type: ignore[arg-type]
    assert rec.of("params") == []  # nothing was sent
    assert rts.set_server_params(SIG, app.url("/ok")).result(WAIT) == 200
    assert rts.set_server_params("sig2", "HTTPS://example.invalid/rts").result(WAIT) == 200
    assert rec.wait_count("params", 2) == [(200,), (200,)]
    # The I/O thread keeps the accepted params (a re-login applies them again); logout forgets.
    io = rts._core.io
    assert io.server_params == ("sig2", "HTTPS://example.invalid/rts")
    rts.logout().result(WAIT)
    assert io.server_params is None


# ---------------------------------------------------------------------------- round trips
def test_text_and_binary_round_trip_body_headers_and_shared_ids(
        engines: EngineFactory, app: AppServer, server: ServerHandle) -> None:
    alice, rec = with_params(engines, "alice", app.url("/ok"))
    bob, _ = login(engines, "bob")
    peer = alice.send_message("bob", "to bob")
    text = alice.send_server_message("héllo, 服务器")
    blob = bytes(range(256))
    binary = alice.send_server_binary_message(blob)
    ba = alice.send_server_binary_message(bytearray(b"\x00\x01"))
    assert [peer.msg_id, text.msg_id, binary.msg_id, ba.msg_id] == [1, 2, 3, 4]  # one sequence
    assert text.result(WAIT) == "answer:héllo, 服务器".encode()
    b64 = base64.b64encode(blob).decode()
    assert binary.result(WAIT) == b"answer:" + b64.encode()
    assert ba.result(WAIT) == b"answer:AAE="
    assert peer.result(WAIT) == 0
    results = rec.wait_count("server_result", 3)
    assert sorted(results) == [(2, 0, "answer:héllo, 服务器".encode()), (3, 0, b"answer:" + b64.encode()),
                               (4, 0, b"answer:AAE=")]
    reqs = app.wait_requests(3)
    bodies = {r[2]["message"]: r for r in reqs}
    path, headers, body = bodies["héllo, 服务器"]
    assert path == "/ok"
    assert body == {"message": "héllo, 服务器", "binary": False, "signature": SIG}
    assert bodies[b64][2] == {"message": b64, "binary": True, "signature": SIG}
    assert headers["X-Rts-App-Id"] == APP_ID and headers["X-Rts-User-Id"] == "alice"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(json.dumps(body)) == body
    assert metric(server, "rts_app_server_requests_total") == 3


def test_answer_of_exactly_64_kb_and_one_byte_more(engines: EngineFactory, app: AppServer) -> None:
    alice, rec = with_params(engines, "alice", app.url("/size/65536"))
    assert alice.send_server_message("x").result(WAIT) == b"z" * 65536
    assert alice.set_server_params(SIG, app.url("/size/65537")).result(WAIT) == 200
    op = alice.send_server_message("x")
    with pytest.raises(AppServerFailedError) as ei:  # never a truncated answer
        op.result(WAIT)
    assert ei.value.code == 18
    assert rec.wait_count("server_result", 2)[1] == (op.msg_id, 18, b"")


# ---------------------------------------------------------------------------- failure codes
def test_every_failure_code_through_operation_and_callback(engines: EngineFactory,
                                                           app: AppServer) -> None:
    alice, rec = login(engines, "alice")
    cases = []
    op = alice.send_server_message("before params")
    cases.append((op, ServerParamsNotSetError, 106))
    op.exception(WAIT)
    cases.append((alice.send_server_message("x" * 65537), MessageTooLargeError, 103))
    cases.append((alice.send_server_binary_message(b"x" * 65537), MessageTooLargeError, 103))
    for path in ("/status/500", "/status/404", "/status/302", "/status/201"):
        assert alice.set_server_params(SIG, app.url(path)).result(WAIT) == 200
        cases.append((alice.send_server_message(path), AppServerFailedError, 18))
    assert alice.set_server_params(SIG, "http://127.0.0.1:%d/" % closed_port()).result(WAIT) == 200
    cases.append((alice.send_server_message("nobody listens"), AppServerUnreachableError, 17))
    assert alice.set_server_params(SIG, app.url("/slow")).result(WAIT) == 200
    t0 = time.monotonic()
    slow = alice.send_server_message("too slow")
    cases.append((slow, AppServerUnreachableError, 17))
    for op, cls, code in cases:
        with pytest.raises(cls) as ei:
            op.result(WAIT)
        assert ei.value.code == code, op
    assert TIMEOUT - 0.1 < time.monotonic() - t0 < TIMEOUT + 2.0  # the server's timeout
    got = {r[0]: r[1:] for r in rec.wait_count("server_result", len(cases))}
    assert [got[op.msg_id] for op, _, _ in cases] == [(c, b"") for _, _, c in cases]
    alice.logout().result(WAIT)
    op = alice.send_server_message("logged out")
    with pytest.raises(NotLoggedInError) as ni:
        op.result(WAIT)
    assert ni.value.code == 105
    assert rec.wait_count("server_result", len(cases) + 1)[-1] == (op.msg_id, 105, b"")
    with pytest.raises(TypeError):
        alice.send_server_message(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        alice.send_server_binary_message("text")  # type: ignore[arg-type]


def test_over_server_qps_is_5(engines: EngineFactory, app: AppServer) -> None:
    alice, _ = with_params(engines, "alice", app.url("/ok"))
    ops = [alice.send_server_message("m%d" % i) for i in range(40)]  # 20/s allowed
    ok = failed = 0
    for op in ops:
        try:
            op.result(WAIT)
            ok += 1
        except ExceedQpsError as exc:
            assert exc.code == 5
            failed += 1
    assert ok >= 20 and failed >= 1, (ok, failed)


# ---------------------------------------------------------------------------- no delays
def test_slow_app_server_delays_neither_other_clients_nor_own_peer_messages(
        engines: EngineFactory, app: AppServer) -> None:
    alice, arec = with_params(engines, "alice", app.url("/slow"))
    carol, crec = with_params(engines, "carol", app.url("/ok"))
    bob, brec = login(engines, "bob")
    slow = [alice.send_server_message("slow %d" % i) for i in range(3)]
    app.wait_active(3)  # three requests hang in the app server now
    t0 = time.monotonic()
    assert [alice.send_message("bob", "a%d" % i).result(WAIT) for i in range(20)] == [0] * 20
    assert carol.send_message("bob", "from carol").result(WAIT) == 0
    assert carol.send_server_message("fast").result(WAIT) == b"answer:fast"
    assert alice.get_peer_online_status("bob").result(WAIT) == rts_sync.UserOnlineStatus.ONLINE
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT / 2, elapsed  # long before the slow ones end
    assert not any(op.done() for op in slow)
    assert [m for _, m in brec.wait_count("msg", 21)][:20] == ["a%d" % i for i in range(20)]
    app.release.set()
    for op in slow:  # answered late (after app_server_timeout): 17, or 0 if just in time
        assert op.exception(WAIT) is None or op.exception().code == 17


def test_concurrent_requests_per_app_are_bounded_and_the_rest_wait(app: AppServer,
                                                                   ports: List[int]) -> None:
    with serve_in_thread({APP_ID: APP_KEY}, limits={"app_server_concurrency": 2,
                                                    "app_server_timeout": 5}) as srv:
        factory = engine_factory(srv, ports)
        make = next(factory)
        try:
            users = [with_params(make, uid, app.url("/slow")) for uid in ("u1", "u2", "u3")]
            ops = [rts.send_server_message("%d" % i) for rts, _ in users for i in range(2)]
            # u1 has 2 (app_server_concurrency) outstanding: its connection is read no further
            ops.append(users[0][0].send_server_message("third"))
            peer = users[0][0].send_message("u2", "paced")
            app.wait_active(2)
            time.sleep(0.3)  # the other four wait for a slot: none reaches the app server
            assert app.active == 2 and len(app.requests) == 2
            assert not peer.done()
            app.release.set()
            assert [op.result(WAIT) for op in ops] == [b"late"] * 7
            assert peer.result(WAIT) == 0
            assert app.max_active == 2
        finally:
            next(factory, None)


# ---------------------------------------------------------------------------- tokens for scripts
def test_rts_token_cli_mints_a_login_token(engines: EngineFactory) -> None:
    out = subprocess.run([sys.executable, "-m", "rts_sync.token", "--app-id", APP_ID,
                          "--app-key", APP_KEY, "--uid", "script-1", "--lifetime", "60"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    rts, _ = engines()
    assert rts.login(out, "script-1").result(WAIT) == 0
