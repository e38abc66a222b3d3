"""The push API for application servers (Volcengine OpenAPI shape, V4 signature), called with
the official ``volcengine`` package and with rts_sync's own signer, against the real server."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
from appserver import AK, SK, EngineFactory, engine_factory, push, send_raw
from conftest import APP_ID, APP_KEY, WAIT, RoomRecorder, metric
from volcengine.ApiInfo import ApiInfo
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Service import Service
from volcengine.Credentials import Credentials
from volcengine.ServiceInfo import ServiceInfo

from rts_sync.server.signing import sign_request
from rts_sync.testing import ServerHandle, serve_in_thread
from rts_sync.token import mint_login_token

FROM = "app-server"


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    with serve_in_thread({APP_ID: APP_KEY}, access_keys={AK: SK, "AKother": "other-secret"}
                         ) as handle:
        yield handle


@pytest.fixture
def engines(server: ServerHandle) -> Iterator[EngineFactory]:
    yield from engine_factory(server, [])


def login(engines: EngineFactory, uid: str) -> Any:
    rts, rec = engines()
    assert rts.login(mint_login_token(APP_ID, APP_KEY, uid), uid).result(WAIT) == 0
    return rts, rec


def volc_rtc(http_url: str, ak: str = AK, sk: str = SK, version: str = "2020-12-01") -> Service:
    """The official SDK's Service for the RTC OpenAPI, with its host pointed at our server."""
    host = http_url.split("://", 1)[1]
    info = ServiceInfo(host, {"Accept": "application/json"},
                       Credentials(ak, sk, "rtc", "cn-north-1"), 5, 5, scheme="http")
    apis = {a: ApiInfo("POST", "/", {"Action": a, "Version": version}, {}, {})
            for a in ("SendUnicast", "SendBroadcast", "SendRoomUnicast", "BatchSendRoomUnicast")}
    svc = Service(info, apis)
    svc.set_ak(ak)  # Service() may have read other keys from the environment or ~/.volc
    svc.set_sk(sk)
    return svc


def volc_call(svc: Service, action: str, body: Dict[str, Any]) -> Tuple[bool, Dict[str, Any]]:
    """(succeeded, JSON answer): the SDK returns the text on 200 and raises it otherwise."""
    try:
        return True, json.loads(svc.json(action, {}, json.dumps(body)))
    except Exception as exc:
        text = exc.args[0]
        return False, json.loads(text.decode() if isinstance(text, bytes) else text)


def check_meta(answer: Dict[str, Any], action: str, error: Optional[str] = None) -> None:
    meta = answer["ResponseMetadata"]
    assert meta["Action"] == action and meta["Service"] == "rtc"
    assert meta["Region"] == "cn-north-1" and meta["RequestId"]
    assert meta["Version"] in ("2020-12-01", "2023-07-20")
    if error is None:
        assert "Error" not in meta and answer["Result"] == {"Message": "success"}
    else:
        assert meta["Error"]["Code"] == error and meta["Error"]["Message"], meta
        assert "Result" not in answer


# ---------------------------------------------------------------------------- accepted
def test_volcengine_sdk_send_unicast_text_and_binary(engines: EngineFactory,
                                                     server: ServerHandle) -> None:
    _, brec = login(engines, "bob")
    svc = volc_rtc(server.http_url)
    ok, answer = volc_call(svc, "SendUnicast", {"AppId": APP_ID, "From": FROM, "To": "bob",
                                                "Binary": False, "Message": "hello bob, 你好"})
    assert ok, answer
    check_meta(answer, "SendUnicast")
    blob = bytes(range(256)) * 10
    ok, answer = volc_call(svc, "SendUnicast", {
        "AppId": APP_ID, "From": FROM, "To": "bob", "Binary": True,
        "Message": base64.b64encode(blob).decode()})
    assert ok, answer
    assert brec.wait_count("msg", 1) == [(FROM, "hello bob, 你好")]
    assert brec.wait_count("bin", 1) == [(FROM, blob)]
    # The 2023-07-20 version and rts_sync's own signer are accepted too.
    ok, answer = volc_call(volc_rtc(server.http_url, version="2023-07-20"), "SendUnicast",
                           {"AppId": APP_ID, "From": FROM, "To": "bob", "Message": "v2023"})
    assert ok, answer
    status, answer = push(server.http_url, "SendUnicast", {
        "AppId": APP_ID, "From": "server.2", "To": "bob", "Binary": False, "Message": ""})
    assert status == 200, answer
    check_meta(answer, "SendUnicast")
    assert brec.wait_count("msg", 3)[1:] == [(FROM, "v2023"), ("server.2", "")]
    assert metric(server, "rts_push_requests_total") == 4


