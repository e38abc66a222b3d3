"""The rts_sync workloads, through the SDK: engines in this process, the server elsewhere.

Each function returns a dict of plain numbers (see docs/performance.md for their meaning) and is
bounded by its counts and by a deadline.

Threading: run from the bench's main thread; receiver callbacks run on the engines' callback
threads and only touch :class:`~rts_sync.bench.common.SeqChecker` / :class:`FanoutSink`.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import rts_sync
from rts_sync.token import mint_login_token

from .common import Progress, SeqChecker, make_payload, parse_payload, percentiles, wait_until

__all__ = ["FanoutSink", "Target", "fanout", "p2p", "rtt"]

_uids = itertools.count(1)
_RUN = "%x" % (os.getpid() ^ int(time.time() * 1000) % 0xFFFFFF)


@dataclass(frozen=True)
class Target:
    """Where the SDK workloads connect, and the app they log in with."""

    url: str
    app_id: str
    app_key: str


def new_uid(role: str) -> str:
    return "b%s-%s-%d" % (_RUN, role, next(_uids))


class _Sink(rts_sync.RTSEventHandler, rts_sync.RTSRoomEventHandler):
    """Forwards peer and room text messages to ``fn(uid, message)``."""

    def __init__(self, fn: Optional[Callable[[str, str], None]] = None) -> None:
        self.fn = fn

    def on_message_received(self, uid: str, message: str) -> None:
        if self.fn is not None:
            self.fn(uid, message)

    def on_room_message_received(self, uid: str, message: str) -> None:
        if self.fn is not None:
            self.fn(uid, message)


class Engines:
    """Engines logged in concurrently, destroyed together at the end."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.engines: List[rts_sync.RTS] = []

    def login(self, handlers: Sequence[Optional[rts_sync.RTSEventHandler]],
              timeout: float = 30.0) -> List[tuple[rts_sync.RTS, str]]:
        t = self.target
        made = []
        for h in handlers:
            uid = new_uid("e")
            rts = rts_sync.create_rts(t.app_id, h, server_url=t.url)
            self.engines.append(rts)
            made.append((rts, uid, rts.login(mint_login_token(t.app_id, t.app_key, uid), uid)))
        for _, _, op in made:
            op.result(timeout=timeout)
        return [(rts, uid) for rts, uid, _ in made]

    def __enter__(self) -> Engines:
        return self

    def __exit__(self, *exc: object) -> None:
        destroy_all(self.engines)


def destroy_all(engines: Sequence[rts_sync.RTS]) -> None:
    """Destroy engines in parallel (each destroy may wait for its threads)."""
    if not engines:
        return
    with concurrent.futures.ThreadPoolExecutor(min(16, len(engines))) as pool:
        list(pool.map(lambda e: e.destroy(), engines))


def _outcomes(ops: Sequence[Any], timeout: float) -> Dict[str, int]:
    """How many operations succeeded, failed (by error class) or never finished."""
    done, not_done = concurrent.futures.wait(ops, timeout=max(0.0, timeout))
    out: Dict[str, int] = {"ok": 0, "unfinished": len(not_done)}
    for op in done:
        exc = op.exception()
        if exc is None:
            out["ok"] += 1
        else:
            key = "failed_%s" % type(exc).__name__
            out[key] = out.get(key, 0) + 1
    return out


#: The SDK refuses sends (EXCEED_QPS) past ``outbox_size`` (100,000) in flight: a long burst
#: waits below this many instead, as an application would.
_BACKLOG_HIGH, _BACKLOG_LOW = 50000, 20000


def _backpressure(rts: rts_sync.RTS, deadline: float) -> None:
    if rts.stats()["backlog"] < _BACKLOG_HIGH:
        return
    while rts.stats()["backlog"] > _BACKLOG_LOW and time.perf_counter() < deadline:
        time.sleep(0.005)


