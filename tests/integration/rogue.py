"""A rogue server for SDK tests: an aiohttp WebSocket server on its own thread whose every
connection runs a script (an ``async def script(peer)``) that may speak the protocol properly,
badly, or not at all; and a raw TCP server for the HTTP upgrade itself.

``Peer`` is one accepted connection with a server-role ``Connection`` of its own (so that the
frames it sends well are well-formed) and raw writes for what no WebSocket library would send.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Awaitable, Callable, List, Optional

from aiohttp import WSMsgType, web

from rts_sync import protocol as p
from rts_sync.protocol import Connection, Op, Role

Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One connection to the rogue server (see the module docstring)."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, n: int) -> None:
        self.ws = ws
        self.request = request
        self.n = n  #: 1 for the first connection to this server, 2 for the next, ...
        self.conn = Connection(Role.SERVER, max_frame=1 << 24)

    async def recv(self, timeout: float = 10.0, acks: bool = False) -> Any:
        """The next event from the client (duplicates skipped, ACKs too unless ``acks``); None
        once it closed."""
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), timeout)
            if msg.type != WSMsgType.BINARY:
                return None
            ev = self.conn.receive(msg.data)
            if ev is not None and (acks or not isinstance(ev, p.Acked)):
                return ev

    async def recv_until(self, kind: type, timeout: float = 10.0) -> Any:
        """The next event of ``kind`` (PINGs on the way are answered); None once it closed."""
        while True:
            ev = await self.recv(timeout)
            if ev is None or isinstance(ev, kind):
                return ev
            if isinstance(ev, p.Ping):
                await self.send(self.conn.pong(ev.token))

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    def write_raw(self, data: bytes) -> None:
        """Bytes straight onto the TCP connection (WebSocket framing is up to the caller)."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client is gone")
        transport.write(data)

    async def handshake(self, params: Optional[dict] = None) -> p.Hello:
        hello = await self.recv()
        assert isinstance(hello, p.Hello), hello
        await self.send(self.conn.welcome(1, params if params is not None else {}))
        return hello

    async def login(self, code: int = 0, result: Any = None) -> p.Request:
        """Answer the LOGIN (after a handshake that did not resume)."""
        req = await self.recv_until(p.Request)
        assert req is not None and req.op == Op.LOGIN, req
        await self.send(self.conn.respond(req.rid, code, {"session": "rogue-%d" % self.n}
                                          if result is None else result))
        return req

    async def serve(self, until: Optional[Callable[[], bool]] = None) -> None:
        """Behave: PONG, answer requests (online status: online), SENDs: RESULT 0, until the
        client closes (or ``until()`` is true after a frame)."""
        while True:
            ev = await self.recv(3600, acks=True)
            if ev is None:
                return
            if isinstance(ev, p.Ping):
                await self.send(self.conn.pong(ev.token))
            elif isinstance(ev, p.Request):
                await self.send(self.conn.respond(ev.rid, 0, 1 if ev.op == Op.ONLINE_STATUS else None))
            elif isinstance(ev, p.Send):
                await self.send(self.conn.result(0, [ev.seq]))
            ack = self.conn.ack()
            if ack is not None:
                await self.send(ack)
            if until is not None and until():
                return

    async def linger(self, seconds: float = 30.0) -> None:
        """Keep the connection open, reading and ignoring everything, until the client goes."""
        try:
            while True:
                msg = await asyncio.wait_for(self.ws.receive(), seconds)
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                    return
        except asyncio.TimeoutError:
            return


def unmasked_frame(payload: bytes, opcode: int = 0x2, fin: bool = True,
                   length: Optional[int] = None) -> bytes:
    """A server WebSocket frame; ``length`` overrides the header's length (a lie)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


class RogueServer:
    """Serves ``/rts`` on 127.0.0.1 (any free port) on its own event-loop thread; every
    connection runs ``script``, which tests may swap at any time. ``raw`` (bytes, or None to say
    nothing) turns it into a plain TCP server that answers the HTTP upgrade with those bytes.

    Threading: construct and ``close`` from the test thread; scripts run on the server's loop.
    """

    def __init__(self, script: Optional[Script] = None, raw: Optional[bytes] = None,
                 raw_mode: bool = False) -> None:
        self.script: Script = script or (lambda peer: peer.linger())
        self.raw, self.raw_mode = raw, raw_mode
        #: When each connection was accepted (time.monotonic()).
        self.accepted: List[float] = []
        self.errors: List[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Optional[asyncio.Event] = None
        self._writers: List[asyncio.StreamWriter] = []
        self.port = 0
        self._thread = threading.Thread(target=self._run, name="rogue-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return "ws://127.0.0.1:%d/rts" % self.port

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        if self.raw_mode:
            server = await asyncio.start_server(self._raw_client, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close()
            for w in self._writers:
                w.close()
            await server.wait_closed()
            return
        app = web.Application()
        app.router.add_get("/rts", self._handler)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 24, autoping=True)
        await ws.prepare(request)
        self.accepted.append(time.monotonic())
        try:
            await self.script(Peer(ws, request, len(self.accepted)))
        except (asyncio.TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception as exc:  # a script's own assertion: the test reports it
            self.errors.append(exc)
        if not ws.closed:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # the client may have gone already
                pass
        return ws

    async def _raw_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        self._writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            if self.raw is not None:
                writer.write(self.raw)
                await writer.drain()
            await reader.read()  # until the client gives up
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def __enter__(self) -> RogueServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
