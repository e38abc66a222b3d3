"""A live fuzz run against the real server, while legitimate SDK clients keep messaging.

``hostile.py``, in a child process, opens raw WebSocket connections to an in-process server
(``serve_in_thread``), 48 at a time, and sends well-formed-but-wrong frames the server must
answer or ignore (SEND to nobody, payload over 64 KB, requests with args of the wrong type,
duplicates, a second LOGIN with a garbage token, unmasked frames, ...), then one frame that must
end the connection: malformed or mutated CBOR, a truncated frame, trailing bytes, a depth bomb, a
header claiming up to 2**62 bytes (refused before any of the body is sent), an oversized body,
RFC 6455 violations, text, frames before HELLO or in the wrong direction, an unknown op or app,
no common version, an ACK beyond what was sent, a frame stalled half-way. Each connection must get
the close code its last frame calls for.

Meanwhile three pairs of SDK engines send reliable peer messages through the same server in
windows of 20. They must see no disconnect at all, every send must succeed, and every receiver
must get exactly the messages sent to it, in order, once. Afterwards the server still serves, has
nothing left of the hostile connections, and its process's RSS has grown by less than
``RSS_BOUND``.

The quick run (about 20 s) is in the normal suite; ``-m soak`` runs 150,000 frames. Run with
``-s`` to see the figures.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Dict, List, Tuple

import psutil
import pytest
from conftest import APP_ID, APP_KEY, WAIT, token

import rts_sync
from rts_sync.enums import ConnectionState
from rts_sync.testing import ServerHandle, serve_in_thread

HOSTILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile.py")
QUICK_FRAMES = 40_000
SOAK_FRAMES = 500_000
PAIRS = 3
WINDOW = 20
#: Most the server process's RSS may grow over a run (generous: the figures are printed).
RSS_BOUND = 100 << 20
#: Longest a window of legitimate sends may take to be confirmed while the server is attacked.
LEGIT_LATENCY_BOUND = 5.0


class Receiver(rts_sync.RTSEventHandler):
    """Checks each message as it comes (``"<my uid>:<n>"`` from ``sender``, n = 0, 1, 2, ...)
    instead of keeping them, so that the RSS figures are the server's and the SDK's."""

    def __init__(self, uid: str = "", sender: str = "") -> None:
        self.uid, self.sender = uid, sender
        self.count = 0
        self.wrong: List[Tuple[str, str]] = []
        self.states: List[Tuple[int, int]] = []
        self.cond = threading.Condition()

    def on_message_received(self, uid: str, message: str) -> None:
        with self.cond:
            if (uid, message) == (self.sender, "%s:%d" % (self.uid, self.count)):
                self.count += 1
            elif len(self.wrong) < 10:
                self.wrong.append((uid, message))
            self.cond.notify_all()

    def on_connection_state_changed(self, state: int, reason: int) -> None:
        with self.cond:
            self.states.append((state, reason))


class Sender(threading.Thread):
    """Sends ``"<target>:<n>"`` reliably in windows of WINDOW until stopped; every result must be 0."""

    def __init__(self, rts: rts_sync.RTS, target: str, stop: threading.Event) -> None:
        super().__init__(name="legit-" + target, daemon=True)
        self.rts, self.target, self.stop = rts, target, stop
        self.sent = 0
        self.errors: List[str] = []
        self.latencies: List[float] = []

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.monotonic()
            ops = [self.rts.send_message(self.target, "%s:%d" % (self.target, self.sent + i))
                   for i in range(WINDOW)]
            for op in ops:
                try:
                    code = op.result(WAIT)
                except Exception as exc:
                    self.errors.append(repr(exc))
                    return
                if code != 0:
                    self.errors.append("result %r" % (code,))
                    return
            self.latencies.append(time.monotonic() - t0)
            self.sent += WINDOW


class RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.peak = max(self.peak, self.proc.memory_info().rss)


def _healthz(srv: ServerHandle) -> Dict[str, Any]:
    with urllib.request.urlopen(srv.http_url + "/healthz", timeout=WAIT) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _settled(srv: ServerHandle, n: int, timeout: float = 15.0) -> Dict[str, Any]:
    """/healthz once only the legitimate connections and sessions are left."""
    deadline = time.monotonic() + timeout
    while True:
        health = _healthz(srv)
        if health["connections"] == n and health["sessions"] == n:
            return health
        if time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def run_fuzz(frames: int, seed: int) -> Dict[str, Any]:
    """One run; returns the figures (and asserts everything the module docstring promises)."""
    with serve_in_thread({APP_ID: APP_KEY}, limits={"login_timeout": 2}) as srv:
        pairs: List[Tuple[rts_sync.RTS, rts_sync.RTS, Receiver, Receiver]] = []
        try:
            for i in range(PAIRS):
                s_rec, r_rec = Receiver(), Receiver("r%d" % i, "s%d" % i)
                s = rts_sync.create_rts(APP_ID, s_rec, server_url=srv.url)
                r = rts_sync.create_rts(APP_ID, r_rec, server_url=srv.url)
                pairs.append((s, r, s_rec, r_rec))
                assert s.login(token("s%d" % i), "s%d" % i).result(WAIT) == 0
                assert r.login(token("r%d" % i), "r%d" % i).result(WAIT) == 0
            for _, _, s_rec, r_rec in pairs:
                for rec in (s_rec, r_rec):  # CONNECTING, CONNECTED: nothing after that
                    with rec.cond:
                        rec.cond.wait_for(lambda rec=rec: len(rec.states) >= 2, WAIT)
            gc.collect()
            rss0 = psutil.Process().memory_info().rss
            sampler = RssSampler()
            sampler.start()
            stop = threading.Event()
            senders = [Sender(s, "r%d" % i, stop) for i, (s, _, _, _) in enumerate(pairs)]
            for t in senders:
                t.start()
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, HOSTILE, srv.url, APP_ID, APP_KEY, str(frames),
                                  str(seed)], capture_output=True, text=True, timeout=900)
            fuzz_s = time.monotonic() - t0
            stop.set()
            for t in senders:
                t.join(WAIT * 2)
            assert out.returncode == 0, out.stderr[-3000:]
            report = json.loads(out.stdout)

            # every hostile connection got the close code its frame calls for, and none hung
            assert report["bad_frames"] >= frames
            assert report["n_unexpected"] == 0, report["unexpected"]
            # legitimate traffic: every send confirmed, nothing lost, duplicated or reordered
            for i, t in enumerate(senders):
                assert t.errors == [], t.errors
                assert t.sent > 0
                r_rec = pairs[i][3]
                with r_rec.cond:
                    r_rec.cond.wait_for(lambda r_rec=r_rec, n=t.sent: r_rec.count >= n, WAIT)
                    assert (r_rec.count, r_rec.wrong) == (t.sent, [])
            latencies = sorted(x for t in senders for x in t.latencies)
            assert latencies[-1] < LEGIT_LATENCY_BOUND
            for _, _, s_rec, r_rec in pairs:  # no reconnect, no disconnect
                for rec in (s_rec, r_rec):
                    assert [s for s, _ in rec.states] == [ConnectionState.CONNECTING,
                                                         ConnectionState.CONNECTED], rec.states
            # the server still serves, and nothing is left of the hostile connections
            health = _settled(srv, 2 * PAIRS)
            assert health == {"status": "ok", "connections": 2 * PAIRS, "sessions": 2 * PAIRS}
            assert pairs[0][0].get_peer_online_status("r0").result(WAIT) == 1
            sampler.done.set()
            sampler.join()
            gc.collect()
            rss1 = psutil.Process().memory_info().rss
            assert rss1 - rss0 < RSS_BOUND, (rss0, rss1)
        finally:
            for s, r, _, _ in pairs:
                s.destroy()
                r.destroy()
    figures = {
        "bad_frames": report["bad_frames"], "fatal_frames": report["fatal_frames"],
        "tolerated_frames": report["tolerated_frames"], "connections": report["connections"],
        "fuzz_seconds": round(fuzz_s, 1),
        "bad_frames_per_s": round(report["bad_frames"] / fuzz_s),
        "legit_messages": sum(t.sent for t in senders),
        "legit_msgs_per_s": round(sum(t.sent for t in senders) / fuzz_s),
        "legit_window_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "legit_window_max_ms": round(latencies[-1] * 1000, 1),
        "rss_before_mb": round(rss0 / 2**20, 1), "rss_peak_mb": round(sampler.peak / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "closes": _by_code(report["closes"]),
    }
    print("\nfuzz figures: " + json.dumps(figures, sort_keys=True))
    return figures


def _by_code(closes: Dict[str, int]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for key, n in closes.items():
        code = key.rsplit("->", 1)[1]
        out[code] = out.get(code, 0) + n
    return out


def test_live_fuzz_quick() -> None:
    run_fuzz(QUICK_FRAMES, seed=1)


@pytest.mark.soak
def test_live_fuzz_soak() -> None:
    run_fuzz(SOAK_FRAMES, seed=2)
