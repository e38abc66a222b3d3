"""FaultProxy against a real echo server (asyncio, on its own thread) and the real rts server."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from typing import Iterator, Optional, Set, Tuple

import pytest
import websocket

from rts_sync.testing import FaultProxy, serve_in_thread

WAIT = 5.0


class EchoServer:
    """Echoes every byte back; ``wait_idle`` waits until it has closed all its connections."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cond = threading.Condition()
        self.open = 0
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="test-echo", daemon=True)
        self.thread.start()
        assert ready.wait(WAIT)

    def _run(self, ready: threading.Event) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in tasks:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self.cond:
            self.open += 1
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
            with self.cond:
                self.open -= 1
                self.cond.notify_all()

    def wait_idle(self) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.open == 0, WAIT), "echo connections still open"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port) as p:
        yield p


def connect(proxy: FaultProxy, timeout: float = WAIT) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(65536, n - len(buf)))
        assert chunk, "EOF after %d of %d bytes" % (len(buf), n)
        buf += chunk
    return bytes(buf)


def echo_round(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return recv_exactly(sock, len(data))


def assert_ended(sock: socket.socket) -> None:
    """The connection is closed or reset by the far end (within WAIT)."""
    sock.settimeout(WAIT)
    try:
        assert sock.recv(1) == b""
    except ConnectionError:
        pass


def assert_fails(proxy: FaultProxy) -> None:
    """A new connection through ``proxy`` fails: at connect, or is closed or reset right after."""
    try:
        sock = connect(proxy)
    except ConnectionError:
        return
    with sock:
        assert_ended(sock)


class Sender:
    """Sends ``data`` from a thread (so the test can read the echo meanwhile), then half-closes."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self.sock, self.data = sock, data
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="test-sender", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.sock.sendall(self.data)
            self.sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self.thread.join(WAIT)
        assert not self.thread.is_alive() and self.error is None, self.error


def echo_all(sock: socket.socket, data: bytes) -> bytes:
    sender = Sender(sock, data)
    got = recv_exactly(sock, len(data))
    sender.join()
    return got


def test_forwards_large_data_both_ways_and_counts(proxy: FaultProxy, echo: EchoServer) -> None:
    data = os.urandom(5 * 1024 * 1024)
    assert proxy.url() == "ws://127.0.0.1:%d/rts" % proxy.port
    with connect(proxy) as sock:
        assert echo_all(sock, data) == data
        assert sock.recv(1) == b""  # the echo server's EOF came through too
    assert (proxy.connections_total, proxy.bytes_up, proxy.bytes_down) == (1, len(data), len(data))
    echo.wait_idle()


def test_cut_ends_connections_and_new_ones_work(proxy: FaultProxy, echo: EchoServer) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        assert echo_round(a) == echo_round(b) == b"ping"
        assert proxy.active_connections == 2
        proxy.cut()
        assert proxy.active_connections == 0
        assert_ended(a)
        assert_ended(b)
    with connect(proxy) as c:
        assert echo_round(c, b"again") == b"again"
    assert proxy.connections_total == 3


def test_refuse_then_accept_again(proxy: FaultProxy) -> None:
    proxy.refuse(True)
    assert_fails(proxy)
    assert_fails(proxy)
    assert proxy.active_connections == 0
    proxy.refuse(False)
    with connect(proxy) as sock:
        assert echo_round(sock) == b"ping"
    assert proxy.connections_total == 3


def test_blackhole_stalls_then_reset_lets_new_connections_through(proxy: FaultProxy) -> None:
    proxy.blackhole(True)
    with connect(proxy, timeout=0.3) as held:
        held.sendall(b"hello?")
        with pytest.raises(socket.timeout):
            held.recv(1)
        assert proxy.active_connections == 1
        proxy.reset()
        with connect(proxy) as sock:
            assert echo_round(sock) == b"ping"
        with pytest.raises(socket.timeout):
            held.recv(1)  # still a black hole
    assert proxy.bytes_up == proxy.bytes_down == 4


def test_target_down_closes_the_connection() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with FaultProxy("127.0.0.1", port) as proxy:
        assert_fails(proxy)
        assert proxy.active_connections == 0 and proxy.connections_total == 1


def test_stall_up_buffers_bounded_then_resumes_in_order(proxy: FaultProxy) -> None:
    # Far more than the kernel and proxy buffers hold: the sender must block (backpressure).
    data = os.urandom(48 * 1024 * 1024)
    proxy.stall("up", True)
    with connect(proxy, timeout=30) as sock:  # sendall's timeout covers all 48 MB
        sender = Sender(sock, data)
        assert not sender.done.wait(0.5), "everything was taken in: no backpressure"
        assert proxy.bytes_up == 0
        proxy.stall("up", False)
        assert recv_exactly(sock, len(data)) == data
        sender.join()


def test_stall_down_holds_replies_then_resumes_in_order(proxy: FaultProxy) -> None:
    proxy.stall("down", True)
    with connect(proxy, timeout=0.3) as sock:
        parts = [os.urandom(100_000) for _ in range(5)]
        for part in parts:
            sock.sendall(part)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        assert proxy.bytes_down == 0
        proxy.stall("down", False)
        sock.settimeout(WAIT)
        assert recv_exactly(sock, 500_000) == b"".join(parts)


def test_delay_adds_latency_both_ways_in_order(proxy: FaultProxy) -> None:
    proxy.delay(0.25)
    with connect(proxy) as sock:
        start = time.monotonic()
        for i in range(10):
            sock.sendall(b"%02d" % i)
        assert recv_exactly(sock, 20) == b"".join(b"%02d" % i for i in range(10))
        assert time.monotonic() - start >= 0.5
        proxy.delay(0)
        assert echo_round(sock) == b"ping"


def test_throttle_limits_the_rate(proxy: FaultProxy) -> None:
    data = os.urandom(100_000)
    proxy.throttle(50_000)
    with connect(proxy) as sock:
        start = time.monotonic()
        assert echo_all(sock, data) == data
        assert time.monotonic() - start >= 1.5  # 2 s at 50 KB/s, a burst of 5 KB aside
    proxy.throttle(None)
    with connect(proxy) as sock:
        assert echo_all(sock, data) == data


def test_bad_arguments(proxy: FaultProxy) -> None:
    with pytest.raises(ValueError):
        proxy.stall("sideways", True)
    with pytest.raises(ValueError):
        proxy.delay(-1)
    with pytest.raises(ValueError):
        proxy.throttle(0)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> Set[Tuple[str, Optional[int]]]:
    return {(t.name, t.ident) for t in threading.enumerate()}


def test_stop_leaves_no_thread_and_no_descriptor(echo: EchoServer) -> None:
    fds, threads = _fds(), _threads()
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    assert [name for name, _ in _threads() - threads] == ["rts-fault-proxy-%d" % proxy.port]
    live = connect(proxy)
    assert echo_round(live) == b"ping"
    proxy.blackhole(True)
    held = connect(proxy)
    proxy.stall("down", True)
    live.sendall(b"pending")
    proxy.stop()
    proxy.stop()  # idempotent
    proxy.cut()  # a no-op once stopped, and it does not block
    assert_ended(live)
    live.close()
    assert_ended(held)
    held.close()
    echo.wait_idle()
    assert _threads() - threads == set()
    assert _fds() <= fds
    with pytest.raises(RuntimeError):
        proxy.start()


def test_websocket_handshake_through_proxy_to_the_rts_server() -> None:
    with serve_in_thread(apps={"rtsapp000000000000000001": "k"}) as server, \
            FaultProxy(server.host, server.port) as proxy:
        ws = websocket.create_connection(proxy.url(), timeout=WAIT)
        try:
            assert ws.connected and ws.getstatus() == 101
            proxy.cut()
            with pytest.raises((websocket.WebSocketException, OSError)):
                ws.recv()
        finally:
            ws.close()
        proxy.blackhole(True)
        with pytest.raises(websocket.WebSocketTimeoutException):
            websocket.create_connection(proxy.url(), timeout=0.3)
        proxy.blackhole(False)
        ws = websocket.create_connection(proxy.url(), timeout=WAIT)
        assert ws.getstatus() == 101
        ws.close()
