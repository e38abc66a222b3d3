"""Real local proxies for the tests: microsocks (SOCKS5, optional username/password) and tinyproxy
(HTTP CONNECT, optional BasicAuth), started as subprocesses on free loopback ports, plus helpers
that show where this process's TCP connections go.

Both come from Debian packages (``apt-get install microsocks tinyproxy``, done by ``.ci/run``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Set

import psutil

from rts_sync import LocalProxyConfiguration, LocalProxyType

MICROSOCKS = shutil.which("microsocks") or "/usr/bin/microsocks"
TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def free_port() -> int:
    """A loopback port nothing listens on (bound and released: connecting to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    """A running proxy process: its kind, port, credentials and log file."""

    def __init__(self, kind: LocalProxyType, port: int, proc: subprocess.Popen[bytes],
                 log: Path, user: str = "", password: str = "") -> None:
        self.kind, self.port, self.proc, self.log = kind, port, proc, log
        self.user, self.password = user, password

    def config(self, user: Optional[str] = None,
               password: Optional[str] = None) -> LocalProxyConfiguration:
        """Its LocalProxyConfiguration, with its own credentials unless others are given."""
        return LocalProxyConfiguration(self.kind, "127.0.0.1", self.port,
                                       self.user if user is None else user,
                                       self.password if password is None else password)

    def remote_ports(self) -> Set[int]:
        """Remote ports of the proxy process's established TCP connections (where it forwards)."""
        return {c.raddr.port for c in psutil.Process(self.proc.pid).net_connections("tcp")
                if c.raddr and c.status == psutil.CONN_ESTABLISHED}


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``port`` accepts a connection (bounded; the process may still be starting)."""
    deadline = time.monotonic() + 10.0
    pause = threading.Event()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("proxy on port %d did not start: %s"
                                   % (port, log.read_text(errors="replace")[-2000:])) from None
            pause.wait(0.02)


@contextmanager
def _run(kind: LocalProxyType, argv: List[str], port: int, log: Path, user: str,
         password: str) -> Iterator[Proxy]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc, log)
        yield Proxy(kind, port, proc, log, user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def run_microsocks(tmp: Path, user: str = "", password: str = "") -> Iterator[Proxy]:
    """microsocks on a free loopback port; with ``user``/``password`` it requires them."""
    port = free_port()
    argv = [MICROSOCKS, "-i", "127.0.0.1", "-p", str(port)]
    if user:
        argv += ["-u", user, "-P", password]
    with _run(LocalProxyType.SOCKS5, argv, port, tmp / ("microsocks-%d.log" % port), user,
              password) as proxy:
        yield proxy


@contextmanager
def run_tinyproxy(tmp: Path, user: str = "", password: str = "") -> Iterator[Proxy]:
    """tinyproxy (HTTP CONNECT to any port) on a free loopback port; with ``user``/``password``
    it requires Basic proxy authentication."""
    port = free_port()
    conf = tmp / ("tinyproxy-%d.conf" % port)
    lines = ["Port %d" % port, "Listen 127.0.0.1", "Timeout 30", "LogLevel Info",
             "MaxClients 100", "Allow 127.0.0.1", "DisableViaHeader Yes"]
    if user:
        lines.append("BasicAuth %s %s" % (user, password))
    conf.write_text("\n".join(lines) + "\n")
    with _run(LocalProxyType.HTTP_TUNNEL, [TINYPROXY, "-d", "-c", str(conf)], port,
              tmp / ("tinyproxy-%d.log" % port), user, password) as proxy:
        yield proxy


def my_remote_ports() -> Set[int]:
    """Remote ports of this process's established TCP connections."""
    return {c.raddr.port for c in psutil.Process().net_connections("tcp")
            if c.raddr and c.status == psutil.CONN_ESTABLISHED}


class ScriptedPeer:
    """A one-connection TCP server on loopback that answers each chunk it receives with the
    next of ``replies``, then closes: a misbehaving proxy for protocol-error tests."""

    def __init__(self, replies: List[bytes]) -> None:
        self._replies = replies
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(1)
        self._listener.settimeout(10.0)
        self.port = int(self._listener.getsockname()[1])
        self.received: List[bytes] = []
        self._thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10.0)
            try:
                for reply in self._replies:
                    data = conn.recv(4096)
                    if not data:
                        return
                    self.received.append(data)
                    conn.sendall(reply)
            except OSError:
                return

    def close(self) -> None:
        self._listener.close()
        self._thread.join(10.0)
