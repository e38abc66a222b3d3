"""Test helpers for cluster mode: a real redis-server on a free loopback port (no persistence),
rts-server nodes as separate processes pointed at it, and their /healthz."""

from __future__ import annotations

import collections
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Deque, Dict, List, Optional, Tuple

from appserver import AK, SK
from conftest import APP_ID, APP_KEY

#: Cluster timing of the test nodes: dead nodes are noticed within about a second.
NODE_LIMITS = {"node_heartbeat": 0.2, "node_timeout": 1.0, "resume_window": 5.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # startup of another process: nothing to wait on but the port


class RedisServer:
    """``redis-server --port P --save "" --appendonly no`` on 127.0.0.1; restartable on the
    same port (it then comes back empty, as after a crash without persistence)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None  # type: ignore[type-arg]
        self.start()

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class Node:
    """One ``python -m rts_sync.server --redis ...`` process."""

    def __init__(self, redis_url: str, limits: Optional[Dict[str, Any]] = None) -> None:
        self.port = free_port()
        self.log: Deque[str] = collections.deque(maxlen=200)
        args = [sys.executable, "-m", "rts_sync.server", "--app", "%s:%s" % (APP_ID, APP_KEY),
                "--port", str(self.port), "--redis", redis_url, "--access-key",
                "%s:%s" % (AK, SK), "--log-level", "INFO"]
        for k, v in dict(NODE_LIMITS, **(limits or {})).items():
            args += ["--limit", "%s=%s" % (k, v)]
        self.proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if "listening on" in line:
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise AssertionError("node did not start: %s" % "".join(self.log))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d/rts" % self.port

    @property
    def http_url(self) -> str:
        return "http://127.0.0.1:%d" % self.port

    def health(self) -> Tuple[int, Dict[str, Any]]:
        try:
            with urllib.request.urlopen(self.http_url + "/healthz", timeout=5) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.load(exc)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http_url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def wait_health(self, status: int, nodes: int = 0, timeout: float = 15.0) -> Dict[str, Any]:
        """Poll /healthz (another process: nothing to wait on) until it answers ``status``
        and, if ``nodes``, sees that many live nodes."""
        deadline = time.monotonic() + timeout
        while True:
            code, body = self.health()
            if code == status and (not nodes or body.get("cluster", {}).get("nodes") == nodes):
                return body
            if time.monotonic() > deadline:
                raise AssertionError("healthz %d %r, wanted %d" % (code, body, status))
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def start_nodes(redis_url: str, n: int = 3, limits: Optional[Dict[str, Any]] = None) -> List[Node]:
    nodes = [Node(redis_url, limits) for _ in range(n)]
    for node in nodes:
        node.wait_health(200, nodes=n)
    return nodes


def stop_nodes(nodes: List[Node]) -> None:
    for node in nodes:
        node.stop()


def rotated(nodes: List[Node], first: int) -> List[str]:
    """Every node's url, starting with ``nodes[first]`` (the SDK tries them in order)."""
    urls = [n.url for n in nodes]
    return urls[first:] + urls[:first]
