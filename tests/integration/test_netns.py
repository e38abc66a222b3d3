"""Network type, network changes and the cellular path with real interfaces: each test makes its
own network namespaces (``ip netns``), veth pairs and a modem-named interface, runs a small Python
probe inside with ``ip netns exec`` (which also mounts that namespace's own /sys), and deletes
everything afterwards. Needs root (CI runs as root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from typing import Any, Iterator, List

import pytest
from conftest import APP_ID, APP_KEY

from rts_sync import ConnectionState, ConnectionStateChangeReason, NetworkType

pytestmark = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("ip") is None,
    reason="needs root and iproute2 to create network namespaces (CI runs as root)")

_counter = iter(range(1, 1000000))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[Any]:
    """A factory of fresh namespaces (loopback up); all are deleted at the end."""
    made: List[str] = []

    def make() -> str:
        name = "rts%d-%d" % (os.getpid(), next(_counter))
        ip("netns", "add", name)
        made.append(name)
        ip("-n", name, "link", "set", "lo", "up")
        return name

    yield make
    for name in made:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def probe(ns: str, code: str, *args: str, timeout: float = 60) -> Any:
    """Run ``code`` with this interpreter inside ``ns``; its last stdout line is JSON."""
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, "probe failed:\n%s\n%s" % (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


DETECT = """
import json
from rts_sync._client import netinfo
s = netinfo.detect()
print(json.dumps([int(s.type), s.interface,
                  [[p.interface, p.address] for p in netinfo.cellular_interfaces()]]))
"""


def test_detect_over_real_interfaces(netns: Any) -> None:
    ns = netns()
    assert probe(ns, DETECT) == [NetworkType.DISCONNECTED, None, []]  # only lo: no route
    ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
    ip("-n", ns, "addr", "add", "10.207.1.2/24", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "link", "set", "eth0p", "up")
    ip("-n", ns, "route", "add", "default", "via", "10.207.1.1", "dev", "eth0")
    assert probe(ns, DETECT) == [NetworkType.LAN, "eth0", []]
    # A modem-named interface: a dummy where the kernel has the driver, else a veth end.
    r = subprocess.run(["ip", "-n", ns, "link", "add", "wwan0", "type", "dummy"],
                       capture_output=True, timeout=30)
    if r.returncode != 0:
        ip("-n", ns, "link", "add", "wwan0", "type", "veth", "peer", "name", "peer0")
        ip("-n", ns, "link", "set", "peer0", "up")
    ip("-n", ns, "addr", "add", "10.207.2.2/24", "dev", "wwan0")
    assert probe(ns, DETECT) == [NetworkType.LAN, "eth0", []]  # wwan0 exists but is down
    ip("-n", ns, "link", "set", "wwan0", "up")
    assert probe(ns, DETECT) == [NetworkType.LAN, "eth0", [["wwan0", "10.207.2.2"]]]
    ip("-n", ns, "route", "add", "default", "dev", "wwan0", "metric", "5")
    ip("-n", ns, "route", "del", "default", "via", "10.207.1.1", "dev", "eth0")
    assert probe(ns, DETECT)[:2] == [NetworkType.MOBILE_4G, "wwan0"]


ENGINE_SEES_CHANGE = """
import json, subprocess, sys, threading
import rts_sync
from rts_sync.testing import serve_in_thread
from rts_sync.token import mint_login_token
APP, KEY = sys.argv[1], sys.argv[2]

class H(rts_sync.RTSEventHandler):
    def __init__(self):
        self.ev, self.cond = [], threading.Condition()
    def add(self, *a):
        with self.cond:
            self.ev.append(list(a))
            self.cond.notify_all()
    def on_network_type_changed(self, t):
        self.add("network", int(t))
    def on_connection_state_changed(self, s, r):
        self.add("state", int(s), int(r))
    def wait(self, pred):
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.ev), 15), self.ev

def ip(*a):
    subprocess.run(["ip", *a], check=True)

h = H()
with serve_in_thread(apps={APP: KEY}) as srv:
    with rts_sync.create_rts(APP, h, {"stats_interval": 0.2}, server_url=srv.url) as rts:
        h.wait(lambda ev: ["network", 0] in ev)
        assert rts.login(mint_login_token(APP, KEY, "alice", 3600), "alice").result(10) == 0
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        ip("addr", "add", "10.208.1.2/24", "dev", "eth0")
        ip("link", "set", "eth0", "up")
        ip("link", "set", "eth0p", "up")
        ip("route", "add", "default", "via", "10.208.1.1", "dev", "eth0")
        h.wait(lambda ev: any(e[0] == "state" and e[2] == 9 for e in ev))
