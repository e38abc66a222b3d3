"""How a server Session writes (rts_sync.server.session, docs/performance.md changes 4 and 8): a
frame queued while nothing waits goes out at once, in the call that queues it; what comes in the
same event-loop iteration goes out in one ``transport.write``; frames go out in sequence order
(queued frames, then the ACK, then RESULTs numbered then; a resume's WELCOME first); over the
transport's high-water mark frames wait for a drain; an idle session holds no task, no future,
no timer. A recording transport, and a protocol with aiohttp's flow-control members, stand in for
aiohttp's (as in test_ws_guard); the Session, its protocol Connection and the event loop are
real. No sockets, no sleeps."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, List, Optional, Tuple

import pytest
from aiohttp.base_protocol import BaseProtocol

from rts_sync import protocol as p
from rts_sync.protocol import Connection, Role
from rts_sync.server import wsframe
from rts_sync.server.config import Limits
from rts_sync.server.metrics import Metrics
from rts_sync.server.pending import Pending
from rts_sync.server.session import Session


class Transport:
    """Records every write; ``closing`` as asyncio's transports report it."""

    def __init__(self) -> None:
        self.writes: List[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closing
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.aborted = self.closing = True


class Protocol:
    """aiohttp's flow control as BaseProtocol has it: ``_paused`` and ``_drain_helper``."""

    def __init__(self) -> None:
        self._paused = False
        self._waiter: Optional[asyncio.Future[None]] = None

    async def _drain_helper(self) -> None:
        if self._paused:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter

    def resume_writing(self) -> None:
        self._paused = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Request:
    def __init__(self) -> None:
        self.transport = Transport()
        self.protocol = Protocol()


class WebSocket:
    def __init__(self) -> None:
        self.closed = False
        self.closes: List[int] = []

    async def close(self, *, code: int, message: bytes) -> bool:
        self.closed = True
        self.closes.append(code)
        return True


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


async def next_iteration() -> None:
    """Let the event loop run the callbacks scheduled so far (one iteration)."""
    await asyncio.sleep(0)


def new_session(limits: Optional[dict] = None) -> Tuple[Session, Transport, Protocol, Connection]:
    """A Session over stand-ins, through the handshake; and the client's Connection."""
    request = Request()
    s = Session(1, WebSocket(), request, Limits.from_mapping(limits or {}),  # type: ignore[arg-type]
                Metrics(), "127.0.0.1", lambda _: None)
    client = Connection(Role.CLIENT)
    s.conn.receive(client.hello("app"))
    s.push(s.conn.welcome(1, {}))
    [welcome] = events(client, request.transport.writes)
    assert isinstance(welcome, p.Welcome)
    return s, request.transport, request.protocol, client


def frames_of(data: bytes) -> List[bytes]:
    parsed = wsframe.parse(data)
    assert all(opcode == 2 for opcode, _ in parsed)
    return [payload for _, payload in parsed]


def events(client: Connection, writes: List[bytes]) -> List[Any]:
    return [client.receive(f) for w in writes for f in frames_of(w)]


def deliver(s: Session, text: str, pending: Optional[Pending] = None) -> None:
    _, frame = s.conn.deliver(0, "alice", None, text, tag=pending)
    s.push(frame, pending)


# ------------------------------------------------------------------------------- framing
@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frames_are_unmasked_final_binary_frames_with_the_shortest_length(n: int) -> None:
    data = bytes(range(256)) * (n // 256) + bytes(n % 256)
    framed = wsframe.frame(data)
    head = 2 if n < 126 else 4 if n < 65536 else 10
    assert len(framed) == head + n and framed[0] == 0x82 and not framed[1] & 0x80
    assert wsframe.parse(framed) == [(2, data)]
    assert wsframe.frames([data, b"x", data]) == framed + wsframe.frame(b"x") + framed


def test_aiohttp_has_the_flow_control_members_the_writer_uses() -> None:
    assert wsframe.flow_control_supported(BaseProtocol(asyncio.new_event_loop()))
    assert not wsframe.flow_control_supported(object())


# ------------------------------------------------------------------------------- writing
def test_a_frame_is_written_through_at_once_and_the_rest_of_the_iteration_in_one_write() -> None:
    async def test() -> None:
        s, transport, _, client = new_session()
        assert len(transport.writes) == 1  # the WELCOME, in the call that queued it
        deliver(s, "one")
        deliver(s, "two")
        deliver(s, "three")
        assert len(transport.writes) == 1  # corked until the next iteration
        await next_iteration()
        assert len(transport.writes) == 2
        evs = events(client, transport.writes[1:])
        assert [type(e) for e in evs] == [p.Deliver, p.Deliver, p.Deliver]
        assert [e.payload for e in evs] == ["one", "two", "three"]
        await next_iteration()
        deliver(s, "four")  # the cork is gone: written through again
        assert len(transport.writes) == 3 and events(client, transport.writes[2:])[0].seq == 4
        assert s._task is None and s._room_waiter is None
    run(test)


def test_a_write_through_carries_the_cumulative_ack() -> None:
    async def test() -> None:
        s, transport, _, client = new_session()
        await next_iteration()
        _, req = client.request(p.Op.ONLINE_STATUS, ["bob"])
        s.conn.receive(req)
        s.push(s.conn.respond(1, 0, 1))
        [write] = transport.writes[1:]
        assert [type(e) for e in events(client, [write])] == [p.Response, p.Acked]
        assert client.unacked_count == 0
    run(test)


def test_the_ack_and_results_follow_the_queued_frames_numbered_after_them() -> None:
    async def test() -> None:
        s, transport, _, client = new_session()
        await next_iteration()
        for i in range(3):
            _, send = client.send(0, "bob", 0, "m%d" % i)
            s.conn.receive(send)
            s.post_result(0, i + 1)
        s.wake_writer()
        deliver(s, "first")  # written through (with the ACK): the results are numbered later
        s.post_result(3, 2)
        deliver(s, "queued")
        deliver(s, "after")
        await next_iteration()
        evs = [e for e in events(client, transport.writes[1:]) if e is not None]
        kinds = [type(e).__name__ for e in evs]
        assert kinds == ["Deliver", "Acked", "Deliver", "Deliver", "Result", "Result"]
        seqs = [e.seq for e in evs if not isinstance(e, p.Acked)]
        assert seqs == list(range(1, 6))
        assert {e.code: e.seqs for e in evs if isinstance(e, p.Result)} == {0: (1, 2, 3), 3: (2,)}
        assert len(transport.writes) == 3  # write-through, then one write for the rest
    run(test)


def test_over_the_high_water_mark_frames_wait_for_the_drain_then_go_in_order() -> None:
    async def test() -> None:
        s, transport, protocol, client = new_session()
        await next_iteration()
        protocol._paused = True
        for i in range(5):
            deliver(s, "m%d" % i)
        s.post_result(0, 1)
        await next_iteration()
        await next_iteration()
        assert len(transport.writes) == 1 and s._task is not None  # waiting for the drain
        assert not s._has_room() or len(s._out) == 5
        protocol.resume_writing()
        for _ in range(3):
            await next_iteration()
        evs = events(client, transport.writes[1:])
        assert [e.payload for e in evs if isinstance(e, p.Deliver)] == ["m%d" % i for i in range(5)]
        assert isinstance(evs[-1], p.Result) and len(transport.writes) == 2
        assert s._task is None and not s._out
    run(test)


def test_a_long_queue_is_written_in_chunks_and_stops_when_the_transport_pauses() -> None:
    async def test() -> None:
        s, transport, protocol, client = new_session()
        await next_iteration()
        big = "x" * 30000
        protocol._paused = True
        for _ in range(10):
            deliver(s, big)
        protocol.resume_writing()
        s._flush()  # as the loop would: about CHUNK bytes per write
        assert [len(frames_of(w)) for w in transport.writes[1:]] == [3, 3, 3, 1]
        assert len(events(client, transport.writes[1:])) == 10

        del transport.writes[1:]
        protocol._paused = True
        for _ in range(10):
            deliver(s, big)
        protocol._paused = False
        real_write = transport.write

        def write(data: bytes) -> None:
            real_write(data)
            protocol._paused = True  # the transport's buffer is full after the first chunk

        transport.write = write  # type: ignore[method-assign]
        s._flush()
        assert len(transport.writes) == 2 and len(s._out) == 7 and s._task is not None
        transport.write = real_write  # type: ignore[method-assign]
        protocol.resume_writing()
        for _ in range(3):
            await next_iteration()
        evs = events(client, transport.writes[1:])
        assert len([e for e in evs if isinstance(e, p.Deliver)]) == 10 and not s._out
        assert s._task is None
    run(test)


def test_a_delivery_that_timed_out_while_queued_is_not_written() -> None:
    async def test() -> None:
        s, transport, protocol, client = new_session()
        sender, _, _, _ = new_session()
        await next_iteration()
        protocol._paused = True
        pending = Pending(sender, 7, s)
        deliver(s, "late", pending)
        deliver(s, "other")
        pending.resolve(1)
        protocol.resume_writing()
        for _ in range(3):
            await next_iteration()
        assert [e.payload for e in events(client, transport.writes[1:])] == ["other"]
    run(test)


def test_a_failed_write_aborts_and_leaves_reliable_frames_unacknowledged() -> None:
    async def test() -> None:
        s, transport, _, _ = new_session()
        await next_iteration()
        transport.closing = True
        deliver(s, "lost")
        assert s.conn.unacked_count == 1 and s.conn.unacked_frames()[0].endswith(b"lost")
        assert len(transport.writes) == 1
    run(test)


# ------------------------------------------------------------------------------- closing, resume
def test_close_writes_what_is_queued_then_the_close_frame_then_closes_the_websocket() -> None:
    async def test() -> None:
        s, transport, protocol, client = new_session()
        await next_iteration()
        protocol._paused = True
        deliver(s, "queued")
        s.close(p.CloseCode.NORMAL, "bye")
        deliver(s, "after close")  # nothing more is queued
        protocol.resume_writing()
        await s.wait_closed()
        evs = events(client, transport.writes[1:])
        assert [type(e) for e in evs] == [p.Deliver, p.Close] and evs[0].payload == "queued"
        assert s.ws is not None and s.ws.closes == [p.CloseCode.NORMAL]  # type: ignore[attr-defined]
    run(test)


def test_close_without_flush_drops_what_is_queued() -> None:
    async def test() -> None:
        s, transport, protocol, _ = new_session()
        await next_iteration()
        protocol._paused = True
        deliver(s, "queued")
        s.close(p.CloseCode.SLOW_CONSUMER, "slow", flush=False)
        await s.wait_closed()
        assert len(transport.writes) == 1 and transport.aborted
    run(test)


def test_a_resume_writes_the_welcome_first_then_the_replay_then_the_ack_and_results() -> None:
    async def test() -> None:
        s, transport, _, client = new_session()
        await next_iteration()
        deliver(s, "received")  # the client has it, its ACK was lost with the socket
        events(client, transport.writes[1:])
        deliver(s, "lost")  # written, never received
        await next_iteration()
        s.detach()
        deliver(s, "while away")  # numbered, queued, unacknowledged
        _, send = client.send(0, "bob", 0, "x")
        s.conn.receive(send)
        s.post_result(0, 1)
        await next_iteration()
        request = Request()
        client.reopen()
        s.adopt(WebSocket(), request, "127.0.0.1",  # type: ignore[arg-type]
                lambda conn: conn.welcome(1, {"resumed": True}), client.in_seq)
        evs = events(client, request.transport.writes)
        assert [type(e).__name__ for e in evs if e is not None] == [
            "Welcome", "Deliver", "Deliver", "Acked", "Result"]
        assert [e.payload for e in evs if isinstance(e, p.Deliver)] == ["lost", "while away"]
        assert len(request.transport.writes) == 1
        s.close(p.CloseCode.NORMAL, "done")
        await s.wait_closed()
    run(test)


def test_an_idle_session_holds_no_task_future_or_timer() -> None:
    async def test() -> None:
        s, _, _, _ = new_session()
        await next_iteration()
        assert (s._task, s._room_waiter, s._timeouts, s._timeout_timer) == (None, None, None, None)
        assert s.conn.unacked_count == 0 and not hasattr(s, "__dict__")
    run(test)


# ------------------------------------------------------------------------------- timeouts
def test_tracked_deliveries_time_out_in_order_with_one_timer() -> None:
    async def test() -> None:
        s, _, _, client = new_session()
        sender, sender_transport, _, sender_client = new_session()
        await next_iteration()
        pendings = [Pending(sender, i + 1, s) for i in range(4)]
        for i, pending in enumerate(pendings):
            deliver(s, "m%d" % i, pending)
            s.track(pending, 0.05)
        assert s._timeout_timer is not None
        # the client acknowledges the first two: they succeed, the others time out
        s.conn.receive(p.encode(p.Ack(s.conn.out_seq - 2)))
        for tag in (pendings[0], pendings[1]):
            tag.resolve(0)
        while not all(x.done for x in pendings):
            await asyncio.sleep(0.01)
        await next_iteration()
        results = [e for e in events(sender_client, sender_transport.writes[1:])
                   if isinstance(e, p.Result)]
        assert {code: seqs for r in results for code, seqs in [(r.code, r.seqs)]} == {
            0: (1, 2), 1: (3, 4)}
        assert s._timeouts is None and s._timeout_timer is None
    run(test)
