"""Reliable peer throughput, one node vs across cluster nodes (docs/performance.md, "Cluster").

Run by hand (not a test): ``python tests/integration/cluster_perf.py`` (needs redis-server).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import List

from cluster_nodes import RedisServer, free_port, start_nodes, stop_nodes
from conftest import APP_ID, APP_KEY, token

import rts_sync


class Counting(rts_sync.RTSEventHandler):
    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = threading.Event()

    def on_message_received(self, uid: str, message: str) -> None:
        self.count += 1
        if self.count == self.n:
            self.done.set()


def run(senders_at: List[str], receivers_at: List[str], pairs: int = 4, n: int = 5000,
        window: int = 500) -> float:
    """Messages per second (SUCCESS received) of ``pairs`` sender -> receiver pairs."""
    made: List[rts_sync.RTS] = []
    try:
        handlers, senders = [], []
        for i in range(pairs):
            h = Counting(n)
            r = rts_sync.create_rts(APP_ID, h, server_url=receivers_at[i % len(receivers_at)])
            made.append(r)
            r.login(token("r%d" % i), "r%d" % i).result(10)
            s = rts_sync.create_rts(APP_ID, None, server_url=senders_at[i % len(senders_at)])
            made.append(s)
            s.login(token("s%d" % i), "s%d" % i).result(10)
            handlers.append(h)
            senders.append(s)

        def pump(i: int) -> None:
            ops = []
            for _ in range(n):
                ops.append(senders[i].send_message("r%d" % i, "x" * 100))
                if len(ops) >= window:
                    ops.pop(0).result(30)
            for op in ops:
                op.result(30)

        t0 = time.monotonic()
        threads = [threading.Thread(target=pump, args=(i,)) for i in range(pairs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for h in handlers:
            h.done.wait(30)
        return pairs * n / (time.monotonic() - t0)
    finally:
        for e in made:
            e.destroy()


def main() -> None:
    port = free_port()
    plain = subprocess.Popen([sys.executable, "-m", "rts_sync.server", "--app",
                              "%s:%s" % (APP_ID, APP_KEY), "--port", str(port),
                              "--log-level", "WARNING"])
    try:
        time.sleep(1.5)  # another process starting
        url = "ws://127.0.0.1:%d/rts" % port
        print("one node, no Redis:             %6.0f msg/s" % run([url], [url]))
    finally:
        plain.terminate()
        plain.wait()
    for resume in (0, 1):
        redis = RedisServer()
        try:
            nodes = start_nodes(redis.url, 2, {"node_timeout": 5.0, "node_heartbeat": 1.0,
                                               "cluster_resume": resume})
            a, b = nodes[0].url, nodes[1].url
            mode = "cluster_resume=%d" % resume
            print("%s, both ends on one node: %6.0f msg/s" % (mode, run([a], [a])))
            print("%s, across two nodes:      %6.0f msg/s" % (mode, run([a], [b])))
            print("%s, two nodes, spread:     %6.0f msg/s" % (mode, run([a, b], [a, b])))
            stop_nodes(nodes)
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