def test_volcengine_sdk_send_broadcast_reaches_every_member(engines: EngineFactory,
                                                            server: ServerHandle) -> None:
    recs: List[RoomRecorder] = []
    for uid in ("alice", "bob", "carol"):
        rts, _ = login(engines, uid)
        room = rts.create_room("lobby")
        rec = RoomRecorder()
        room.set_rts_room_event_handler(rec)
        assert room.join_room().result(WAIT) == 0
        recs.append(rec)
    svc = volc_rtc(server.http_url)
    ok, answer = volc_call(svc, "SendBroadcast", {"AppId": APP_ID, "RoomId": "lobby", "From": FROM,
                                                  "Binary": False, "Message": "to everyone"})
    assert ok, answer
    check_meta(answer, "SendBroadcast")
    ok, answer = volc_call(svc, "SendBroadcast", {
        "AppId": APP_ID, "RoomId": "lobby", "From": FROM, "Binary": True,
        "Message": base64.b64encode(b"\x00\xff").decode()})
    assert ok, answer
    for rec in recs:
        assert rec.wait_count("msg", 1) == [(FROM, "to everyone")]
        assert rec.wait_count("bin", 1) == [(FROM, b"\x00\xff")]
    # nobody in the room: a clear error
    ok, answer = volc_call(svc, "SendBroadcast", {"AppId": APP_ID, "RoomId": "empty", "From": FROM,
                                                  "Binary": False, "Message": "x"})
    assert not ok
    check_meta(answer, "SendBroadcast", "RoomNotFound")


# ---------------------------------------------------------------------------- refused
def test_wrong_secret_stale_date_replay_and_tampering_are_refused(
        engines: EngineFactory, server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    _, brec = login(engines, "bob")
    body = {"AppId": APP_ID, "From": FROM, "To": "bob", "Binary": False, "Message": "m"}
    url = server.http_url + "/?Action=SendUnicast&Version=2020-12-01"

    def refused(status: int, answer: Dict[str, Any], code: str, http: int) -> None:
        assert status == http, answer
        check_meta(answer, "SendUnicast", code)

    # wrong secret, with the official SDK
    ok, answer = volc_call(volc_rtc(server.http_url, sk="not-the-secret"), "SendUnicast", body)
    assert not ok
    check_meta(answer, "SendUnicast", "SignatureDoesNotMatch")
    # an unknown access key; another configured key is fine
    ok, answer = volc_call(volc_rtc(server.http_url, ak="AKnobody"), "SendUnicast", body)
    assert not ok and answer["ResponseMetadata"]["Error"]["Code"] == "InvalidAccessKey"
    ok, _ = volc_call(volc_rtc(server.http_url, "AKother", "other-secret"), "SendUnicast",
                      dict(body, Message="other key"))
    assert ok
    # a stale and a future X-Date, signed by the official SDK with its clock moved
    for shift in (-301, 400):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + shift))
        monkeypatch.setattr(SignerV4, "get_current_format_date", staticmethod(lambda s=stamp: s))
        ok, answer = volc_call(volc_rtc(server.http_url), "SendUnicast", body)
        assert not ok
        check_meta(answer, "SendUnicast", "InvalidTimestamp")
    monkeypatch.undo()
    # ... and by ours
    raw = json.dumps(body).encode()
    refused(*send_raw(url, raw, sign_request("POST", url, raw, AK, SK, now=time.time() - 600)),
            "InvalidTimestamp", 403)
    # a replay: the same signed request twice
    headers = sign_request("POST", url, raw, AK, SK)
    assert send_raw(url, raw, headers)[0] == 200
    refused(*send_raw(url, raw, headers), "ReplayedRequest", 403)
    # a tampered body: with the signed X-Content-Sha256, and with a matching new one
    tampered = json.dumps(dict(body, Message="evil")).encode()
    headers = sign_request("POST", url, raw, AK, SK)
    refused(*send_raw(url, tampered, headers), "SignatureDoesNotMatch", 401)
    headers["X-Content-Sha256"] = hashlib.sha256(tampered).hexdigest()
    refused(*send_raw(url, tampered, headers), "SignatureDoesNotMatch", 401)
    # a tampered query (another action) and a missing signature
    other = server.http_url + "/?Action=SendBroadcast&Version=2020-12-01"
    status, answer = send_raw(other, raw, sign_request("POST", url, raw, AK, SK))
    assert status == 401 and answer["ResponseMetadata"]["Error"]["Code"] == "SignatureDoesNotMatch"
    refused(*send_raw(url, raw, {"Content-Type": "application/json"}),
            "MissingAuthenticationToken", 401)
    headers = sign_request("POST", url, raw, AK, SK)
    headers["Authorization"] = headers["Authorization"].replace("host;", "")
    refused(*send_raw(url, raw, headers), "InvalidAuthorization", 400)
    # only the two accepted requests arrived
    time.sleep(0.2)
    assert brec.of("msg") == [(FROM, "other key"), (FROM, "m")]


