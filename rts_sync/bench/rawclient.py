"""Lightweight raw clients for the server-capacity workload, run in a child process.

``python -m rts_sync.bench.rawclient rts|mqtt ...`` opens M connections with bounded
concurrency (rts: WebSocket upgrade, HELLO, LOGIN through the sans-IO
:class:`rts_sync.protocol.Connection`; mqtt: CONNECT), keeps them all with heartbeats (rts: a
PING frame, mqtt: PINGREQ, every ``--heartbeat`` seconds per connection, spread evenly), holds
them idle, then makes P of them senders and P receivers that pump 64-byte messages (each sender
keeps ``--window`` messages in flight: a new one goes out when its receiver got one) for a few
seconds, reliable then unreliable (rts config 0 / 1, MQTT QoS 1 / 0), and closes everything.

These clients are plain asyncio protocols with none of the SDK's threads, so that one process
can hold thousands of connections and the server, not the clients, is what is measured.

Each phase boundary is printed on stdout as a JSON line ``{"phase": NAME, "t": wall time}`` so
the parent can read the server's CPU and memory for that window; the last line is
``{"result": {...}}``.

Threading: one asyncio event loop in the child's main thread.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from rts_sync.protocol import Connection, Deliver, Op, Response, Role, Welcome
from rts_sync.token import mint_login_token

from .common import percentiles

__all__ = ["main"]

_PAYLOAD = b"0123456789abcdef" * 4  # 64 bytes
_PAYLOAD_TEXT = _PAYLOAD.decode("ascii")


def _emit(obj: Dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _phase(name: str, **extra: Any) -> None:
    _emit({"phase": name, "t": time.time(), **extra})


class Pair:
    """A sender and its receiver in the message phase: ``window`` messages in flight."""

    def __init__(self, sender: Any, receiver: Any, window: int) -> None:
        self.sender = sender
        self.receiver = receiver
        self.window = window
        self.in_flight = 0
        self.delivered = 0
        self.sending = False

    def pump(self) -> None:
        while self.sending and self.in_flight < self.window:
            self.in_flight += 1
            self.sender.send_message(self.receiver)

    def got(self) -> None:
        self.delivered += 1
        self.in_flight -= 1
        self.pump()


class Base(asyncio.Protocol):
    """Shared plumbing: a transport, a waiter for the handshake steps, closing."""

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.transport: Optional[asyncio.Transport] = None
        self.waiter: Optional[asyncio.Future[Any]] = None
        self.closed = False
        self.pair: Optional[Pair] = None  # set on receivers in the message phase
        self.reliable = True
        self.uid = ""
        #: Logged in (rts) / CONNACK received (mqtt): heartbeats only from then on.
        self.ready = False
        #: Called with each message's payload (the RTT echo), if set.
        self.on_payload: Optional[Callable[[Any], None]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        self._wake(ConnectionError("connection lost: %r" % (exc,)))

    def _wake(self, value: Any) -> None:
        w, self.waiter = self.waiter, None
        if w is not None and not w.done():
            if isinstance(value, BaseException):
                w.set_exception(value)
            else:
                w.set_result(value)

    async def wait(self, timeout: float) -> Any:
        self.waiter = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(self.waiter, timeout)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


class RtsConn(Base):
    """One raw rts_sync connection: WebSocket framing here, the protocol in ``Connection``."""

    def __init__(self, idx: int) -> None:
        super().__init__(idx)
        self.conn = Connection(Role.CLIENT)
        self.buf = bytearray()
        self.upgraded = False

    def write_frame(self, frame: bytes) -> None:
        # A client frame must be masked; the all-zero key leaves the payload as it is.
        n = len(frame)
        if n < 126:
            head = bytes((0x82, 0x80 | n))
        elif n < 65536:
            head = bytes((0x82, 0xFE)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x82, 0xFF)) + n.to_bytes(8, "big")
        assert self.transport is not None
        self.transport.write(head + b"\0\0\0\0" + frame)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end])
            del buf[:end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self._wake(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
                return
            self.upgraded = True
            self._wake(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, n = buf[pos], buf[pos + 1] & 0x7F
            off = pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                n, off = int.from_bytes(buf[pos + 2:pos + 4], "big"), pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, off = int.from_bytes(buf[pos + 2:pos + 10], "big"), pos + 10
            if size - off < n:
                break
            payload = bytes(buf[off:off + n])
            pos = off + n
            opcode = b0 & 0x0F
            if opcode == 2:
                self._frame(payload)
            elif opcode == 9 and self.transport is not None:  # WebSocket ping: pong it
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
            elif opcode == 8:
                self.close()
        del buf[:pos]
        if self.upgraded and not self.closed:
            ack = self.conn.ack()
            if ack is not None:
                self.write_frame(ack)

    def _frame(self, data: bytes) -> None:
        try:
            ev = self.conn.receive(data)
        except Exception as exc:  # a protocol error: this connection is done
            self._wake(exc)
            self.close()
            return
        t = type(ev)
        if t is Deliver:
            if self.pair is not None:
                self.pair.got()
            if self.on_payload is not None:
                self.on_payload(ev.payload)
        elif t is Welcome or t is Response:
            self._wake(ev)

    def heartbeat(self) -> None:
        if self.ready and not self.closed:
            try:
                self.write_frame(self.conn.ping(0))
            except Exception:  # the protocol connection was closed by the server
                self.close()

    def send_message(self, receiver: Any, payload: Any = _PAYLOAD_TEXT) -> None:
        _, data = self.conn.send(0, receiver.uid, 0 if self.reliable else 1, payload,
                                 reliable=self.reliable)
        self.write_frame(data)

    async def open(self, loop: asyncio.AbstractEventLoop, a: argparse.Namespace,
                   local: Optional[str], uid: str, token: str, timeout: float) -> None:
        self.uid = uid
        await loop.create_connection(lambda: self, a.host, a.port,
                                     local_addr=(local, 0) if local else None)
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        assert self.transport is not None
        self.transport.write(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                              "Sec-WebSocket-Version: 13\r\n\r\n"
                              % (a.path, a.host, a.port, key)).encode("ascii"))
        await self.wait(timeout)
        self.write_frame(self.conn.hello(a.app_id, "rts-bench-raw"))
        ev = await self.wait(timeout)
        if not isinstance(ev, Welcome):
            raise ConnectionError("no WELCOME")
        _, data = self.conn.request(Op.LOGIN, [token, uid, None, 0])
        self.write_frame(data)
        ev = await self.wait(timeout)
        if not isinstance(ev, Response) or ev.code != 0:
            raise ConnectionError("login failed: %r" % (getattr(ev, "code", ev),))
        self.ready = True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode("utf-8")
    return len(b).to_bytes(2, "big") + b


class MqttConn(Base):
    """One raw MQTT 3.1.1 connection (CONNECT, PINGREQ, SUBSCRIBE, PUBLISH, PUBACK)."""

    def __init__(self, idx: int) -> None:
        super().__init__(idx)
        self.buf = bytearray()
        self.pid = 0
        self.topic = ""

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos, size = 0, len(buf)
        while size - pos >= 2:
            mult, n, i = 1, 0, pos + 1
            while True:
                if i >= size:
                    n = -1
                    break
                b = buf[i]
                n += (b & 0x7F) * mult
                mult <<= 7
                i += 1
                if not b & 0x80:
                    break
            if n < 0 or size - i < n:
                break
            kind, flags = buf[pos] >> 4, buf[pos] & 0x0F
            body = bytes(buf[i:i + n])
            pos = i + n
            if kind == 3:  # PUBLISH
                tlen = int.from_bytes(body[:2], "big")
                start = 2 + tlen
                if (flags >> 1) & 3 and self.transport is not None:
                    self.transport.write(b"\x40\x02" + body[start:start + 2])  # PUBACK
                    start += 2
                if self.pair is not None:
                    self.pair.got()
                if self.on_payload is not None:
                    self.on_payload(body[start:])
            elif kind in (2, 9):  # CONNACK, SUBACK
                self._wake(body)
        del buf[:pos]

    def heartbeat(self) -> None:
        if self.ready and self.transport is not None and not self.closed:
            self.transport.write(b"\xc0\x00")

    def _next_pid(self) -> int:
        self.pid = self.pid % 65535 + 1
        return self.pid

    def send_message(self, receiver: Any, payload: bytes = _PAYLOAD) -> None:
        assert self.transport is not None
        if self.reliable:
            body = _utf8(receiver.topic) + self._next_pid().to_bytes(2, "big") + payload
            self.transport.write(b"\x32" + _varint(len(body)) + body)
        else:
            body = _utf8(receiver.topic) + payload
            self.transport.write(b"\x30" + _varint(len(body)) + body)

    async def subscribe(self, topic: str, qos: int, timeout: float) -> None:
        assert self.transport is not None
        self.topic = topic
        body = self._next_pid().to_bytes(2, "big") + _utf8(topic) + bytes((qos,))
        self.transport.write(b"\x82" + _varint(len(body)) + body)
        ack = await self.wait(timeout)
        if len(ack) < 3 or ack[2] > 2:
            raise ConnectionError("SUBSCRIBE refused")

    async def open(self, loop: asyncio.AbstractEventLoop, a: argparse.Namespace,
                   local: Optional[str], uid: str, token: str, timeout: float) -> None:
        self.uid = uid
        await loop.create_connection(lambda: self, a.host, a.port,
                                     local_addr=(local, 0) if local else None)
        body = (_utf8("MQTT") + bytes((4, 0x02)) + int(a.heartbeat).to_bytes(2, "big")
                + _utf8(uid))
        assert self.transport is not None
        self.transport.write(b"\x10" + _varint(len(body)) + body)
        ack = await self.wait(timeout)
        if len(ack) < 2 or ack[1] != 0:
            raise ConnectionError("CONNECT refused: %r" % (ack,))
        self.ready = True


async def _run(a: argparse.Namespace) -> Dict[str, Any]:
    loop = asyncio.get_running_loop()
    cls = RtsConn if a.stack == "rts" else MqttConn
    conns: List[Any] = [cls(i) for i in range(a.connections)]
    uids = ["cap%d-%d" % (os.getpid(), i) for i in range(a.connections)]
    tokens = ([mint_login_token(a.app_id, a.app_key, u) for u in uids] if a.stack == "rts"
              else [""] * a.connections)
    locals_: Sequence[Optional[str]] = [None]
    if a.host.startswith("127.") and a.spread > 1:
        locals_ = ["127.0.0.%d" % (i + 1) for i in range(a.spread)]
    sem = asyncio.Semaphore(a.concurrency)
    errors: Dict[str, int] = {}
    opened: List[Any] = []
    stop_heartbeat = asyncio.Event()

    async def open_one(i: int) -> None:
        async with sem:
            c = conns[i]
            try:
                await c.open(loop, a, locals_[i % len(locals_)], uids[i], tokens[i], a.timeout)
                opened.append(c)
            except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
                key = "%s: %s" % (type(exc).__name__, str(exc)[:80])
                errors[key] = errors.get(key, 0) + 1
                c.close()

    async def heartbeats() -> None:
        # Each connection once per heartbeat period, spread evenly and paced by the clock, so a
        # busy event loop sends late heartbeats in a burst instead of stretching the period.
        start, sent = time.perf_counter(), 0
        rate = len(conns) / a.heartbeat
        while not stop_heartbeat.is_set():
            due = int((time.perf_counter() - start) * rate)
            while sent < due:
                conns[sent % len(conns)].heartbeat()
                sent += 1
            try:
                await asyncio.wait_for(stop_heartbeat.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    hb = asyncio.ensure_future(heartbeats())
    _phase("login_start")
    t0 = time.perf_counter()
    await asyncio.gather(*(open_one(i) for i in range(a.connections)))
    login_s = time.perf_counter() - t0
    _phase("login_end", ok=len(opened))
    await asyncio.sleep(a.hold)
    _phase("hold_end")
    result: Dict[str, Any] = {"connections": len(opened), "attempted": a.connections,
                              "errors": errors, "login_seconds": login_s,
                              "logins_per_s": len(opened) / login_s if login_s else 0.0,
                              "heartbeat_s": a.heartbeat}
    pairs_n = min(a.pairs, len(opened) // 2)
    for mode, reliable in (("reliable", True), ("unreliable", False)):
        if pairs_n == 0 or a.seconds <= 0:
            break
        pairs = [Pair(opened[2 * k], opened[2 * k + 1], a.window) for k in range(pairs_n)]
        if a.stack == "mqtt":
            await asyncio.gather(*(p.receiver.subscribe("cap/%d/%s/%d" % (os.getpid(), mode, k),
                                                        1 if reliable else 0, a.timeout)
                                   for k, p in enumerate(pairs)))
        for p in pairs:
            p.receiver.pair = p
            p.sender.reliable = reliable
            p.sending = True
        _phase("%s_start" % mode)
        t1 = time.perf_counter()
        for p in pairs:
            p.pump()
        await asyncio.sleep(a.seconds)
        delivered = sum(p.delivered for p in pairs)
        took = time.perf_counter() - t1
        _phase("%s_end" % mode)
        for p in pairs:
            p.sending = False
        deadline = time.perf_counter() + 10.0
        while sum(p.in_flight for p in pairs) and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        for p in pairs:
            p.receiver.pair = None
        result[mode] = {"pairs": pairs_n, "window": a.window, "delivered": delivered,
                        "seconds": took, "msgs_per_s": delivered / took,
                        "not_delivered": sum(p.in_flight for p in pairs)}
    stop_heartbeat.set()
    await hb
    for c in conns:
        c.close()
    await asyncio.sleep(0.2)
    _phase("closed")
    return result


async def _rtt(a: argparse.Namespace) -> Dict[str, Any]:
    """Sequential echoes between two raw clients through the server: its own share of the
    round trip, without any SDK threads (reliable / QoS 1, then unreliable / QoS 0)."""
    loop = asyncio.get_running_loop()
    cls: Any = RtsConn if a.stack == "rts" else MqttConn
    ping, echo = cls(0), cls(1)
    for c, role in ((ping, "p"), (echo, "e")):
        uid = "rtt%d-%s" % (os.getpid(), role)
        token = mint_login_token(a.app_id, a.app_key, uid) if a.stack == "rts" else ""
        await c.open(loop, a, None, uid, token, a.timeout)
    out: Dict[str, Any] = {}
    got: List[Optional[asyncio.Future[None]]] = [None]

    def back(payload: Any) -> None:
        f = got[0]
        if f is not None and not f.done():
            f.set_result(None)

    ping.on_payload = back
    echo.on_payload = lambda payload: echo.send_message(ping, payload)
    for mode, reliable in (("reliable", True), ("unreliable", False)):
        ping.reliable = echo.reliable = reliable
        if a.stack == "mqtt":
            qos = 1 if reliable else 0
            await ping.subscribe("rtt/%d/%s/pong" % (os.getpid(), mode), qos, a.timeout)
            await echo.subscribe("rtt/%d/%s/ping" % (os.getpid(), mode), qos, a.timeout)
        lat: List[int] = []
        lost = 0
        payload: Any = _PAYLOAD_TEXT if a.stack == "rts" else _PAYLOAD
        for i in range(a.warmup + a.echoes):
            fut: asyncio.Future[None] = loop.create_future()
            got[0] = fut
            t0 = time.perf_counter_ns()
            ping.send_message(echo, payload)
            try:
                await asyncio.wait_for(fut, 2.0)
            except asyncio.TimeoutError:
                lost += 1
                continue
            if i >= a.warmup:
                lat.append(time.perf_counter_ns() - t0)
        out[mode] = dict(percentiles(lat), lost=lost)
    ping.close()
    echo.close()
    await asyncio.sleep(0.1)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rts_sync.bench.rawclient")
    parser.add_argument("stack", choices=["rts", "mqtt"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/rts")
    parser.add_argument("--app-id", default="")
    parser.add_argument("--app-key", default="")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--echoes", type=int, default=0,
                        help="instead of the capacity phases: this many sequential echoes "
                        "between two connections (the server's own round trip)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--spread", type=int, default=8,
                        help="source addresses 127.0.0.1..N for a loopback target")
    a = parser.parse_args(argv)
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    result = asyncio.run(_rtt(a) if a.echoes > 0 else _run(a))
    _emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
