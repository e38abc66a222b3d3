"""Test helpers for application servers: a real HTTP application server on loopback (stdlib
http.server in a thread), a recorder for the server-message callbacks, an engine factory whose
leak check ignores the in-process servers' own sockets, and push API calls."""

from __future__ import annotations

import json
import os
import ssl
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from conftest import APP_ID, Recorder, wait_no_threads

import rts_sync

AK, SK = "AKLTtest0001", "test-secret-key-0001"


class AppRecorder(Recorder):
    """Recorder plus the application-server callbacks."""

    def on_server_params_set_result(self, error: int) -> None:
        self._add("params", error)

    def on_server_message_send_result(self, msgid: int, error: int, message: bytes) -> None:
        self._add("server_result", msgid, error, message)


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 256  # http.server's default backlog of 5 drops bursts of connections


class AppServer:
    """A real HTTP application server on 127.0.0.1, in a thread. Paths:

    ``/ok`` 200 with ``b"answer:" + message`` · ``/status/N`` status N · ``/size/N`` 200 with N
    bytes · ``/slow`` 200 once :attr:`release` is set (at most 5 s later).
    Every request is recorded: (path, headers, JSON body) in :attr:`requests`.
    """

    def __init__(self) -> None:
        self.requests: List[Tuple[str, Dict[str, str], Dict[str, Any]]] = []
        self.cond = threading.Condition()
        self.release = threading.Event()
        self.active = 0
        self.max_active = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(data)
                with outer.cond:
                    outer.requests.append((self.path, dict(self.headers), body))
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                    outer.cond.notify_all()
                try:
                    self._answer(body)
                finally:
                    with outer.cond:
                        outer.active -= 1
                        outer.cond.notify_all()

            def _answer(self, body: Dict[str, Any]) -> None:
                status, answer = 200, b""
                if self.path == "/ok":
                    answer = b"answer:" + body["message"].encode("utf-8")
                elif self.path.startswith("/status/"):
                    status, answer = int(self.path.split("/")[2]), b"not this"
                elif self.path.startswith("/size/"):
                    answer = b"z" * int(self.path.split("/")[2])
                elif self.path == "/slow":
                    outer.release.wait(5)
                    answer = b"late"
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "/ok")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                try:
                    self.wfile.write(answer)
                except OSError:
                    pass  # the rts-server gave up waiting

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = _HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="app-server",
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def wait_requests(self, n: int, timeout: float = 10.0) -> List[Tuple[str, Dict[str, str],
                                                                       Dict[str, Any]]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.requests) >= n, timeout), self.requests
            return list(self.requests)

    def wait_active(self, n: int, timeout: float = 10.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.active >= n, timeout), self.active

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def _socket_inodes(ports: Iterable[int]) -> set:
    """Inodes of TCP sockets with a local or remote port in ``ports``."""
    wanted = set(ports)
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local = int(cols[1].rsplit(":", 1)[1], 16)
                    remote = int(cols[2].rsplit(":", 1)[1], 16)
                    if local in wanted or remote in wanted:
                        inodes.add(cols[9])
        except FileNotFoundError:
            pass
    return inodes


def fds_excluding(ports: Iterable[int]) -> int:
    """This process's descriptors, not counting sockets to or from ``ports`` (the in-process
    rts-server's and application servers', which close on their own schedule)."""
    skip = _socket_inodes(ports)
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if not (link.startswith("socket:[") and link[8:-1] in skip):
            n += 1
    return n


EngineFactory = Callable[..., Tuple[rts_sync.RTS, AppRecorder]]


def engine_factory(server: Any, ports: List[int]) -> Iterator[EngineFactory]:
    """Like conftest's ``engines`` (every engine destroyed, no thread or descriptor left), with
    AppRecorder handlers; sockets of ``ports`` (a list tests may extend) are not counted."""
    made: List[rts_sync.RTS] = []
    fds_before = fds_excluding([server.port, *ports])

    def make(app_id: str = APP_ID, parameters: Optional[dict] = None,
             url: Optional[str] = None) -> Tuple[rts_sync.RTS, AppRecorder]:
        rec = AppRecorder()
        rts = rts_sync.create_rts(app_id, rec, parameters, server_url=url or server.url)
        made.append(rts)
        return rts, rec

    yield make
    for rts in made:
        rts.destroy()
    assert wait_no_threads() == []
    deadline = time.monotonic() + 2.0
    while True:  # the dispatcher's last callbacks may still be closing a socket of ours
        fds_after = fds_excluding([server.port, *ports])
        if fds_after <= fds_before or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert fds_after <= fds_before, "descriptors leaked: %d -> %d" % (fds_before, fds_after)


def push(http_url: str, action: str, body: Any, ak: str = AK, sk: str = SK,
         version: str = "2020-12-01", headers: Optional[Dict[str, str]] = None,
         data: Optional[bytes] = None,
         context: Optional[ssl.SSLContext] = None) -> Tuple[int, Dict[str, Any]]:
    """POST a push API request signed by rts_sync's own signer: (HTTP status, JSON answer).
    ``data`` replaces the signed body after signing (a tampered request); ``context`` is the
    TLS context for an https URL."""
    from rts_sync.server.signing import sign_request

    url = "%s/?Action=%s&Version=%s" % (http_url, action, version)
    raw = json.dumps(body).encode("utf-8")
    signed = headers if headers is not None else sign_request("POST", url, raw, ak, sk)
    return send_raw(url, raw if data is None else data, signed, context)


def send_raw(url: str, data: bytes, headers: Dict[str, str],
             context: Optional[ssl.SSLContext] = None) -> Tuple[int, Dict[str, Any]]:
    req = urllib.request.Request(url, data, headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.load(exc)