print(json.dumps(h.ev))
"""


def test_network_change_closes_the_session_with_network_changed(netns: Any) -> None:
    events = probe(netns(), ENGINE_SEES_CHANGE, APP_ID, APP_KEY)
    states = [e[1:] for e in events if e[0] == "state"]
    assert [e for e in events if e[0] == "network"] == [["network", NetworkType.DISCONNECTED],
                                                         ["network", NetworkType.LAN]]
    assert states[:2] == [[ConnectionState.CONNECTING, ConnectionStateChangeReason.LOGIN],
                          [ConnectionState.CONNECTED, ConnectionStateChangeReason.CONNECT_SUCCESS]]
    # Then the session ends for that reason (DISCONNECTED, or RECONNECTING where the engine
    # reconnects on its own), reported after the type change that caused it.
    state, reason = states[2]
    assert reason == ConnectionStateChangeReason.NETWORK_CHANGED
    assert state in (ConnectionState.DISCONNECTED, ConnectionState.RECONNECTING)
    assert events.index(["network", NetworkType.LAN]) < events.index(["state", state, reason])


CELLULAR = """
import json, sys
import psutil, rts_sync
from rts_sync.token import mint_login_token
url, port, APP, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}
for enhance in (False, True):
    with rts_sync.create_rts(APP, None, {"connect_timeout": 5.0}, server_url=url) as rts:
        assert rts.set_cellular_enhancement(enhance) == 0
        try:
            code = rts.login(mint_login_token(APP, KEY, "alice", 3600), "alice").result(20)
        except rts_sync.LoginError as exc:
            code = exc.code
        local = sorted({c.laddr.ip for c in psutil.Process().net_connections("tcp")
                        if c.raddr and c.raddr.port == port and c.status == "ESTABLISHED"})
        out[str(enhance)] = [int(code), local]
print(json.dumps(out))
"""


def test_cellular_path_when_the_primary_path_fails(netns: Any) -> None:
    """cli's default route (eth0, metric 100) leads to blk, which owns the server's address too
    but listens on nothing (connection refused); its second default route (wwan0, metric 1000)
    leads to srv, where the server runs."""
    cli, srv, blk = netns(), netns(), netns()
    server_ip, port = "10.206.9.1", 8970
    ip("-n", cli, "link", "add", "eth0", "type", "veth", "peer", "name", "bpeer", "netns", blk)
    ip("-n", cli, "link", "add", "wwan0", "type", "veth", "peer", "name", "wpeer", "netns", srv)
    for ns, dev, addr in [(cli, "eth0", "10.206.1.2/24"), (blk, "bpeer", "10.206.1.1/24"),
                          (cli, "wwan0", "10.206.2.2/24"), (srv, "wpeer", "10.206.2.1/24")]:
        ip("-n", ns, "addr", "add", addr, "dev", dev)
        ip("-n", ns, "link", "set", dev, "up")
    ip("-n", srv, "addr", "add", server_ip + "/32", "dev", "lo")
    ip("-n", blk, "addr", "add", server_ip + "/32", "dev", "lo")
    ip("-n", cli, "route", "add", "default", "via", "10.206.1.1", "dev", "eth0", "metric", "100")
    ip("-n", cli, "route", "add", "default", "via", "10.206.2.1", "dev", "wwan0", "metric", "1000")
    server = subprocess.Popen(
        ["ip", "netns", "exec", srv, sys.executable, "-m", "rts_sync.server", "--app",
         "%s:%s" % (APP_ID, APP_KEY), "--host", server_ip, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        started = threading.Event()
        lines: List[str] = []

        def read() -> None:
            assert server.stderr is not None
            for line in server.stderr:
                lines.append(line)
                if "listening on" in line:
                    started.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert started.wait(30), "server did not start: %s" % "".join(lines)
        assert probe(cli, DETECT) == [NetworkType.LAN, "eth0", [["wwan0", "10.206.2.2"]]]
        out = probe(cli, CELLULAR, "ws://%s:%d/rts" % (server_ip, port), str(port), APP_ID,
                    APP_KEY)
        assert out == {"False": [-1001, []], "True": [0, ["10.206.2.2"]]}
    finally:
        server.terminate()
        server.wait(10)
        reader.join(10)