def p2p(target: Target, n: int, reliable: bool, progress: Progress, timeout: float) -> Dict[str, Any]:
    """One sender, one receiver (two engines), ``n`` 64-byte text messages as fast as the sender
    can call ``send_message``; throughput from the first send to the last delivery."""
    config = (rts_sync.MessageConfig.RELIABLE_ORDERED if reliable
              else rts_sync.MessageConfig.UNRELIABLE_ORDERED)
    checker = SeqChecker(n)

    def got(uid: str, message: str) -> None:
        seq, sent = parse_payload(message)
        checker.take(seq, sent)

    deadline = time.perf_counter() + timeout
    with Engines(target) as es:
        (sender, _), (_, rx_uid) = es.login([None, _Sink(got)])
        ops = []
        t0 = time.perf_counter_ns()
        for i in range(n):
            if i % 1000 == 0:
                progress.update(checker.unique, n, " msgs")
                _backpressure(sender, deadline)
            ops.append(sender.send_message(rx_uid, make_payload(i), config))
        t_sent = time.perf_counter_ns()
        wait_until(checker.done.is_set, lambda: checker.received, deadline,
                   tick=lambda: progress.update(checker.unique, n, " msgs"))
        results = _outcomes(ops, min(15.0, deadline - time.perf_counter()))
    elapsed = max(1, checker.last_ns - t0) / 1e9
    out: Dict[str, Any] = {"msgs_per_s": checker.unique / elapsed,
                           "send_calls_per_s": n / max(1, t_sent - t0) * 1e9,
                           "seconds": elapsed, "results": results}
    out.update(checker.summary())
    return out


def rtt(target: Target, n: int, warmup: int, reliable: bool, progress: Progress,
        timeout: float) -> Dict[str, Any]:
    """``n`` sequential echoes (after ``warmup``): A sends to B, B's callback sends it back, A's
    callback wakes the loop. Latency = send call to A's callback."""
    config = (rts_sync.MessageConfig.RELIABLE_ORDERED if reliable
              else rts_sync.MessageConfig.UNRELIABLE_ORDERED)
    got = threading.Event()
    box: List[str] = [""]
    echo_box: List[Optional[rts_sync.RTS]] = [None]

    def back(uid: str, message: str) -> None:
        box[0] = message
        got.set()

    def echo(uid: str, message: str) -> None:
        e = echo_box[0]
        if e is not None:
            e.send_message(uid, message, config)

    lat: List[int] = []
    lost = 0
    deadline = time.perf_counter() + timeout
    with Engines(target) as es:
        (pinger, _), (echoer, echo_uid) = es.login([_Sink(back), _Sink(echo)])
        echo_box[0] = echoer
        for i in range(warmup + n):
            if time.perf_counter() > deadline:
                break
            got.clear()
            payload = make_payload(i)
            t0 = time.perf_counter_ns()
            pinger.send_message(echo_uid, payload, config)
            while True:
                if not got.wait(2.0):
                    lost += 1
                    break
                t1 = time.perf_counter_ns()
                if box[0] == payload:
                    if i >= warmup:
                        lat.append(t1 - t0)
                    break
                got.clear()  # a late echo of an earlier (timed out) message
            if i % 100 == 0:
                progress.update(i, warmup + n, " echoes")
    out: Dict[str, Any] = percentiles(lat)
    out["lost"] = lost
    return out


