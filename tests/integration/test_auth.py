"""Authentication and isolation between apps, against the real server (the token checks at the
protocol level are in test_server_protocol.py, through the SDK in test_sdk_login.py; peer
messages and online status across apps in test_sdk_environment.py; the push API's signature,
X-Date window, replay and tampering in test_push_api.py).

Added here: tokens issued in the future (refused beyond ``token_clock_skew``), constant-time
comparisons, rooms and the push API never crossing apps (access keys limited to apps), a
session that cannot be resumed from another app, and replays of the push API disguised by
re-spelling the signature or adding headers.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import websocket
from appserver import send_raw
from conftest import (
    APP_ID,
    APP_KEY,
    OTHER_APP_ID,
    OTHER_APP_KEY,
    WAIT,
    Recorder,
    RoomRecorder,
    wait_no_threads,
)

import rts_sync
from rts_sync import LoginError
from rts_sync import protocol as p
from rts_sync.server.signing import sign_request, verify_request
from rts_sync.testing import ServerHandle, serve_in_thread
from rts_sync.token import mint_login_token, parse

AK1, SK1 = "AKapp1only", "secret-1"
AK2, SK2 = "AKapp2only", "secret-2"
AK_ALL, SK_ALL = "AKoperator", "secret-all"
KEYS = {APP_ID: APP_KEY, OTHER_APP_ID: OTHER_APP_KEY}


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with serve_in_thread(KEYS, access_keys={AK1: SK1, AK2: SK2, AK_ALL: SK_ALL},
                         access_key_apps={AK1: [APP_ID], AK2: [OTHER_APP_ID]}) as srv:
        yield srv


@pytest.fixture
def engines(server: ServerHandle) -> Iterator[Any]:
    made: List[rts_sync.RTS] = []

    def login(uid: str, app_id: str = APP_ID) -> Tuple[rts_sync.RTS, Recorder]:
        rec = Recorder()
        rts = rts_sync.create_rts(app_id, rec, server_url=server.url)
        made.append(rts)
        assert rts.login(mint_login_token(app_id, KEYS[app_id], uid), uid).result(WAIT) == 0
        return rts, rec

    yield login
    for rts in made:
        rts.destroy()
    assert wait_no_threads() == []


# ------------------------------------------------------------------------------------ tokens
def test_a_token_issued_in_the_future_is_refused_beyond_the_clock_skew(server: ServerHandle) -> None:
    now = int(time.time())
    with rts_sync.create_rts(APP_ID, server_url=server.url) as rts:
        with pytest.raises(LoginError) as ei:
            rts.login(mint_login_token(APP_ID, APP_KEY, "alice", now=now + 3600), "alice").result(WAIT)
        assert ei.value.code == -1000 and "not valid yet" in str(ei.value)
        # a clock a minute ahead is tolerated (token_clock_skew, 300 s by default)
        assert rts.login(mint_login_token(APP_ID, APP_KEY, "alice", now=now + 60),
                         "alice").result(WAIT) == 0
    with serve_in_thread(KEYS, limits={"token_clock_skew": 10}) as strict:
        with rts_sync.create_rts(APP_ID, server_url=strict.url) as rts:
            with pytest.raises(LoginError) as ei:
                rts.login(mint_login_token(APP_ID, APP_KEY, "alice", now=now + 60),
                          "alice").result(WAIT)
            assert ei.value.code == -1000


def test_another_apps_token_or_key_never_logs_in(server: ServerHandle) -> None:
    with rts_sync.create_rts(APP_ID, server_url=server.url) as rts:
        for tok in (mint_login_token(OTHER_APP_ID, OTHER_APP_KEY, "alice"),  # app 2's token
                    mint_login_token(APP_ID, OTHER_APP_KEY, "alice")):       # signed with app 2's key
            with pytest.raises(LoginError) as ei:
                rts.login(tok, "alice").result(WAIT)
            assert ei.value.code == -1000


def test_secrets_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token signatures and push API signatures go through hmac.compare_digest."""
    calls: List[Tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    tok = parse(mint_login_token(APP_ID, APP_KEY, "alice"))
    assert tok.verify(APP_KEY) and not tok.verify("wrong")
    assert len(calls) == 2
    url = "http://h:1/?Action=SendUnicast&Version=2020-12-01"
    headers = sign_request("POST", url, b"{}", "AK", "SK", now=1_700_000_000)
    verify_request("POST", "/", [("Action", "SendUnicast"), ("Version", "2020-12-01")],
                   list(headers.items()), b"{}", {"AK": "SK"}, 1_700_000_000.0, 300.0)
    assert len(calls) == 3


# ---------------------------------------------------------------------------- app isolation
def test_rooms_with_the_same_id_in_two_apps_never_meet(engines: Any) -> None:
    members: Dict[str, Tuple[rts_sync.RTSRoom, RoomRecorder]] = {}
    for uid, app_id in (("alice", APP_ID), ("bob", APP_ID), ("carol", OTHER_APP_ID),
                        ("alice2", OTHER_APP_ID)):
        rts, _ = engines(uid if uid != "alice2" else "alice", app_id)
        room = rts.create_room("lobby")
        rec = RoomRecorder()
        room.set_rts_room_event_handler(rec)
        assert room.join_room().result(WAIT) == 0
        members[uid] = (room, rec)
    assert members["bob"][1].of("joined") == [("alice", 0)]     # app 1's member list only
    assert members["alice2"][1].of("joined") == [("carol", 0)]  # app 2's, same uid "alice"
    assert members["alice"][0].send_room_message("app 1 only").result(WAIT) == 200
    assert members["carol"][0].send_room_message("app 2 only").result(WAIT) == 200
    assert members["bob"][1].wait_count("msg", 1) == [("alice", "app 1 only")]
    assert members["alice2"][1].wait_count("msg", 1) == [("carol", "app 2 only")]
    time.sleep(0.2)
    assert [m for _, m in members["alice"][1].of("msg")] == []
    assert [m for _, m in members["carol"][1].of("msg")] == []
    assert [u for u, _ in members["alice"][1].of("joined")] == ["bob"]
    assert [u for u, _ in members["carol"][1].of("joined")] == ["alice"]  # app 2's alice


def _push(server: ServerHandle, ak: str, sk: str, body: Dict[str, Any],
          action: str = "SendUnicast") -> Tuple[int, str]:
    url = "%s/?Action=%s&Version=2020-12-01" % (server.http_url, action)
    raw = json.dumps(body).encode()
    status, answer = send_raw(url, raw, sign_request("POST", url, raw, ak, sk))
    return status, answer["ResponseMetadata"].get("Error", {}).get("Code", "OK")


def test_the_push_api_reaches_only_the_app_named_and_keys_only_their_apps(
        server: ServerHandle, engines: Any) -> None:
    _, bob2 = engines("bob", OTHER_APP_ID)  # bob exists only in app 2
    _, alice1 = engines("alice", APP_ID)
    msg = {"From": "app-server", "To": "bob", "Binary": False}
    # app 1 has no bob, whatever key is used
    assert _push(server, AK_ALL, SK_ALL, dict(msg, AppId=APP_ID, Message="x")) == (404, "UserNotOnline")
    # app 1's key cannot reach app 2's users; app 2's key and the operator's key can
    assert _push(server, AK1, SK1, dict(msg, AppId=OTHER_APP_ID, Message="x")) == (403, "AccessDenied")
    assert _push(server, AK2, SK2, dict(msg, AppId=OTHER_APP_ID, Message="from key 2")) == (200, "OK")
    assert _push(server, AK_ALL, SK_ALL, dict(msg, AppId=OTHER_APP_ID, Message="from all")) == (200, "OK")
    assert _push(server, AK2, SK2, dict(msg, To="alice", AppId=APP_ID, Message="x")) == (403, "AccessDenied")
    broadcast = {"AppId": OTHER_APP_ID, "RoomId": "lobby", "From": "s", "Binary": False,
                 "Message": "x"}
    assert _push(server, AK1, SK1, broadcast, "SendBroadcast") == (403, "AccessDenied")
    assert bob2.wait_count("msg", 2) == [("app-server", "from key 2"), ("app-server", "from all")]
    time.sleep(0.2)
    assert alice1.of("msg") == []


def test_a_limited_access_key_must_name_apps_the_server_has() -> None:
    with pytest.raises(ValueError, match="not served"):
        serve_in_thread(KEYS, access_keys={AK1: SK1}, access_key_apps={AK1: ["rtsapp000000000000000099"]})
    with pytest.raises(ValueError, match="not an access key"):
        serve_in_thread(KEYS, access_keys={AK1: SK1}, access_key_apps={"AKnone": [APP_ID]})
    from rts_sync.server.__main__ import main

    app = ["--app", "%s:%s" % (APP_ID, APP_KEY), "--access-key", "%s:%s" % (AK1, SK1)]
    assert main([*app, "--access-key-apps", "%s:%s" % (AK1, OTHER_APP_ID)]) == 2
    assert main([*app, "--access-key-apps", AK1]) == 2


def test_a_session_cannot_be_resumed_from_another_app(server: ServerHandle) -> None:
    ws = websocket.create_connection(server.url, timeout=WAIT)
    conn = p.Connection(p.Role.CLIENT)
    ws.send_binary(conn.hello(APP_ID, "t"))
    conn.receive(ws.recv())
    _, data = conn.request(p.Op.LOGIN, (mint_login_token(APP_ID, APP_KEY, "alice"), "alice", None, 0))
    ws.send_binary(data)
    session_id = None
    while session_id is None:
        ev = conn.receive(ws.recv())
        if isinstance(ev, p.Response):
            session_id = ev.result["session"]
    ws.shutdown()  # dropped: the session waits for a resume in app 1
    other = websocket.create_connection(server.url, timeout=WAIT)
    c2 = p.Connection(p.Role.CLIENT)
    other.send_binary(p.encode(p.Hello((1,), OTHER_APP_ID, "t", (session_id, 0))))
    welcome = c2.receive(other.recv())
    assert welcome.params["resumed"] is False and welcome.params["resume_error"] == "expired"
    other.close()


# ------------------------------------------------------------------- push API replays in disguise
def test_a_replay_is_refused_however_it_is_re_spelled(server: ServerHandle, engines: Any) -> None:
    _, bob = engines("bob", APP_ID)
    url = server.http_url + "/?Action=SendUnicast&Version=2020-12-01"
    raw = json.dumps({"AppId": APP_ID, "From": "s", "To": "bob", "Binary": False,
                      "Message": "once"}).encode()
    headers = sign_request("POST", url, raw, AK1, SK1)
    assert send_raw(url, raw, headers)[0] == 200
    variants = [
        dict(headers, Authorization=headers["Authorization"].replace(
            "Signature=" + headers["Authorization"].rsplit("=", 1)[1],
            "Signature=" + headers["Authorization"].rsplit("=", 1)[1].upper())),
        dict(headers, Authorization=headers["Authorization"].replace(", ", " ,  ")),
        dict(headers, **{"X-Extra-Unsigned": "1", "User-Agent": "replayer"}),
    ]
    for h in variants:
        status, answer = send_raw(url, raw, h)
        assert (status, answer["ResponseMetadata"]["Error"]["Code"]) == (403, "ReplayedRequest"), h
    # re-dating it without signing again breaks the signature
    redated = dict(headers, **{"X-Date": time.strftime("%Y%m%dT%H%M%SZ",
                                                       time.gmtime(time.time() + 5))})
    status, answer = send_raw(url, raw, redated)
    assert status in (400, 401)
    assert answer["ResponseMetadata"]["Error"]["Code"] in ("SignatureDoesNotMatch", "InvalidCredential")
    time.sleep(0.2)
    assert bob.of("msg") == [("s", "once")]
