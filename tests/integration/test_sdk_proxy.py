"""``set_local_proxy`` through real proxies (microsocks for SOCKS5, tinyproxy for HTTP CONNECT),
started on loopback ports by the tests: the engine's connection must run through the proxy
process, and every failure must be reported with the right LocalProxyError."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, List

import pytest
from conftest import WAIT, login, token
from proxies import (
    Proxy,
    ScriptedPeer,
    free_port,
    my_remote_ports,
    run_microsocks,
    run_tinyproxy,
)

from rts_sync import (
    ConnectionState,
    ConnectionStateChangeReason,
    InvalidArgumentError,
    LocalProxyConfiguration,
    LocalProxyError,
    LocalProxyState,
    LocalProxyType,
    LoginError,
    LoginErrorCode,
)

SOCKS5, HTTP = LocalProxyType.SOCKS5, LocalProxyType.HTTP_TUNNEL
INITED, CONNECTED, ERROR = LocalProxyState.INITED, LocalProxyState.CONNECTED, LocalProxyState.ERROR
OK = LocalProxyError.OK


@pytest.fixture
def socks5(tmp_path: Path) -> Iterator[Proxy]:
    with run_microsocks(tmp_path) as p:
        yield p


@pytest.fixture
def socks5_auth(tmp_path: Path) -> Iterator[Proxy]:
    with run_microsocks(tmp_path, "sockuser", "sock-pass") as p:
        yield p


@pytest.fixture
def http(tmp_path: Path) -> Iterator[Proxy]:
    with run_tinyproxy(tmp_path) as p:
        yield p


@pytest.fixture
def http_auth(tmp_path: Path) -> Iterator[Proxy]:
    with run_tinyproxy(tmp_path, "webuser", "web-pass") as p:
        yield p


def _login_through(engines: Any, server: Any, proxy: Proxy, uid: str) -> Any:
    rts, rec = engines()
    assert rts.set_local_proxy([proxy.config()]) == 0
    assert rts.login(token(uid), uid).result(WAIT) == LoginErrorCode.SUCCESS
    assert rec.wait_count("proxy", 2) == [(proxy.kind, INITED, OK), (proxy.kind, CONNECTED, OK)]
    # The engine's socket goes to the proxy, not to the server; the proxy process talks to it.
    mine = my_remote_ports()
    assert proxy.port in mine and server.port not in mine
    assert server.port in proxy.remote_ports()
    return rts, rec


def _assert_through(engines: Any, server: Any, proxy: Proxy) -> None:
    """Login through ``proxy``, then a reliable message each way with a direct engine."""
    rts, rec = _login_through(engines, server, proxy, "alice")
    bob, bob_rec = login(engines, "bob")
    assert rts.send_message("bob", "via proxy").result(WAIT) == 0
    assert bob_rec.wait_count("msg", 1) == [("alice", "via proxy")]
    assert bob.send_message("alice", "back").result(WAIT) == 0
    assert rec.wait_count("msg", 1) == [("bob", "back")]


def test_socks5_without_auth(engines: Any, server: Any, socks5: Proxy) -> None:
    _assert_through(engines, server, socks5)


def test_socks5_with_username_and_password(engines: Any, server: Any, socks5_auth: Proxy) -> None:
    _assert_through(engines, server, socks5_auth)


def test_http_connect_without_auth(engines: Any, server: Any, http: Proxy) -> None:
    _assert_through(engines, server, http)
    assert "CONNECT" in http.log.read_text(errors="replace")


def test_http_connect_with_basic_auth(engines: Any, server: Any, http_auth: Proxy) -> None:
    _assert_through(engines, server, http_auth)


def test_both_configured_signaling_uses_socks5(engines: Any, server: Any, socks5: Proxy,
                                               http: Proxy) -> None:
    rts, rec = engines()
    rts.set_local_proxy([http.config(), socks5.config()])
    assert rts.login(token("alice"), "alice").result(WAIT) == 0
    assert rec.wait_count("proxy", 2) == [(SOCKS5, INITED, OK), (SOCKS5, CONNECTED, OK)]
    mine = my_remote_ports()
    assert socks5.port in mine and http.port not in mine and server.port not in mine


def _failed_login(rts: Any, rec: Any, uid: str = "alice") -> None:
    with pytest.raises(LoginError) as ei:
        rts.login(token(uid), uid).result(WAIT)
    assert ei.value.code == LoginErrorCode.LOGIN_FAILED
    assert rec.wait_count("state", 2)[-1] == (ConnectionState.DISCONNECTED,
                                              ConnectionStateChangeReason.PROXY_ERROR)


def test_socks5_wrong_password(engines: Any, socks5_auth: Proxy) -> None:
    rts, rec = engines()
    rts.set_local_proxy([socks5_auth.config(password="wrong")])
    _failed_login(rts, rec)
    assert rec.of("proxy") == [(SOCKS5, INITED, OK),
                               (SOCKS5, ERROR, LocalProxyError.SOCKS5_USER_PASS_NOT_GIVEN)]


def test_socks5_credentials_required_but_not_given(engines: Any, socks5_auth: Proxy) -> None:
    rts, rec = engines()
    rts.set_local_proxy([socks5_auth.config(user="", password="")])
    _failed_login(rts, rec)
    assert rec.of("proxy")[-1] == (SOCKS5, ERROR, LocalProxyError.SOCKS5_USER_PASS_NOT_GIVEN)


def test_http_wrong_password_is_a_failed_tunnel(engines: Any, http_auth: Proxy) -> None:
    rts, rec = engines()
    rts.set_local_proxy([http_auth.config(password="wrong")])
    _failed_login(rts, rec)
    assert rec.of("proxy") == [(HTTP, INITED, OK), (HTTP, ERROR, LocalProxyError.HTTP_TUNNEL_FAILED)]
    assert "407" in http_auth.log.read_text(errors="replace") or "auth" in \
        http_auth.log.read_text(errors="replace").lower()


@pytest.mark.parametrize("kind,error", [(SOCKS5, LocalProxyError.SOCKS5_TCP_CLOSED),
                                        (HTTP, LocalProxyError.HTTP_TUNNEL_FAILED)])
def test_dead_proxy(engines: Any, kind: LocalProxyType, error: LocalProxyError) -> None:
    rts, rec = engines()
    rts.set_local_proxy([LocalProxyConfiguration(kind, "127.0.0.1", free_port())])
    _failed_login(rts, rec)
    assert rec.of("proxy") == [(kind, ERROR, error)]  # never got a TCP connection: no INITED
    # A failed login leaves the engine ready: clearing the proxy makes the next login direct.
    assert rts.set_local_proxy([]) == 0
    assert rts.login(token("alice"), "alice").result(WAIT) == 0


_GREETING_OK = b"\x05\x00"
_REQUEST_OK = b"\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50"


@pytest.mark.parametrize("replies,error", [
    # an HTTP server where a SOCKS5 proxy was expected
    ([b"HTTP/1.1 400 Bad Request\r\n\r\n"], LocalProxyError.SOCKS5_VERSION_ERROR),
    ([_GREETING_OK, b"\x04\x5a\x00\x00"], LocalProxyError.SOCKS5_VERSION_ERROR),
    ([b"\x05\x03"], LocalProxyError.SOCKS5_INVALID_VALUE),  # a method we did not offer
    ([_GREETING_OK, b"\x05\x00\x00\x09\x00\x00"], LocalProxyError.SOCKS5_FORMAT_ERROR),
    ([_GREETING_OK, b"\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00"],
     LocalProxyError.SOCKS5_TCP_CLOSED),  # the proxy could not reach the server
    ([_GREETING_OK], LocalProxyError.SOCKS5_TCP_CLOSED),  # closed in the middle
], ids=["http-reply", "socks4-reply", "method", "atyp", "refused", "closed"])
def test_misbehaving_socks5_proxy(engines: Any, replies: List[bytes],
                                  error: LocalProxyError) -> None:
    peer = ScriptedPeer(replies)
    try:
        rts, rec = engines()
        rts.set_local_proxy([LocalProxyConfiguration(SOCKS5, "127.0.0.1", peer.port)])
        _failed_login(rts, rec)
        assert rec.of("proxy") == [(SOCKS5, INITED, OK), (SOCKS5, ERROR, error)]
        assert peer.received[0] == b"\x05\x01\x00"  # greeting: no auth offered
    finally:
        peer.close()


def test_http_proxy_answering_garbage(engines: Any) -> None:
    peer = ScriptedPeer([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"])
    try:
        rts, rec = engines()
        rts.set_local_proxy([LocalProxyConfiguration(HTTP, "127.0.0.1", peer.port)])
        _failed_login(rts, rec)
        assert rec.of("proxy") == [(HTTP, INITED, OK), (HTTP, ERROR, LocalProxyError.HTTP_TUNNEL_FAILED)]
        assert peer.received[0].startswith(b"CONNECT 127.0.0.1:")
    finally:
        peer.close()


def test_proxy_that_cannot_reach_the_server(engines: Any, socks5: Proxy, http: Proxy) -> None:
    dead_server = "ws://127.0.0.1:%d/rts" % free_port()
    for proxy, error in [(socks5, LocalProxyError.SOCKS5_TCP_CLOSED),
                         (http, LocalProxyError.HTTP_TUNNEL_FAILED)]:
        rts, rec = engines(url=dead_server)
        rts.set_local_proxy([proxy.config()])
        _failed_login(rts, rec)
        assert rec.of("proxy") == [(proxy.kind, INITED, OK), (proxy.kind, ERROR, error)]


def test_empty_list_clears_and_each_attempt_reads_the_setting(engines: Any, server: Any,
                                                               socks5: Proxy) -> None:
    rts, rec = _login_through(engines, server, socks5, "alice")
    assert rts.logout().result(WAIT) == 0
    rts.set_local_proxy([])
    assert rts.login(token("alice"), "alice").result(WAIT) == 0
    assert len(rec.of("proxy")) == 2  # no proxy events for the direct connection
    mine = my_remote_ports()
    assert server.port in mine and socks5.port not in mine


def test_set_local_proxy_validates(engines: Any) -> None:
    rts, _ = engines()
    cfg = LocalProxyConfiguration(SOCKS5, "127.0.0.1", 1080)
    with pytest.raises(TypeError):
        rts.set_local_proxy(cfg)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        rts.set_local_proxy([("127.0.0.1", 1080)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError) as ei:
        rts.set_local_proxy([cfg, cfg])
    assert ei.value.code == -2
    with pytest.raises(InvalidArgumentError):
        rts.set_local_proxy([LocalProxyConfiguration(SOCKS5, "127.0.0.1", 1080, "user", "")])
    with pytest.raises(InvalidArgumentError):
        rts.set_local_proxy([LocalProxyConfiguration(SOCKS5, "127.0.0.1", 1080, "u" * 256, "p")])
    with pytest.raises(TypeError):
        rts.set_cellular_enhancement(1)  # type: ignore[arg-type]
    assert rts.set_cellular_enhancement(True) == 0 and rts.set_cellular_enhancement(False) == 0