class FanoutSink:
    """What every member of a fan-out received; a burst's end and each round's end are events.

    Threading: ``take`` runs on the members' callback threads (several at once); the counters
    are under one lock, each member's SeqChecker only on that member's ordered lane.
    """

    def __init__(self, members: int, expected_per_member: int) -> None:
        self.checkers = [SeqChecker(expected_per_member) for _ in range(members)]
        self.lock = threading.Lock()
        self.count = 0
        self.target = 0
        self.last_ns = 0
        self.record = False
        self.latencies_ns: List[int] = []
        self.reached = threading.Event()

    def take(self, member: int, payload: Any) -> None:
        seq, sent = parse_payload(payload)
        now = time.perf_counter_ns()
        self.checkers[member].take(seq, sent)
        with self.lock:
            self.count += 1
            self.last_ns = now
            if self.record:
                self.latencies_ns.append(now - sent)
            if self.count >= self.target:
                self.reached.set()

    def expect(self, total: int) -> None:
        with self.lock:
            self.reached.clear()
            self.target = total
            if self.count >= total:
                self.reached.set()

    def summary(self) -> Dict[str, int]:
        sums = [c.summary() for c in self.checkers]
        return {k: sum(s[k] for s in sums) for k in ("lost", "duplicated", "reordered")}


def fanout(target: Target, members: int, deliveries: int, rounds: int, progress: Progress,
           timeout: float) -> Dict[str, Any]:
    """One sender and ``members`` receivers in one room (all engines here). A burst of
    ``deliveries / members`` room messages gives deliveries/s; then ``rounds`` broadcasts one at
    a time (each waits for every member) give the one-way latency percentiles."""
    n_msgs = max(1, deliveries // members)
    sink = FanoutSink(members, n_msgs + rounds)
    room_id = "bench-room-%s-%d" % (_RUN, next(_uids))
    deadline = time.perf_counter() + timeout

    def member_sink(idx: int) -> _Sink:
        return _Sink(lambda uid, message: sink.take(idx, message))

    with Engines(target) as es:
        progress.note("logging in %d engines and joining them to a room" % (members + 1))
        sinks = [member_sink(i) for i in range(members)]
        logged = es.login([None, *[None] * members], timeout=max(30.0, members * 0.5))
        rooms = []
        for i, (rts, _) in enumerate(logged):
            room = rts.create_room(room_id)
            if i > 0:
                room.set_rts_room_event_handler(sinks[i - 1])
            rooms.append(room)
        for op in [r.join_room() for r in rooms]:
            op.result(timeout=max(30.0, members * 0.5))
        time.sleep(0.5)  # let the presence notices of the joins settle
        sender = rooms[0]
        total = members * n_msgs
        sink.expect(total)
        ops = []
        t0 = time.perf_counter_ns()
        for i in range(n_msgs):
            if i % 100 == 0:
                progress.update(sink.count, total, " deliveries")
                _backpressure(logged[0][0], deadline)
            ops.append(sender.send_room_message(make_payload(i)))
        wait_until(sink.reached.is_set, lambda: sink.count, deadline,
                   tick=lambda: progress.update(sink.count, total, " deliveries"))
        burst_count, burst_last = sink.count, sink.last_ns
        results = _outcomes(ops, min(15.0, deadline - time.perf_counter()))
        sink.record = True
        expected = sink.count
        for r in range(rounds):
            if time.perf_counter() > deadline:
                break
            expected += members
            sink.expect(expected)
            sender.send_room_message(make_payload(n_msgs + r))
            if not sink.reached.wait(5.0):
                expected = sink.count
            progress.update(r, rounds, " rounds")
        time.sleep(0.05)
    elapsed = max(1, burst_last - t0) / 1e9
    out: Dict[str, Any] = {"members": members, "messages": n_msgs, "deliveries": burst_count,
                           "deliveries_per_s": burst_count / elapsed, "seconds": elapsed,
                           "results": results}
    out.update(sink.summary())
    out["one_way"] = percentiles(sink.latencies_ns)
    return out


def idle_engines(target: Target, n: int, seconds: float) -> Dict[str, Any]:
    """The idle workload's body, run in a fresh process (see :mod:`rts_sync.bench.idle`)."""
    from .idle import measure_idle

    def start() -> List[Any]:
        es = Engines(target)
        es.login([None] * n, timeout=max(30.0, n * 0.2))
        return es.engines

    def warm() -> None:
        es = Engines(target)
        es.login([None])
        destroy_all(es.engines)

    return measure_idle(n, seconds, warm, start, destroy_all)