def test_unreceivable_actions_and_bad_fields_get_clear_errors(engines: EngineFactory,
                                                              server: ServerHandle) -> None:
    login(engines, "bob")
    ok = {"AppId": APP_ID, "From": FROM, "To": "bob", "Binary": False, "Message": "m"}
    svc = volc_rtc(server.http_url)
    for action in ("SendRoomUnicast", "BatchSendRoomUnicast"):
        body = dict(ok, RoomId="lobby", To=["bob"] if action.startswith("Batch") else "bob")
        good, answer = volc_call(svc, action, body)
        assert not good
        check_meta(answer, action, "UnsupportedOperation")
        assert "SendUnicast" in answer["ResponseMetadata"]["Error"]["Message"]
    cases = [
        ("SendUnicast", dict(ok, AppId="rtsapp000000000000000099"), 404, "AppNotFound"),
        ("SendUnicast", dict(ok, To="nobody"), 404, "UserNotOnline"),
        ("SendUnicast", dict(ok, From="not valid!"), 400, "InvalidParameter"),
        ("SendUnicast", dict(ok, From="x" * 129), 400, "InvalidParameter"),
        ("SendUnicast", {k: v for k, v in ok.items() if k != "To"}, 400, "MissingParameter"),
        ("SendUnicast", dict(ok, Binary="yes"), 400, "InvalidParameter"),
        ("SendUnicast", dict(ok, Binary=True, Message="not base64!"), 400, "InvalidParameter"),
        ("SendUnicast", dict(ok, Message=7), 400, "InvalidParameter"),
        ("SendUnicast", dict(ok, Message="x" * 65537), 400, "MessageTooLarge"),
        ("SendUnicast", dict(ok, Binary=True, Message=base64.b64encode(b"x" * 65537).decode()),
         400, "MessageTooLarge"),
        ("SendUnicast", ["not", "an", "object"], 400, "InvalidParameter"),
        ("SendBroadcast", dict(ok, RoomId="bad room"), 400, "InvalidParameter"),
        ("SendUnicastX", ok, 404, "InvalidActionOrVersion"),
    ]
    for action, body, status, code in cases:
        got, answer = push(server.http_url, action, body)
        assert (got, answer["ResponseMetadata"]["Error"]["Code"]) == (status, code), (body, answer)
    got, answer = push(server.http_url, "SendUnicast", ok, version="2019-01-01")
    assert (got, answer["ResponseMetadata"]["Error"]["Code"]) == (404, "InvalidActionOrVersion")
    assert answer["ResponseMetadata"]["Error"]["CodeN"] == 100008
    status, answer = send_raw(server.http_url + "/?Version=2020-12-01", b"{}", {})
    assert (status, answer["ResponseMetadata"]["Error"]["Code"]) == (400, "MissingParameter")
    status, answer = push(server.http_url, "SendUnicast", ok, data=b"not json")
    assert status == 401  # changed after signing


def test_without_access_keys_the_push_api_is_closed_and_push_qps() -> None:
    with serve_in_thread({APP_ID: APP_KEY}) as srv:
        status, answer = push(srv.http_url, "SendUnicast", {"AppId": APP_ID})
        assert status == 403 and answer["ResponseMetadata"]["Error"]["Code"] == "AccessDenied"
        assert "--access-key" in answer["ResponseMetadata"]["Error"]["Message"]
    with serve_in_thread({APP_ID: APP_KEY}, access_keys={AK: SK}, limits={"push_qps": 2}) as srv:
        body = {"AppId": APP_ID, "From": FROM, "To": "nobody", "Binary": False}
        codes = [push(srv.http_url, "SendUnicast", dict(body, Message=str(i)))[1]
                 ["ResponseMetadata"]["Error"]["Code"] for i in range(6)]
        assert codes[:2] == ["UserNotOnline"] * 2 and "FlowLimitExceeded" in codes, codes


def test_rts_server_process_with_access_key(engines: EngineFactory) -> None:
    """The deployable server: ``rts-server --access-key AK:SK`` serves the push API."""
    from rts_sync.server.__main__ import main

    assert main(["--app", "%s:%s" % (APP_ID, APP_KEY), "--access-key", "no-colon"]) == 2
    assert main(["--app", "%s:%s" % (APP_ID, APP_KEY), "--access-key", "A:1",
                 "--access-key", "A:2"]) == 2
    proc = subprocess.Popen(
        [sys.executable, "-m", "rts_sync.server", "--app", "%s:%s" % (APP_ID, APP_KEY),
         "--access-key", "%s:%s" % (AK, SK), "--port", "0", "--log-level", "INFO"],
        stderr=subprocess.PIPE, text=True)
    drain: Optional[threading.Thread] = None
    try:
        assert proc.stderr is not None
        port = 0
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
                assert "keys: " + AK in line
                break
        assert port, "rts-server did not start"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        bob, brec = engines(url="ws://127.0.0.1:%d/rts" % port)
        assert bob.login(mint_login_token(APP_ID, APP_KEY, "bob"), "bob").result(WAIT) == 0
        ok, answer = volc_call(volc_rtc("http://127.0.0.1:%d" % port), "SendUnicast", {
            "AppId": APP_ID, "From": FROM, "To": "bob", "Binary": False, "Message": "hi"})
        assert ok, answer
        assert brec.wait_count("msg", 1) == [(FROM, "hi")]
        bob.destroy()
    finally:
        proc.terminate()
        proc.wait(10)
        if drain is not None:
            drain.join(5)  # EOF now that the process is gone
        if proc.stderr is not None:
            proc.stderr.close()
