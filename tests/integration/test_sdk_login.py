"""Login, logout, duplicate login, online status and the engine lifecycle, through the public API
against the real server on loopback."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from conftest import (
    APP_ID,
    APP_KEY,
    OTHER_APP_ID,
    WAIT,
    Recorder,
    client_fds,
    login,
    token,
    wait_no_threads,
)

import rts_sync
from rts_sync import (
    ClientClosed,
    ConnectionState,
    ConnectionStateChangeReason,
    InvalidArgumentError,
    InvalidStateError,
    LoginError,
    LoginErrorCode,
    UserOnlineStatus,
)
from rts_sync.token import AccessToken, Privilege


def test_login_reports_result_states_and_callback_threads(engines: Any) -> None:
    rts, rec = engines()
    op = rts.login(token("alice"), "alice")
    assert op.result(WAIT) == LoginErrorCode.SUCCESS
    # result() returns after the callback ran
    [(uid, code, elapsed)] = rec.of("login")
    assert (uid, code) == ("alice", 0) and 0 <= elapsed < WAIT * 1000
    states = rec.wait_count("state", 2)
    assert states == [(ConnectionState.CONNECTING, ConnectionStateChangeReason.LOGIN),
                      (ConnectionState.CONNECTED, ConnectionStateChangeReason.CONNECT_SUCCESS)]
    assert all(t.startswith("rts-cb-") for _, _, t in rec.events)
    with pytest.raises(InvalidStateError) as ei:
        rts.login(token("alice"), "alice")
    assert ei.value.code == -2


def _token_with(uid: str, **changes: Any) -> str:
    t = AccessToken(changes.pop("app_id", APP_ID), changes.pop("app_key", APP_KEY), "",
                    changes.pop("token_uid", uid))
    t.add_privilege(Privilege.PUBLISH_STREAM, 0)
    if "expire" in changes:
        t.expire_time(changes.pop("expire"))
    return t.serialize()


@pytest.mark.parametrize("bad", [
    {"app_key": "wrong key"},
    {"app_id": OTHER_APP_ID},
    {"expire": int(time.time()) - 10},
    {"token_uid": "mallory"},
])
def test_bad_tokens_fail_with_invalid_token_and_engine_can_retry(engines: Any,
                                                                 bad: dict) -> None:
    rts, rec = engines()
    op = rts.login(_token_with("alice", **bad), "alice")
    with pytest.raises(LoginError) as ei:
        op.result(WAIT)
    assert ei.value.code == LoginErrorCode.INVALID_TOKEN == -1000
    assert rec.of("login")[0][:2] == ("alice", -1000)
    # a failed login leaves the engine ready for another login
    assert rts.login(token("alice"), "alice").result(WAIT) == 0


def test_garbage_token_and_invalid_uid(engines: Any) -> None:
    rts, rec = engines()
    with pytest.raises(LoginError) as ei:
        rts.login("not a token", "alice").result(WAIT)
    assert ei.value.code == -1000
    with pytest.raises(LoginError) as ei:
        rts.login(token("bad uid!"), "bad uid!").result(WAIT)
    assert ei.value.code == LoginErrorCode.INVALID_USER_ID == -1002
    assert [a[1] for a in rec.of("login")] == [-1000, -1002]


def test_login_argument_errors(engines: Any) -> None:
    rts, _ = engines()
    with pytest.raises(InvalidArgumentError) as ei:
        rts.login("", "alice")
    assert ei.value.code == -1 and isinstance(ei.value, ValueError)
    with pytest.raises(InvalidArgumentError):
        rts.login(token("a"), "")
    with pytest.raises(TypeError):
        rts.login(token("a"), 5)  # type: ignore[arg-type]
    with pytest.raises(InvalidStateError) as si:
        rts.get_peer_online_status("bob")
    assert si.value.code == -3


def test_unreachable_server_fails_login_with_login_failed(engines: Any) -> None:
    with socket_bound_but_closed() as url:
        rts, rec = engines(url=url)
        with pytest.raises(LoginError) as ei:
            rts.login(token("alice"), "alice").result(WAIT)
        assert ei.value.code == LoginErrorCode.LOGIN_FAILED
        rec.wait_for(lambda: (ConnectionState.DISCONNECTED,
                              ConnectionStateChangeReason.CONNECT_FAILED) in rec.of("state"))


class socket_bound_but_closed:
    """A loopback port with nothing listening (bound, never listening, so no one else takes it)."""

    def __enter__(self) -> str:
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return "ws://127.0.0.1:%d/rts" % self.s.getsockname()[1]

    def __exit__(self, *exc: Any) -> None:
        self.s.close()


def test_duplicate_login_kicks_the_older_session(engines: Any) -> None:
    old, old_rec = login(engines, "alice")
    new, _ = login(engines, "alice")
    assert old_rec.wait_count("logout", 1) == [(rts_sync.LogoutReason.DUPLICATE_LOGIN,)]
    old_rec.wait_for(lambda: (ConnectionState.DISCONNECTED,
                              ConnectionStateChangeReason.KICKED) in old_rec.of("state"))
    assert old.stats()["logged_in"] is False
    bob, _ = login(engines, "bob")
    assert bob.get_peer_online_status("alice").result(WAIT) == UserOnlineStatus.ONLINE


def test_online_status(engines: Any) -> None:
    alice, rec = login(engines, "alice")
    assert alice.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.OFFLINE
    bob, _ = login(engines, "bob")
    assert alice.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.ONLINE
    assert alice.get_peer_online_status("alice").result(WAIT) == UserOnlineStatus.ONLINE
    assert alice.get_peer_online_status("no such user!").result(WAIT) == UserOnlineStatus.OFFLINE
    # another app's users are invisible
    carol, _ = login(engines, "carol", app_id=OTHER_APP_ID)
    assert alice.get_peer_online_status("carol").result(WAIT) == UserOnlineStatus.OFFLINE
    bob.logout().result(WAIT)
    assert alice.get_peer_online_status("bob").result(WAIT) == UserOnlineStatus.OFFLINE
    assert rec.of("online")[:2] == [("bob", 0), ("bob", 1)]


def test_logout_then_login_again(engines: Any) -> None:
    rts, rec = login(engines, "alice")
    assert rts.logout().result(WAIT) == 0
    assert rec.of("logout") == [(0,)]
    rec.wait_for(lambda: (ConnectionState.DISCONNECTED,
                          ConnectionStateChangeReason.LOGOUT) in rec.of("state"))
    assert rts.login(token("alice"), "alice").result(WAIT) == 0
    # logout without a login is harmless
    rts.logout().result(WAIT)
    assert rts.logout().result(WAIT) == 0


def test_destroy_leaves_no_thread_or_descriptor() -> None:
    from rts_sync.testing import serve_in_thread

    with serve_in_thread(apps={APP_ID: APP_KEY}) as server:
        fds = client_fds(server.port)
        threads = threading.active_count()
        for i in range(5):
            with rts_sync.create_rts(APP_ID, Recorder(), server_url=server.url) as rts:
                rts.login(token("u%d" % i), "u%d" % i).result(WAIT)
                names = [t.name for t in threading.enumerate()]
                cid = rts._core.id
                assert names.count("rts-io-%d" % cid) == names.count("rts-supervisor-%d" % cid) == 1
                assert 1 <= sum(n.startswith("rts-cb-%d-" % cid) for n in names) <= 4
        assert wait_no_threads() == []
        assert threading.active_count() == threads
        assert client_fds(server.port) == fds
        with pytest.raises(ClientClosed) as ei:
            rts.login(token("x"), "x")
        assert ei.value.code == -1
        rts.destroy()  # idempotent
        rts_sync.destroy_rts(rts)


def test_destroy_from_inside_a_callback(engines: Any) -> None:
    class Destroyer(Recorder):
        rts: rts_sync.RTS

        def on_login_result(self, uid: str, error_code: int, elapsed: int) -> None:
            self.rts.destroy()
            super().on_login_result(uid, error_code, elapsed)

    rts, _ = engines()
    d = Destroyer()
    d.rts = rts
    rts.set_rts_event_handler(d)
    op = rts.login(token("alice"), "alice")
    d.wait_count("login", 1)
    assert op.result(WAIT) == 0
    assert wait_no_threads() == []
