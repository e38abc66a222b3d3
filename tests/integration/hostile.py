"""A hostile client for the live fuzz test: many raw WebSocket connections at once, each sending
well-formed-but-wrong frames the server must tolerate, then one frame (malformed CBOR, truncated,
oversized, a WebSocket-level violation, or well-formed but fatal) that must end it with a clear
close code.

Raw asyncio streams, not a WebSocket library, so that it can also lie in frame headers, leave the
mask out, set reserved bits and stop in the middle of a frame. Run as a script (the fuzz test
starts it in a child process, so that it does not share the in-process server's GIL)::

    python hostile.py ws://127.0.0.1:PORT/rts APP_ID APP_KEY FRAMES SEED [CONCURRENCY]

It prints one JSON report: frames sent by category, close codes seen, connections whose close code
was not the expected one (with details), and the rate.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import json
import os
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from rts_sync import protocol as p
from rts_sync._client.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsParser
from rts_sync.errors import RemoteProtocolError
from rts_sync.protocol import CloseCode, Connection, Op, Role, TargetKind
from rts_sync.token import mint_login_token

MAX_FRAME = p.default_max_frame()
#: WebSocket close code aiohttp uses for a violation of RFC 6455 framing.
WS_PROTOCOL_ERROR = 1002
#: ... and for text that is not UTF-8.
WS_INVALID_TEXT = 1007


def ws_frame(payload: bytes, opcode: int = OP_BINARY, *, fin: bool = True, mask: bool = True,
             rsv: int = 0, length: Optional[int] = None) -> bytes:
    """One client WebSocket frame; ``length`` overrides the length in the header (a lie)."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head.append(bit | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(bit | 127)
        head += n.to_bytes(8, "big")
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    if payload:
        k = int.from_bytes((key * (len(payload) // 4 + 1))[:len(payload)], "big")
        payload = (int.from_bytes(payload, "big") ^ k).to_bytes(len(payload), "big")
    return bytes(head) + key + payload


def is_malformed(data: bytes) -> bool:
    """True when the server's decoder must refuse ``data`` (protocol error)."""
    try:
        p.decode(data, MAX_FRAME)
    except RemoteProtocolError:
        return True
    return False


# ------------------------------------------------------------------------------ the frames
#: Well-formed but wrong frames that the server answers without closing: fn(conn, rng, logged_in).
Tolerated = Callable[[Connection, random.Random, bool], bytes]


def _send(kind: int, target: str, payload: Any, config: int = 0) -> Tolerated:
    return lambda c, r, li: c.send(kind, target, config, payload, reliable=config == 0)[1]


def _request(op: int, *args: Any) -> Tolerated:
    return lambda c, r, li: c.request(op, args)[1]


def _duplicate(c: Connection, r: random.Random, li: bool) -> bytes:
    frames = c.unacked_frames()
    return frames[-1] if frames else c.ping(1)  # resent: the server drops it


_FRAMES: Dict[str, Tolerated] = {
    "send_no_receiver": _send(TargetKind.PEER, "nobody-here", "x"),
    "send_invalid_target": _send(TargetKind.PEER, "not a valid id!", b"\x00", config=1),
    "send_over_payload": lambda c, r, li: c.send(TargetKind.PEER, "nobody", 0,
                                                 b"x" * (p.MAX_PAYLOAD + 1))[1],
    "send_room_not_joined": _send(TargetKind.ROOM, "room-x", "hi"),
    "send_server_no_params": _send(TargetKind.SERVER, "", "hi"),
    "status_invalid_id": _request(Op.ONLINE_STATUS, "bad id!"),
    "status_not_text": _request(Op.ONLINE_STATUS, 12345),
    "join_invalid_room": lambda c, r, li: c.request(Op.JOIN_ROOM, ["bad room!", 0])[1],
    "leave_not_joined": _request(Op.LEAVE_ROOM, "never-joined"),
    "leave_not_text": _request(Op.LEAVE_ROOM, [1, 2]),
    "server_params_bad": _request(Op.SET_SERVER_PARAMS, "", "ftp://x/"),
    "login_garbage_token": _request(Op.LOGIN, "001garbage", "eve", None, 0),
    "login_not_text": _request(Op.LOGIN, 7, b"eve", 3, "x"),
    "duplicate": _duplicate,
    "ack_old": lambda c, r, li: p.encode(p.Ack(0)),
    "ping": lambda c, r, li: c.ping(r.randrange(1 << 62)),
    "pong_unasked": lambda c, r, li: c.pong(r.randrange(1 << 62)),
}
#: Each tolerated frame as it goes on the wire (masked), plus two WebSocket-level oddities that
#: RFC 6455 servers may accept: an unmasked client frame (aiohttp takes it) and a ping control
#: frame (answered with a pong).
def _masked(fn: Tolerated) -> Tolerated:
    return lambda c, r, li: ws_frame(fn(c, r, li))


TOLERATED: Dict[str, Tolerated] = {name: _masked(fn) for name, fn in _FRAMES.items()}
TOLERATED["ws_unmasked"] = lambda c, r, li: ws_frame(c.ping(2), mask=False)
TOLERATED["ws_ping"] = lambda c, r, li: ws_frame(os.urandom(r.randrange(126)), opcode=OP_PING)


def _garbage(r: random.Random) -> bytes:
    while True:
        data = bytes(r.randrange(256) for _ in range(r.randrange(1, 64)))
        if is_malformed(data):
            return data


def _mutated(r: random.Random, c: Connection) -> bytes:
    samples = [p.encode(p.Send(9, 0, "bob", 0, "hello")), p.encode(p.Request(9, 1, ("t", "u", None, 0))),
               p.encode(p.Ack(3)), p.encode(p.Ping(5)), p.encode(p.Hello((1,), "a" * 24, "x"))]
    while True:
        data = bytearray(r.choice(samples))
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(3)
            i = r.randrange(len(data))
            if op == 0:
                data[i] ^= 1 << r.randrange(8)
            elif op == 1:
                data.insert(i, r.randrange(256))
            elif len(data) > 1:
                del data[i]
        if is_malformed(bytes(data)):
            return bytes(data)


def _truncated(r: random.Random, c: Connection) -> bytes:
    data = p.encode(p.Send(99, 0, "bob", 0, "x" * r.randrange(0, 300)))
    return data[:r.randrange(len(data))]


#: Fatal frames: name -> (needs HELLO first, needs login, expected close codes, build(rng, conn)).
#: A builder returns the raw wire bytes (WebSocket frames included).
Fatal = Tuple[bool, bool, Set[Any], Callable[[random.Random, Connection], bytes]]
FATAL: Dict[str, Fatal] = {
    "garbage": (True, False, {CloseCode.PROTOCOL_ERROR}, lambda r, c: ws_frame(_garbage(r))),
    "mutated": (True, False, {CloseCode.PROTOCOL_ERROR}, lambda r, c: ws_frame(_mutated(r, c))),
    "truncated_cbor": (True, False, {CloseCode.PROTOCOL_ERROR},
                       lambda r, c: ws_frame(_truncated(r, c))),
    "trailing_bytes": (True, False, {CloseCode.PROTOCOL_ERROR},
                       lambda r, c: ws_frame(c.ping(1) + bytes([r.randrange(256)]))),
    "depth_bomb": (True, False, {CloseCode.PROTOCOL_ERROR},
                   lambda r, c: ws_frame(b"\x84\x03\x01\x01" + b"\x81" * r.randrange(500, 60000)
                                         + b"\x00")),
    "oversize_claim": (True, False, {CloseCode.FRAME_TOO_LARGE},
                       lambda r, c: ws_frame(b"\x00" * 64, length=r.choice(
                           [MAX_FRAME + 1, 1 << 20, 1 << 31, (1 << 62) + 5]))),
    # The server refuses it from its header and closes without reading the body, so TCP may
    # reset the connection before the close frame is read: a reset counts as clear here.
    "oversize_body": (True, True, {CloseCode.FRAME_TOO_LARGE, "reset"},
                      lambda r, c: ws_frame(b"\x00" * (MAX_FRAME + r.randrange(1, 2000)))),
    "ws_reserved_bits": (True, False, {WS_PROTOCOL_ERROR},
                         lambda r, c: ws_frame(c.ping(1), rsv=r.choice([2, 4, 6]))),
    "ws_bad_opcode": (True, False, {WS_PROTOCOL_ERROR},
                      lambda r, c: ws_frame(b"x", opcode=r.choice([3, 4, 5, 6, 7, 11, 12, 15]))),
    "ws_fragmented_control": (True, False, {WS_PROTOCOL_ERROR},
                              lambda r, c: ws_frame(b"x", opcode=OP_PING, fin=False)),
    "ws_orphan_continuation": (True, False, {WS_PROTOCOL_ERROR},
                               lambda r, c: ws_frame(c.ping(1), opcode=0)),
    "text": (True, False, {CloseCode.PROTOCOL_ERROR},
             lambda r, c: ws_frame(b"[9, 1]", opcode=OP_TEXT)),
    "text_not_utf8": (True, False, {WS_INVALID_TEXT},
                      lambda r, c: ws_frame(b"\xff\xfe\x80", opcode=OP_TEXT)),
    "before_hello": (False, False, {CloseCode.PROTOCOL_ERROR},
                     lambda r, c: ws_frame(p.encode(r.choice(
                         [p.Ping(1), p.Ack(0), p.Request(1, Op.LOGIN, ("t", "u", None, 0)),
                          p.Send(1, 0, "bob", 0, "x")])))),
    "wrong_direction": (True, False, {CloseCode.PROTOCOL_ERROR},
                        lambda r, c: ws_frame(p.encode(r.choice(
                            [p.Welcome(1, {}), p.Response(1, 1, 0, None), p.Result(1, 0, (1,)),
                             p.Deliver(1, 0, "bob", None, "x"), p.Notice(1, 1, (1,))])))),
    "second_hello": (True, False, {CloseCode.PROTOCOL_ERROR},
                     lambda r, c: ws_frame(p.encode(p.Hello((1,), "x" * 24)))),
    "unknown_op": (True, False, {CloseCode.PROTOCOL_ERROR},
                   lambda r, c: ws_frame(c.request(r.randrange(7, 256), ())[1])),
    "wrong_arity": (True, False, {CloseCode.PROTOCOL_ERROR},
                    lambda r, c: ws_frame(c.request(r.choice(list(Op)), (1,) * 5)[1])),
    "ack_ahead": (True, True, {CloseCode.PROTOCOL_ERROR},
                  lambda r, c: ws_frame(p.encode(p.Ack(r.randrange(1000, 1 << 62))))),
    "unknown_app": (False, False, {CloseCode.REJECTED},
                    lambda r, c: ws_frame(p.encode(p.Hello((1,), "rtsapp000000000000000099")))),
    "no_common_version": (False, False, {CloseCode.UNSUPPORTED_VERSION},
                          lambda r, c: ws_frame(p.encode(p.Hello((7, 8), APP["id"])))),
    "stall_mid_frame": (True, False, {CloseCode.LOGIN_TIMEOUT},
                        lambda r, c: ws_frame(c.ping(1), length=200)),
}
#: How often each fatal kind is picked (the stall waits for the login timeout: rare).
WEIGHTS: Dict[str, int] = dict.fromkeys(FATAL, 10)
WEIGHTS.update(stall_mid_frame=1, oversize_body=3)

APP: Dict[str, str] = {"id": "", "key": ""}


# ------------------------------------------------------------------------------ one connection
class Report:
    def __init__(self) -> None:
        self.frames: collections.Counter[str] = collections.Counter()
        self.closes: collections.Counter[str] = collections.Counter()
        self.connections = 0
        self.unexpected: List[str] = []
        self.answers = 0

    def as_dict(self, seconds: float) -> Dict[str, Any]:
        return {"connections": self.connections, "bad_frames": sum(self.frames.values()),
                "fatal_frames": self.connections,
                "tolerated_frames": sum(self.frames.values()) - self.connections,
                "frames": dict(self.frames), "closes": dict(self.closes),
                "answers": self.answers, "unexpected": self.unexpected[:50],
                "n_unexpected": len(self.unexpected), "seconds": round(seconds, 2)}


async def _handshake(host: str, port: int, path: str) -> Tuple[asyncio.StreamReader,
                                                                asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  % (path, host, port, key)).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError("no upgrade: %r" % head[:80])
    return reader, writer


async def one_connection(n: int, rng: random.Random, host: str, port: int, path: str,
                         report: Report) -> None:
    name = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    hello, login, expected, build = FATAL[name]
    conn = Connection(Role.CLIENT)
    wire = bytearray()
    uid = "fz-%d" % n
    logged_in = login or (hello and name != "stall_mid_frame" and rng.random() < 0.5)
    if hello:
        wire += ws_frame(conn.hello(APP["id"], "hostile"))
        conn.receive(p.encode(p.Welcome(1, {})))  # our mirror of the server's state
        if logged_in:
            wire += ws_frame(conn.request(Op.LOGIN, (mint_login_token(APP["id"], APP["key"], uid),
                                                     uid, None, 0))[1])
        for _ in range(rng.randrange(0, 40)):
            kind = rng.choice(list(TOLERATED))
            wire += TOLERATED[kind](conn, rng, logged_in)
            report.frames["tolerated:" + kind] += 1
    wire += build(rng, conn)
    report.frames["fatal:" + name] += 1
    report.connections += 1
    code = await _exchange(host, port, path, bytes(wire), report)
    report.closes["%s->%s" % (name, code)] += 1
    if code not in expected:
        report.unexpected.append("%s (conn %d): close %s, expected %s"
                                 % (name, n, code, sorted(map(str, expected))))


async def _exchange(host: str, port: int, path: str, wire: bytes, report: Report) -> Any:
    """Send ``wire``, read until the server closes; the WebSocket close code (or what went wrong)."""
    try:
        reader, writer = await asyncio.wait_for(_handshake(host, port, path), 10)
    except Exception as exc:  # reported, not raised
        return "handshake failed: %r" % exc
    parser = WsParser(1 << 24)
    try:
        writer.write(wire)
        deadline = time.monotonic() + 15
        while True:
            data = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
            if not data:
                return "eof without close"
            for opcode, payload in parser.feed(data):
                if opcode == OP_CLOSE:
                    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if opcode == OP_BINARY:
                    report.answers += 1
                elif opcode not in (OP_PING, OP_PONG):
                    return "unexpected opcode %d" % opcode
    except asyncio.TimeoutError:
        return "no close within 15 s"
    except ConnectionResetError:
        return "reset"
    except (ConnectionError, OSError) as exc:
        return "connection error: %r" % exc
    except RemoteProtocolError as exc:
        return "bad frame from the server: %s" % exc
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def run(url: str, app_id: str, app_key: str, frames: int, seed: int,
              concurrency: int = 48) -> Dict[str, Any]:
    """Open connections until at least ``frames`` bad frames were sent; the report."""
    APP.update(id=app_id, key=app_key)
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/rts"
    report = Report()
    rng = random.Random(seed)
    sem = asyncio.Semaphore(concurrency)
    tasks: Set[asyncio.Task[None]] = set()
    t0 = time.monotonic()
    n = 0
    while sum(report.frames.values()) < frames:
        await sem.acquire()
        n += 1
        task = asyncio.ensure_future(one_connection(n, random.Random(rng.random()), host, port,
                                                    path, report))
        tasks.add(task)
        task.add_done_callback(lambda t: (tasks.discard(t), sem.release()))
    if tasks:
        await asyncio.gather(*tasks)
    return report.as_dict(time.monotonic() - t0)


def main(argv: List[str]) -> int:
    url, app_id, app_key, frames, seed = argv[:5]
    concurrency = int(argv[5]) if len(argv) > 5 else 48
    result = asyncio.run(run(url, app_id, app_key, int(frames), int(seed), concurrency))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
