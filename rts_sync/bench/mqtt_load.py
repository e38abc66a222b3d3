"""The same workloads with paho-mqtt through a mosquitto broker, for ``--compare mqtt``.

Fair-comparison rules: every paho client is in this process with its own network thread
(``loop_start``), sets TCP_NODELAY on its socket (``on_socket_open``), uses MQTT 3.1.1 with a
clean session; QoS 0 stands for unreliable and QoS 1 for reliable. The broker runs with
``set_tcp_nodelay true`` (see :class:`~rts_sync.bench.procs.Mosquitto`). paho's own defaults are
kept otherwise (20 QoS 1 messages in flight per client).

paho-mqtt is imported lazily (it is the optional extra ``bench``); its absence is a BenchError.

Threading: run from the bench's main thread; paho callbacks run on each client's network thread.
"""

from __future__ import annotations

import importlib
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Set

from .common import BenchError, Progress, SeqChecker, make_payload, parse_payload, percentiles, wait_until
from .rts_load import _RUN, FanoutSink

__all__ = ["MqttTarget", "fanout", "idle_clients", "p2p", "paho", "rtt"]

_ids = itertools.count(1)


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    #: Seconds between keep-alive pings of an idle client (rts_sync's heartbeat is 5 s).
    keepalive: int = 5


def paho() -> Any:
    """The ``paho.mqtt.client`` module (version 2 or later), or a BenchError saying how to get
    it."""
    try:
        mod = importlib.import_module("paho.mqtt.client")
    except ImportError:
        raise BenchError("--compare mqtt needs paho-mqtt >= 2: pip install 'rts_sync[bench]' "
                         "(or pip install 'paho-mqtt>=2')") from None
    if not hasattr(mod, "CallbackAPIVersion"):
        raise BenchError("--compare mqtt needs paho-mqtt >= 2 (found an older one): "
                         "pip install -U 'paho-mqtt>=2'")
    return mod


def _nodelay(client: Any, userdata: Any, sock: Any) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass


class Client:
    """One connected paho client with its network thread running."""

    def __init__(self, target: MqttTarget,
                 on_message: Optional[Callable[[bytes], None]] = None) -> None:
        m = paho()
        self.name = "b%s-m%d" % (_RUN, next(_ids))
        self.c = m.Client(m.CallbackAPIVersion.VERSION2, client_id=self.name, clean_session=True,
                          protocol=m.MQTTv311)
        self.c.on_socket_open = _nodelay
        self._connected = threading.Event()
        self._suback = threading.Condition()
        self._subacked: Set[int] = set()
        self.published = 0
        self._on_message = on_message
        self.c.on_connect = self._connect_cb
        self.c.on_subscribe = self._subscribe_cb
        self.c.on_publish = self._publish_cb
        self.c.on_message = self._message_cb
        self.c.connect(target.host, target.port, keepalive=target.keepalive)
        self.c.loop_start()
        if not self._connected.wait(15.0):
            self.close()
            raise BenchError("paho client could not connect to mosquitto at %s:%d"
                             % (target.host, target.port))

    def _connect_cb(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connected.set()

    def _subscribe_cb(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._suback:
            self._subacked.add(mid)
            self._suback.notify_all()

    def _publish_cb(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.published += 1

    def _message_cb(self, client: Any, userdata: Any, msg: Any) -> None:
        if self._on_message is not None:
            self._on_message(msg.payload)

    def subscribe(self, topic: str, qos: int) -> None:
        rc, mid = self.c.subscribe(topic, qos)
        with self._suback:
            ok = rc == 0 and self._suback.wait_for(lambda: mid in self._subacked, 10.0)
        if not ok:
            raise BenchError("paho could not subscribe to %s (rc %s)" % (topic, rc))

    def publish(self, topic: str, payload: bytes, qos: int) -> None:
        self.c.publish(topic, payload, qos)

    def nodelay(self) -> bool:
        sock = self.c.socket()
        return bool(sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


class Clients:
    """Clients closed together at the end."""

    def __init__(self) -> None:
        self.clients: List[Client] = []

    def add(self, target: MqttTarget, on_message: Optional[Callable[[bytes], None]] = None) -> Client:
        c = Client(target, on_message)
        self.clients.append(c)
        return c

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for c in self.clients:
            c.close()


def _topic(kind: str) -> str:
    return "bench/%s/%s/%d" % (_RUN, kind, next(_ids))


def p2p(target: MqttTarget, n: int, qos: int, progress: Progress, timeout: float) -> Dict[str, Any]:
    """One publisher, one subscriber, ``n`` 64-byte messages at ``qos``."""
    checker = SeqChecker(n)

    def got(payload: bytes) -> None:
        seq, sent = parse_payload(payload)
        checker.take(seq, sent)

    topic = _topic("p2p")
    deadline = time.perf_counter() + timeout
    with Clients() as cs:
        sender = cs.add(target)
        receiver = cs.add(target, got)
        receiver.subscribe(topic, qos)
        nodelay = sender.nodelay() and receiver.nodelay()
        t0 = time.perf_counter_ns()
        for i in range(n):
            sender.publish(topic, make_payload(i).encode("ascii"), qos)
            if i % 1000 == 0:
                progress.update(checker.unique, n, " msgs")
        t_sent = time.perf_counter_ns()
        wait_until(checker.done.is_set, lambda: checker.received, deadline,
                   tick=lambda: progress.update(checker.unique, n, " msgs"))
        if qos:
            wait_until(lambda: sender.published >= n, lambda: sender.published,
                       min(deadline, time.perf_counter() + 15.0))
        acked = sender.published
    elapsed = max(1, checker.last_ns - t0) / 1e9
    out: Dict[str, Any] = {"msgs_per_s": checker.unique / elapsed,
                           "send_calls_per_s": n / max(1, t_sent - t0) * 1e9,
                           "seconds": elapsed, "results": {"ok": acked}, "tcp_nodelay": nodelay}
    out.update(checker.summary())
    return out


def rtt(target: MqttTarget, n: int, warmup: int, qos: int, progress: Progress,
        timeout: float) -> Dict[str, Any]:
    """``n`` sequential echoes through the broker (ping topic -> echo client -> pong topic)."""
    got = threading.Event()
    box: List[bytes] = [b""]
    ping, pong = _topic("ping"), _topic("pong")
    echo_box: List[Optional[Client]] = [None]

    def back(payload: bytes) -> None:
        box[0] = payload
        got.set()

    def echo(payload: bytes) -> None:
        e = echo_box[0]
        if e is not None:
            e.publish(pong, payload, qos)

    lat: List[int] = []
    lost = 0
    deadline = time.perf_counter() + timeout
    with Clients() as cs:
        pinger = cs.add(target, back)
        echoer = echo_box[0] = cs.add(target, echo)
        pinger.subscribe(pong, qos)
        echoer.subscribe(ping, qos)
        for i in range(warmup + n):
            if time.perf_counter() > deadline:
                break
            got.clear()
            payload = make_payload(i).encode("ascii")
            t0 = time.perf_counter_ns()
            pinger.publish(ping, payload, qos)
            while True:
                if not got.wait(2.0):
                    lost += 1
                    break
                t1 = time.perf_counter_ns()
                if box[0] == payload:
                    if i >= warmup:
                        lat.append(t1 - t0)
                    break
                got.clear()
            if i % 100 == 0:
                progress.update(i, warmup + n, " echoes")
    out: Dict[str, Any] = percentiles(lat)
    out["lost"] = lost
    return out


def fanout(target: MqttTarget, members: int, deliveries: int, rounds: int, qos: int,
           progress: Progress, timeout: float) -> Dict[str, Any]:
    """One publisher and ``members`` subscribers of one topic; as the rts_sync fan-out."""
    n_msgs = max(1, deliveries // members)
    sink = FanoutSink(members, n_msgs + rounds)
    topic = _topic("room")
    deadline = time.perf_counter() + timeout

    def member(idx: int) -> Callable[[bytes], None]:
        return lambda payload: sink.take(idx, payload)

    with Clients() as cs:
        progress.note("connecting %d paho clients" % (members + 1))
        sender = cs.add(target)
        subs = [cs.add(target, member(i)) for i in range(members)]
        for s in subs:
            s.subscribe(topic, qos)
        total = members * n_msgs
        sink.expect(total)
        t0 = time.perf_counter_ns()
        for i in range(n_msgs):
            sender.publish(topic, make_payload(i).encode("ascii"), qos)
            if i % 100 == 0:
                progress.update(sink.count, total, " deliveries")
        wait_until(sink.reached.is_set, lambda: sink.count, deadline,
                   tick=lambda: progress.update(sink.count, total, " deliveries"))
        burst_count, burst_last = sink.count, sink.last_ns
        sink.record = True
        expected = sink.count
        for r in range(rounds):
            if time.perf_counter() > deadline:
                break
            expected += members
            sink.expect(expected)
            sender.publish(topic, make_payload(n_msgs + r).encode("ascii"), qos)
            if not sink.reached.wait(5.0):
                expected = sink.count
            progress.update(r, rounds, " rounds")
    elapsed = max(1, burst_last - t0) / 1e9
    out: Dict[str, Any] = {"members": members, "messages": n_msgs, "deliveries": burst_count,
                           "deliveries_per_s": burst_count / elapsed, "seconds": elapsed}
    out.update(sink.summary())
    out["one_way"] = percentiles(sink.latencies_ns)
    return out


def idle_clients(target: MqttTarget, n: int, seconds: float) -> Dict[str, Any]:
    """The idle workload's body for paho clients, run in a fresh process."""
    from .idle import measure_idle

    def start() -> List[Any]:
        return [Client(target) for _ in range(n)]

    def stop(clients: List[Any]) -> None:
        for c in clients:
            c.close()

    return measure_idle(n, seconds, lambda: Client(target).close(), start, stop)
