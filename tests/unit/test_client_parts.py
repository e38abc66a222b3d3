"""Unit tests of the SDK's sans-IO and pure parts: WebSocket parsing, heartbeat policy, config,
the dispatcher's lanes and backpressure accounting, and the inbox. No sockets, no sleeps."""

from __future__ import annotations

import threading

import pytest
from websocket import ABNF

from rts_sync import ClientClosed, InvalidArgumentError, InvalidStateError, Message, RemoteProtocolError
from rts_sync._client.config import PARAMETER_DOCS, RuntimeConfig
from rts_sync._client.dispatcher import Dispatcher
from rts_sync._client.operations import Inbox, Operation
from rts_sync._client.supervisor import HeartbeatPolicy
from rts_sync._client.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_TEXT, WsParser, encode_frame
from rts_sync.protocol import CloseCode


def server_frame(payload: bytes, opcode: int = OP_BINARY, fin: bool = True) -> bytes:
    """An unmasked frame as a server sends it."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


# ---------------------------------------------------------------- WebSocket parsing
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_parser_sizes_and_every_split(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    data = server_frame(payload) + server_frame(b"tail")
    for cut in sorted({0, 1, 2, 3, 9, 10, len(data) // 2, len(data) - 1, len(data)}):
        p = WsParser(100000)
        out = p.feed(data[:cut]) + p.feed(data[cut:])
        assert out == [(OP_BINARY, payload), (OP_BINARY, b"tail")]


def test_parser_byte_by_byte_and_fragments() -> None:
    data = (server_frame(b"ab", OP_BINARY, fin=False) + server_frame(b"ping", OP_PING)
            + server_frame(b"cd", 0, fin=True) + server_frame(b"x", OP_TEXT))
    p = WsParser(100)
    out = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert out == [(OP_PING, b"ping"), (OP_BINARY, b"abcd"), (OP_TEXT, b"x")]


def test_parser_checks_size_from_the_header() -> None:
    p = WsParser(1000)
    with pytest.raises(RemoteProtocolError) as ei:
        p.feed(bytes([0x82, 127]) + (10**9).to_bytes(8, "big"))  # no body sent at all
    assert ei.value.code == CloseCode.FRAME_TOO_LARGE
    p = WsParser(10)
    with pytest.raises(RemoteProtocolError):  # fragments add up past the limit
        p.feed(server_frame(b"123456", fin=False) + server_frame(b"123456", 0))


@pytest.mark.parametrize("bad", [
    bytes([0xC2, 0]),                      # reserved bit
    bytes([0x82, 0x80, 0, 0, 0, 0]),       # masked server frame
    bytes([0x00, 1, 0]),                   # continuation without start
    bytes([0x83, 0]),                      # unknown data opcode
    bytes([0x8B, 0]),                      # unknown control opcode
    bytes([0x09, 0]),                      # fragmented control frame
    bytes([0x89, 126, 0, 200]) + bytes(200),  # control frame over 125
    server_frame(b"a", OP_BINARY, fin=False) + server_frame(b"b", OP_BINARY),
])
def test_parser_rejects_bad_frames(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        WsParser(1000).feed(bad)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 64, 125, 126, 127, 65535, 65536, 70001])
def test_encode_frame_lengths_and_mask_match_rfc6455(size: int) -> None:
    """Every length encoding (7, 16, 64 bits) and the mask, unmasked by websocket-client."""
    import os
    import struct

    from websocket import ABNF

    payload = os.urandom(size)
    frame = encode_frame(payload, OP_BINARY)
    assert frame[0] == 0x82 and frame[1] & 0x80  # FIN + binary, masked
    n, off = frame[1] & 0x7F, 2
    if n == 126:
        n, off = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, off = struct.unpack("!Q", frame[2:10])[0], 10
    assert n == size and len(frame) == off + 4 + size
    key = frame[off:off + 4]
    assert ABNF.mask(key, frame[off + 4:]) == payload
    assert encode_frame(payload, OP_BINARY)[off:off + 4] != key  # a fresh key per frame


def test_encode_frame_is_masked_and_websocket_client_reads_it() -> None:
    data = encode_frame(b"hello", OP_BINARY)
    assert data[0] == 0x82 and data[1] & 0x80  # FIN + binary, masked
    mask, body = data[2:6], data[6:]
    assert ABNF.mask(mask, body) == b"hello"
    assert encode_frame(b"", OP_CLOSE)[0] == 0x88


# ---------------------------------------------------------------- heartbeat policy
def test_heartbeat_policy_timeline() -> None:
    hb = HeartbeatPolicy(interval=5.0, timeout=8.0)
    assert hb.check(now=100.0, last_rx=100.0, last_ping=100.0) == (False, False, 5.0)
    assert hb.check(now=105.0, last_rx=100.0, last_ping=100.0) == (True, False, 3.0)
    assert hb.check(now=107.0, last_rx=106.5, last_ping=105.0) == (False, False, 3.0)
    ping, dead, _ = hb.check(now=108.0, last_rx=100.0, last_ping=105.0)
    assert dead and not ping


# ---------------------------------------------------------------- runtime parameters
def test_config_validation() -> None:
    cfg = RuntimeConfig()
    assert set(PARAMETER_DOCS) == {f for f in cfg.__dataclass_fields__}
    c2 = cfg.with_parameters({"heartbeat_interval": 2, "heartbeat_timeout": 3.5, "outbox_size": 10.0})
    assert (c2.heartbeat_interval, c2.heartbeat_timeout, c2.outbox_size) == (2.0, 3.5, 10)
    for bad in ({"heartbeat_timeout": 20}, {"heartbeat_timeout": 4}, {"connect_timeout": 0},
                {"connect_timeout": float("nan")}, {"outbox_size": 1.5}, {"outbox_size": 0},
                {"request_timeout": "5"}, {"request_timeout": True}, {"dispatcher_threads": 65}):
        with pytest.raises(InvalidArgumentError):
            cfg.with_parameters(bad)
    with pytest.raises(TypeError):
        cfg.with_parameters(["x"])  # type: ignore[arg-type]


def test_unknown_parameter_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    warned: set[str] = set()
    cfg = RuntimeConfig().with_parameters({"rtc.device_id": "x"}, warned)
    cfg.with_parameters({"rtc.device_id": "y"}, warned)
    assert cfg == RuntimeConfig()
    assert sum("rtc.device_id" in r.message for r in caplog.records) == 1


# ---------------------------------------------------------------- dispatcher
def test_dispatcher_keeps_lane_order_and_survives_exceptions() -> None:
    seen: dict[str, list[int]] = {"a": [], "b": []}
    done = threading.Event()

    def record(lane: str, i: int) -> None:
        if i == 3:
            raise RuntimeError("user bug")  # logged, does not stop the lane
        seen[lane].append(i)
        if lane == "b" and i == 499:
            done.set()

    d = Dispatcher("t", workers=3, capacity=10000)
    d.start()
    try:
        d.submit_many([(lane, (record, (lane, i), None)) for i in range(500) for lane in "ab"])
        assert done.wait(10)
        d.submit("a", done.clear)
    finally:
        d.stop()
    assert seen["b"] == [i for i in range(500) if i != 3]
    assert seen["a"][:10] == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert not any(t.name.startswith("rts-cb-t-") for t in threading.enumerate())


def test_dispatcher_extra_worker_retires_by_its_own_idleness() -> None:
    """A slow callback makes a second worker for the other lane; once that worker has had
    nothing to do for idle_timeout it ends, even while the first worker keeps being woken."""
    import threading

    d = Dispatcher("r", workers=2, capacity=1000, idle_timeout=0.5)
    d.start()
    gate, started, ran = threading.Event(), threading.Event(), threading.Event()
    try:
        d.submit("slow", lambda: (started.set(), gate.wait(10)))
        assert started.wait(10)
        d.submit("other", ran.set)  # every worker busy and a lane ready: a second worker
        assert ran.wait(10) and d.workers == 2
        workers = [t for t in threading.enumerate() if t.name.startswith("rts-cb-r-")]
        assert len(workers) == 2
        gate.set()
        # keep the pool busy with short tasks: they wake idle workers, which must not
        # restart the extra worker's idle count
        done = threading.Event()
        for i in range(20):
            d.submit("tick", (done.set if i == 19 else (lambda: None)))
        assert done.wait(10)
        # whichever of the two is idle for idle_timeout first ends; the other stays
        ended = threading.Event()
        for t in workers:
            threading.Thread(target=lambda t=t: (t.join(), ended.set()), daemon=True).start()
        assert ended.wait(10)
        assert d.workers == 1 and sum(t.is_alive() for t in workers) == 1
        again = threading.Event()
        d.submit("tick", again.set)  # the remaining worker still runs tasks
        assert again.wait(10)
    finally:
        gate.set()
        d.stop()


def test_dispatcher_saturation_and_drain_wakeup() -> None:
    gate = threading.Event()
    drained = threading.Event()
    d = Dispatcher("s", workers=1, capacity=4, on_drained=drained.set)
    d.start()
    try:
        d.submit_many([("x", (gate.wait, (10,), None))] + [("x", (lambda: None, (), None))] * 3)
        assert d.saturated
        gate.set()
        assert drained.wait(10)
        assert not d.saturated
    finally:
        d.stop()


def test_dispatcher_stop_fails_dropped_operations_and_in_worker() -> None:
    gate = threading.Event()
    started = threading.Event()
    d = Dispatcher("f", workers=1, capacity=100)
    d.start()
    op = Operation(d.in_worker)
    inside: list[bool] = []

    def blocker() -> None:
        inside.append(d.in_worker())
        started.set()
        gate.wait(10)

    d.submit("x", blocker)
    assert started.wait(10)
    d.submit("x", lambda: None, (), op)  # queued behind the blocked callback
    d.stop(timeout=0.01)  # the worker is still inside blocker(): the queued task is dropped
    gate.set()
    d.stop()  # idempotent; now joins the worker
    assert inside == [True] and not d.in_worker()
    with pytest.raises(ClientClosed):
        op.result(0)


def test_operation_result_in_callback_thread_raises_instead_of_hanging() -> None:
    d = Dispatcher("o", workers=1, capacity=10)
    d.start()
    op = Operation(d.in_worker)
    errors: list[BaseException] = []
    finished = threading.Event()

    def wait_inside() -> None:
        try:
            op.result()
        except InvalidStateError as exc:
            errors.append(exc)
        finished.set()

    try:
        d.submit("x", wait_inside)
        assert finished.wait(10)
    finally:
        d.stop()
    assert len(errors) == 1 and "deadlock" in str(errors[0])


# ---------------------------------------------------------------- inbox
def test_inbox_bounded_blocking_and_close() -> None:
    box = Inbox(2)
    box.put(Message("peer", "a", "1"))
    box.put(Message("peer", "a", b"2"))
    t = threading.Thread(target=box.put, args=(Message("peer", "a", "3"),))
    t.start()  # blocks: the inbox is full
    assert box.get(1).message == "1"  # type: ignore[union-attr]
    t.join(10)
    assert not t.is_alive()
    assert [box.get(1).message, box.get(1).message] == [b"2", "3"]  # type: ignore[union-attr]
    assert box.get(0.01) is None
    box.close()
    with pytest.raises(ClientClosed):
        box.get(None)


# ---------------------------------------------------------------- reconnect backoff
def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    from rts_sync._client.supervisor import Backoff

    top = Backoff(0.2, 10.0, rng=lambda: 1.0)
    assert [top.delay(n) for n in range(8)] == [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0]
    assert top.delay(10_000) == 10.0  # no overflow for huge attempt counts
    assert Backoff(0.2, 10.0, rng=lambda: 0.0).delay(5) == 0.0
    assert Backoff(0.2, 10.0, rng=lambda: 0.5).delay(3) == 0.8


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reconnect_attempts_reset_only_after_a_stable_connection() -> None:
    from rts_sync._client.config import RuntimeConfig
    from rts_sync._client.supervisor import HeartbeatPolicy, Supervisor

    clock = _Clock()
    cfg = RuntimeConfig(reconnect_backoff_base=1.0, reconnect_backoff_cap=64.0, stable_after=10.0)
    sup = Supervisor("t", io=None, urls=lambda: [],  # type: ignore[arg-type]
                     heartbeat=lambda: HeartbeatPolicy(5, 8), connect_timeout=lambda: 1.0,
                     clock=clock, config=lambda: cfg)  # never started: no thread
    delays = []
    for _ in range(4):
        sup.request_reconnect()
        delays.append(sup.attempts)
    assert delays == [1, 2, 3, 4]
    sup.reconnected()
    clock.now += 3.0  # connected only briefly: the backoff keeps growing
    sup.request_reconnect()
    assert sup.attempts == 5
    sup.reconnected()
    clock.now += 10.0  # a stable connection: start again from the first step
    sup.request_reconnect()
    assert sup.attempts == 1
    sup.request_reconnect(immediately=True)
    assert sup.next_attempt_at == clock.now


# ---------------------------------------------------------------- connection state table
def test_state_table() -> None:
    from rts_sync import ConnectionState as S
    from rts_sync._client.states import TRANSITIONS, allowed, lost_due

    assert allowed(S.DISCONNECTED, S.CONNECTING) and allowed(S.RECONNECTING, S.RECONNECTED)
    assert not allowed(S.DISCONNECTED, S.CONNECTED)  # never without CONNECTING first
    assert not allowed(S.CONNECTED, S.RECONNECTED)  # only after RECONNECTING
    assert not any(S.FAILED in pair for pair in TRANSITIONS)
    # every state but FAILED can be reached and left
    states = {s for pair in TRANSITIONS for s in pair}
    assert states == set(S) - {S.FAILED}
    # LOST: only while reconnecting, only once lost_after has passed (an injected clock)
    assert not lost_due(S.RECONNECTING, lost_at=100.0, now=109.9, lost_after=10.0)
    assert lost_due(S.RECONNECTING, lost_at=100.0, now=110.0, lost_after=10.0)
    assert not lost_due(S.LOST, lost_at=100.0, now=200.0, lost_after=10.0)
    assert not lost_due(S.CONNECTED, lost_at=100.0, now=200.0, lost_after=10.0)


def test_no_state_change_outside_the_table_in_a_real_session(caplog: pytest.LogCaptureFixture) -> None:
    """The I/O thread logs an error for a change outside the table; a real run logs none."""
    import rts_sync
    from rts_sync.testing import serve_in_thread
    from rts_sync.token import mint_login_token

    app, key = "rtsapp000000000000000001", "k"
    with serve_in_thread(apps={app: key}) as srv, \
            rts_sync.create_rts(app, server_url=srv.url) as rts:
        rts.login(mint_login_token(app, key, "a"), "a").result(10)
        rts.logout().result(10)
        rts.login(mint_login_token(app, key, "a"), "a").result(10)
    assert not [r for r in caplog.records if "state table" in r.getMessage()]
