"""Fixtures for SDK tests against the real server: engines that are always destroyed, a
recording handler, tokens, and a check that no thread or descriptor of ours outlives a test."""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

import rts_sync
from rts_sync.token import mint_login_token

APP_ID = "rtsapp000000000000000001"
APP_KEY = "test-app-key-0001"
OTHER_APP_ID = "rtsapp000000000000000002"
OTHER_APP_KEY = "test-app-key-0002"
WAIT = 10.0


class Recorder(rts_sync.RTSEventHandler):
    """Records every callback as (name, args, thread name); waits are Condition waits."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, Tuple[Any, ...], str]] = []
        self.cond = threading.Condition()

    def _add(self, name: str, *args: Any) -> None:
        with self.cond:
            self.events.append((name, args, threading.current_thread().name))
            self.cond.notify_all()

    def of(self, name: str) -> List[Tuple[Any, ...]]:
        with self.cond:
            return [a for n, a, _ in self.events if n == name]

    def wait_for(self, pred: Callable[[], Any], timeout: float = WAIT) -> Any:
        with self.cond:
            result = self.cond.wait_for(pred, timeout)
        assert result, "timed out waiting; events: %r" % (
            [e for e in self.events if e[0] != "stats"][-20:],)
        return result

    def wait_count(self, name: str, n: int, timeout: float = WAIT) -> List[Tuple[Any, ...]]:
        self.wait_for(lambda: len([1 for e in self.events if e[0] == name]) >= n, timeout)
        return self.of(name)

    def on_login_result(self, uid: str, error_code: int, elapsed: int) -> None:
        self._add("login", uid, error_code, elapsed)

    def on_logout(self, reason: int) -> None:
        self._add("logout", reason)

    def on_connection_state_changed(self, state: int, reason: int) -> None:
        self._add("state", state, reason)

    def on_get_peer_online_status(self, peer_user_id: str, status: int) -> None:
        self._add("online", peer_user_id, status)

    def on_message_received(self, uid: str, message: str) -> None:
        self._add("msg", uid, message)

    def on_binary_message_received(self, uid: str, message: bytes) -> None:
        self._add("bin", uid, message)

    def on_message_send_result(self, msgid: int, error: int) -> None:
        self._add("result", msgid, error)

    def on_create_room_state_changed(self, room_id: str, error_code: int) -> None:
        self._add("create", room_id, error_code)

    def on_local_proxy_state_changed(self, type: int, state: int, error: int) -> None:
        self._add("proxy", type, state, error)

    def on_network_type_changed(self, type: int) -> None:
        self._add("network", type)

    def on_sys_stats(self, stats: Any) -> None:
        self._add("stats", stats)


def token(uid: str, app_id: str = APP_ID, app_key: str = APP_KEY, lifetime: int = 3600) -> str:
    return mint_login_token(app_id, app_key, uid, lifetime)


def our_threads() -> List[str]:
    return sorted(t.name for t in threading.enumerate()
                  if t.name.startswith(("rts-io-", "rts-supervisor-", "rts-cb-")))


def wait_no_threads(timeout: float = 5.0) -> List[str]:
    """Our threads still alive after at most ``timeout`` (a callback thread that destroyed its own
    engine ends right after its callback returns, so give it that long)."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t.name.startswith(("rts-io-", "rts-supervisor-", "rts-cb-")):
            t.join(max(0.0, deadline - time.monotonic()))
    return our_threads()


def client_fds(server_port: int) -> int:
    """Descriptors of this process, not counting the in-process server's own sockets (listening
    and accepted ones: local port == ``server_port``), which it closes on its own schedule."""
    server_inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == server_port:
                        server_inodes.add(cols[9])
        except FileNotFoundError:
            pass
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue  # the descriptor listdir itself used
        if not (link.startswith("socket:[") and link[8:-1] in server_inodes):
            n += 1
    return n


@pytest.fixture
def server() -> Iterator[Any]:
    from rts_sync.testing import serve_in_thread

    with serve_in_thread(apps={APP_ID: APP_KEY, OTHER_APP_ID: OTHER_APP_KEY}) as handle:
        yield handle


@pytest.fixture
def engines(server: Any) -> Iterator[Callable[..., Tuple[rts_sync.RTS, Recorder]]]:
    """A factory of (engine, recorder) pairs; every engine is destroyed and leak-checked."""
    made: List[rts_sync.RTS] = []
    fds_before = client_fds(server.port)

    def make(app_id: str = APP_ID, parameters: Optional[dict] = None,
             url: Optional[str] = None) -> Tuple[rts_sync.RTS, Recorder]:
        rec = Recorder()
        rts = rts_sync.create_rts(app_id, rec, parameters, server_url=url or server.url)
        made.append(rts)
        return rts, rec

    yield make
    for rts in made:
        rts.destroy()
    assert wait_no_threads() == []
    fds_after = client_fds(server.port)
    assert fds_after <= fds_before, "descriptors leaked: %d -> %d" % (fds_before, fds_after)


def login(make: Callable[..., Tuple[rts_sync.RTS, Recorder]], uid: str,
          **kw: Any) -> Tuple[rts_sync.RTS, Recorder]:
    rts, rec = make(**kw)
    assert rts.login(token(uid, kw.get("app_id", APP_ID),
                           OTHER_APP_KEY if kw.get("app_id") == OTHER_APP_ID else APP_KEY),
                     uid).result(WAIT) == 0
    return rts, rec


class RoomRecorder(rts_sync.RTSRoomEventHandler):
    """Records every room callback as (name, args); waits are Condition waits."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, Tuple[Any, ...]]] = []
        self.cond = threading.Condition()

    def _add(self, name: str, *args: Any) -> None:
        with self.cond:
            self.events.append((name, args))
            self.cond.notify_all()

    def of(self, name: str) -> List[Tuple[Any, ...]]:
        with self.cond:
            return [a for n, a in self.events if n == name]

    def wait_for(self, pred: Callable[[], Any], timeout: float = WAIT) -> Any:
        with self.cond:
            result = self.cond.wait_for(pred, timeout)
        assert result, "timed out waiting; events: %r" % (self.events[-20:],)
        return result

    def wait_count(self, name: str, n: int, timeout: float = WAIT) -> List[Tuple[Any, ...]]:
        self.wait_for(lambda: len([1 for e in self.events if e[0] == name]) >= n, timeout)
        return self.of(name)

    def on_room_state_changed(self, room_id: str, uid: str, state: int, extra_info: str) -> None:
        self._add("state", room_id, uid, state, extra_info)

    def on_leave_room(self) -> None:
        self._add("left")

    def on_user_joined(self, uid: str, elapsed: int) -> None:
        self._add("joined", uid, elapsed)

    def on_user_leave(self, uid: str, reason: int) -> None:
        self._add("leave", uid, reason)

    def on_room_message_received(self, uid: str, message: str) -> None:
        self._add("msg", uid, message)

    def on_room_binary_message_received(self, uid: str, message: bytes) -> None:
        self._add("bin", uid, message)

    def on_room_message_send_result(self, msgid: int, error: int) -> None:
        self._add("result", msgid, error)


def metric(server: Any, name: str) -> float:
    """The sum of a metric's samples on the server's /metrics page."""
    import urllib.request

    with urllib.request.urlopen(server.http_url + "/metrics", timeout=WAIT) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))
