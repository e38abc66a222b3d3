"""Volcengine's V4 signature: rts_sync's signer is byte-identical to the official ``volcengine``
package's SignerV4, and the verifier accepts exactly what it should. No sockets, fixed clocks."""

from __future__ import annotations

import calendar
import json
import time
from collections import OrderedDict
from typing import Dict, List, Tuple

import pytest
from volcengine.auth.SignerV4 import SignerV4
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials

from rts_sync.server.signing import (
    AuthError,
    ReplayCache,
    canonical_query,
    sign_request,
    verify_request,
)

STAMP = "20240102T030405Z"
NOW = float(calendar.timegm(time.strptime(STAMP, "%Y%m%dT%H%M%SZ")))
KEYS = {"AK": "SK"}


def official(host: str, query: Dict[str, str], body: str,
             monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """The headers the volcengine package signs a JSON POST with (as its Service.json does)."""
    monkeypatch.setattr(SignerV4, "get_current_format_date", staticmethod(lambda: STAMP))
    r = Request()
    r.set_method("POST")
    r.set_path("/")
    r.set_host(host)
    r.set_headers(OrderedDict([("Accept", "application/json"), ("Host", host),
                               ("User-Agent", "volc-sdk-python"),
                               ("Content-Type", "application/json")]))
    r.set_query(OrderedDict(query))
    r.body = body
    SignerV4.sign(r, Credentials("AK", "SK", "rtc", "cn-north-1"))
    return dict(r.headers)


@pytest.mark.parametrize("host,query,body", [
    ("127.0.0.1:8970", {"Action": "SendUnicast", "Version": "2020-12-01"}, '{"Message": "hé"}'),
    ("rtc.example:80", {"Action": "SendBroadcast", "Version": "2023-07-20"}, ""),
    ("[::1]:8970", {"Version": "2020-12-01", "Action": "Send Unicast/~*"}, "x" * 1000),
])
def test_sign_request_equals_the_official_signer(host: str, query: Dict[str, str], body: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = official(host, query, body, monkeypatch)
    url = "http://%s/?%s" % (host, "&".join("%s=%s" % (k, v.replace(" ", "%20"))
                                            for k, v in query.items()))
    ours = sign_request("POST", url, body.encode(), "AK", "SK", now=NOW)
    for name in ("Authorization", "X-Date", "X-Content-Sha256", "Host"):
        assert ours[name] == theirs[name], name
    signed = verify_request("POST", "/", list(query.items()), list(theirs.items()),
                            body.encode(), KEYS, NOW, 300)
    assert (signed.access_key, signed.region, signed.service) == ("AK", "cn-north-1", "rtc")
    assert signed.timestamp == NOW


def _req(**over: object) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]], bytes]:
    body = json.dumps({"Message": "m"}).encode()
    url = "http://127.0.0.1:8970/?Action=SendUnicast&Version=2020-12-01"
    headers = sign_request("POST", url, body, str(over.get("ak", "AK")), str(over.get("sk", "SK")),
                           now=NOW + float(over.get("shift", 0)))  # type: ignore[arg-type]
    return [("Action", "SendUnicast"), ("Version", "2020-12-01")], list(headers.items()), body


def _code(query: List[Tuple[str, str]], headers: List[Tuple[str, str]], body: bytes,
          now: float = NOW) -> Tuple[str, int]:
    with pytest.raises(AuthError) as ei:
        verify_request("POST", "/", query, headers, body, KEYS, now, 300)
    assert ei.value.message
    return ei.value.code, ei.value.status


def test_verify_refusals() -> None:
    q, h, b = _req()
    verify_request("POST", "/", q, h, b, KEYS, NOW + 300, 300)  # at the edge of the window
    assert _code(q, h, b, NOW + 301) == ("InvalidTimestamp", 403)
    assert _code(q, h, b, NOW - 301) == ("InvalidTimestamp", 403)
    assert _code(*_req(sk="wrong")) == ("SignatureDoesNotMatch", 401)
    assert _code(*_req(ak="AKX")) == ("InvalidAccessKey", 401)
    assert _code(q, h, b + b" ") == ("SignatureDoesNotMatch", 401)  # body changed
    assert _code([("Action", "SendBroadcast"), q[1]], h, b) == ("SignatureDoesNotMatch", 401)
    hd = dict(h)

    def with_(name: str, value: str) -> List[Tuple[str, str]]:
        return list(dict(hd, **{name: value}).items())

    assert _code(q, with_("Host", "evil:8970"), b) == ("SignatureDoesNotMatch", 401)
    assert _code(q, [kv for kv in h if kv[0] != "Authorization"], b) == (
        "MissingAuthenticationToken", 401)
    assert _code(q, with_("Authorization", "AWS4 x"), b) == ("InvalidAuthorization", 400)
    assert _code(q, with_("Authorization", hd["Authorization"].split(", Signature")[0]), b) == (
        "MissingSignature", 401)
    assert _code(q, with_("Authorization", hd["Authorization"].replace("/request,", "/x,")),
                 b) == ("InvalidCredential", 400)
    assert _code(q, with_("Authorization", hd["Authorization"].replace("20240102", "20240103")),
                 b) == ("InvalidCredential", 400)
    assert _code(q, with_("Authorization", hd["Authorization"].replace("x-date", "x-other")),
                 b) == ("InvalidAuthorization", 400)
    assert _code(q, [kv for kv in h if kv[0] != "X-Date"], b) == ("MissingRequestInfo", 400)
    assert _code(q, with_("X-Date", "2024-01-02 03:04:05"), b) == ("InvalidTimestamp", 403)
    # header names are case-insensitive, as HTTP says
    verify_request("POST", "/", q, [(k.lower(), v) for k, v in h], b, KEYS, NOW, 300)


def test_canonical_query_sorts_and_escapes() -> None:
    assert canonical_query([("b", "2"), ("a", "x y/z~"), ("a", "0")]) == "a=x%20y%2Fz~&a=0&b=2"


def test_replay_cache() -> None:
    cache = ReplayCache(max_entries=2)
    assert cache.add("s1", 10.0, 0.0) is True
    assert cache.add("s1", 10.0, 5.0) is False  # a replay within the window
    assert cache.add("s2", 20.0, 5.0) is True
    assert cache.add("s3", 20.0, 5.0) is None  # full: refuse rather than forget
    assert cache.add("s3", 20.0, 11.0) is True  # s1 expired and was dropped
    assert len(cache) == 2
    assert cache.add("s1", 30.0, 11.0) is None  # s1 would be stale anyway by its X-Date
