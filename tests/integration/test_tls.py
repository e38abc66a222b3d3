"""TLS end to end with a CA and certificates the tests make themselves (certs.py): rts-server and
``serve_in_thread`` serving ``wss://``; the SDK verifying certificate and host name by default,
trusting a private CA through the ``tls_ca_file`` runtime parameter, and failing the login with
a clear reason (LoginError -1001 naming the TLS failure; state DISCONNECTED, CONNECT_FAILED) for
an untrusted certificate, a wrong host name or an expired certificate; TLS through both kinds of
local proxy; the push API and /healthz over https."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest
from appserver import AK, SK, push
from certs import PKI
from conftest import APP_ID, APP_KEY, WAIT, Recorder, token, wait_no_threads
from proxies import free_port, run_microsocks, run_tinyproxy

import rts_sync
from rts_sync import (
    ConnectionState,
    ConnectionStateChangeReason,
    InvalidArgumentError,
    LoginError,
)
from rts_sync.testing import ServerHandle, serve_in_thread

S, Reason = ConnectionState, ConnectionStateChangeReason


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_server(pki: PKI) -> Iterator[ServerHandle]:
    with serve_in_thread({APP_ID: APP_KEY}, tls=pki.good, access_keys={AK: SK}) as srv:
        yield srv


@pytest.fixture
def make() -> Iterator[Any]:
    made: List[rts_sync.RTS] = []

    def factory(url: str, **params: Any) -> Tuple[rts_sync.RTS, Recorder]:
        rec = Recorder()
        rts = rts_sync.create_rts(APP_ID, rec, params or None, server_url=url)
        made.append(rts)
        return rts, rec

    yield factory
    for rts in made:
        rts.destroy()
    assert wait_no_threads() == []


def refused(rts: rts_sync.RTS, rec: Recorder, *words: str) -> str:
    """The login fails with -1001 and a message naming the TLS failure; returns the message."""
    with pytest.raises(LoginError) as ei:
        rts.login(token("alice"), "alice").result(WAIT)
    assert ei.value.code == -1001
    message = str(ei.value)
    assert "TLS" in message and all(w in message for w in words), message
    rec.wait_for(lambda: (S.DISCONNECTED, Reason.CONNECT_FAILED) in rec.of("state"))
    return message


def test_wss_with_a_private_ca_carries_the_whole_api(tls_server: ServerHandle, pki: PKI,
                                                     make: Any) -> None:
    assert tls_server.url.startswith("wss://127.0.0.1:")
    assert tls_server.http_url.startswith("https://127.0.0.1:")
    alice, _ = make(tls_server.url, tls_ca_file=pki.ca_file)
    bob, brec = make(tls_server.url, tls_ca_file=pki.ca_file)
    assert alice.login(token("alice"), "alice").result(WAIT) == 0
    assert bob.login(token("bob"), "bob").result(WAIT) == 0
    assert alice.send_message("bob", "over TLS").result(WAIT) == 0
    assert alice.send_binary_message("bob", b"\x00" * 65536).result(WAIT) == 0
    assert brec.wait_count("msg", 1) == [("alice", "over TLS")]
    assert brec.wait_count("bin", 1)[0][1] == b"\x00" * 65536
    # /healthz and the push API on the same port, over https
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    with urllib.request.urlopen(tls_server.http_url + "/healthz", timeout=WAIT,
                                context=ctx) as resp:
        assert json.loads(resp.read())["sessions"] == 2
    status, _ = push(tls_server.http_url, "SendUnicast", {
        "AppId": APP_ID, "From": "app-server", "To": "bob", "Binary": False, "Message": "pushed"},
        context=ctx)
    assert status == 200
    assert brec.wait_count("msg", 2)[-1] == ("app-server", "pushed")


def test_a_host_name_in_the_certificate_works_too(tls_server: ServerHandle, pki: PKI,
                                                  make: Any) -> None:
    rts, _ = make("wss://localhost:%d/rts" % tls_server.port, tls_ca_file=pki.ca_file)
    assert rts.login(token("alice"), "alice").result(WAIT) == 0


def test_by_default_only_the_systems_cas_are_trusted(tls_server: ServerHandle, make: Any) -> None:
    rts, rec = make(tls_server.url)
    refused(rts, rec, "certificate verification failed", "local issuer")


def test_an_untrusted_certificate_is_refused(pki: PKI, make: Any) -> None:
    with serve_in_thread({APP_ID: APP_KEY}, tls=pki.untrusted) as srv:
        rts, rec = make(srv.url, tls_ca_file=pki.ca_file)
        refused(rts, rec, "certificate verification failed")


def test_a_certificate_for_another_host_is_refused(pki: PKI, make: Any) -> None:
    with serve_in_thread({APP_ID: APP_KEY}, tls=pki.wrong_host) as srv:
        rts, rec = make(srv.url, tls_ca_file=pki.ca_file)
        message = refused(rts, rec, "certificate verification failed")
        assert "ostname mismatch" in message or "127.0.0.1" in message


def test_an_expired_certificate_is_refused(pki: PKI, make: Any) -> None:
    with serve_in_thread({APP_ID: APP_KEY}, tls=pki.expired) as srv:
        rts, rec = make(srv.url, tls_ca_file=pki.ca_file)
        refused(rts, rec, "expired")


def test_plain_and_tls_do_not_mix(tls_server: ServerHandle, server: ServerHandle, pki: PKI,
                                  make: Any) -> None:
    rts, rec = make(server.url.replace("ws://", "wss://"), tls_ca_file=pki.ca_file)
    refused(rts, rec)  # a plain server does not speak TLS
    rts, rec = make(tls_server.url.replace("wss://", "ws://"))
    with pytest.raises(LoginError) as ei:  # nor a TLS server plain WebSocket
        rts.login(token("alice"), "alice").result(WAIT)
    assert ei.value.code == -1001
    rec.wait_for(lambda: (S.DISCONNECTED, Reason.CONNECT_FAILED) in rec.of("state"))


def test_tls_ca_file_is_checked_when_set_and_applies_from_the_next_connection(
        tls_server: ServerHandle, pki: PKI, make: Any) -> None:
    for bad in ("/no/such/ca.pem", 5, b"/ca.pem"):
        with pytest.raises(InvalidArgumentError):
            rts_sync.create_rts(APP_ID, parameters={"tls_ca_file": bad})
    rts, rec = make(tls_server.url, tls_ca_file=pki.not_pem)
    refused(rts, rec, "tls_ca_file")  # a file that holds no certificate
    rts.set_runtime_parameters({"tls_ca_file": pki.ca_file})
    assert rts.login(token("alice"), "alice").result(WAIT) == 0
    assert rts.get_peer_online_status("alice").result(WAIT) == 1


@pytest.mark.parametrize("kind", ["socks5", "http-connect"])
def test_tls_through_a_local_proxy(tls_server: ServerHandle, pki: PKI, make: Any,
                                   tmp_path: Path, kind: str) -> None:
    run = run_microsocks if kind == "socks5" else run_tinyproxy
    with run(tmp_path) as proxy:
        rts, _ = make(tls_server.url, tls_ca_file=pki.ca_file)
        assert rts.set_local_proxy([proxy.config()]) == 0
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        assert tls_server.port in proxy.remote_ports()  # the TLS connection runs through it
        rts.destroy()
        # and the certificate is still checked end to end through the tunnel
        rts, rec = make(tls_server.url)
        assert rts.set_local_proxy([proxy.config()]) == 0
        refused(rts, rec, "certificate verification failed")


def test_rts_server_cli_serves_tls(pki: PKI, make: Any) -> None:
    from rts_sync.server.__main__ import main

    app = ["--app", "%s:%s" % (APP_ID, APP_KEY)]
    assert main([*app, "--tls-cert", pki.good[0]]) == 2  # a certificate needs its key
    assert main([*app, "--tls-key", pki.good[1]]) == 2
    assert main([*app, "--tls-cert", "/no/such.crt", "--tls-key", pki.good[1]]) == 2
    assert main([*app, "--tls-cert", pki.good[0], "--tls-key", pki.wrong_host[1]]) == 2
    assert main([*app, "--tls-cert", pki.not_pem, "--tls-key", pki.good[1]]) == 2
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rts_sync.server", *app, "--port", str(port), "--tls-cert",
         pki.good[0], "--tls-key", pki.good[1]], stderr=subprocess.PIPE, text=True)
    drain: Optional[threading.Thread] = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                assert "with TLS" in line
                break
        else:
            pytest.fail("rts-server did not start")
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        rts, _ = make("wss://127.0.0.1:%d/rts" % port, tls_ca_file=pki.ca_file)
        assert rts.login(token("alice"), "alice").result(WAIT) == 0
        rts.destroy()
    finally:
        proc.terminate()
        proc.wait(10)
        if drain is not None:
            drain.join(5)
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_in_thread_refuses_a_key_that_is_not_the_certificates(pki: PKI) -> None:
    with pytest.raises(ValueError, match="TLS"):
        serve_in_thread({APP_ID: APP_KEY}, tls=(pki.good[0], pki.untrusted[1]))
