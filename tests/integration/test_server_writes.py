"""The server's write path against real sockets (raw protocol clients, no SDK): frames written
through and batched reach a receiver in sequence order, whatever their source; a receiver that
stops reading makes the server's transport pause (its socket buffers are tiny), and when it reads
again it gets every frame, in order, and its senders their results. No mocks, no sleeps."""

from __future__ import annotations

import base64
import os
import socket
import threading
from typing import Any, List, Tuple
from urllib.parse import urlsplit

import websocket
from test_server_protocol import APP_ID, APP_KEY, RawClient, logged_in

from rts_sync import protocol as p
from rts_sync.protocol import Op
from rts_sync.testing import serve_in_thread


def read_frames(ws: Any, n: int, timeout: float = 20.0) -> List[Any]:
    """The next ``n`` protocol frames but ACKs, decoded (no protocol state: seqs as they came)."""
    ws.settimeout(timeout)
    out = []
    while len(out) < n:
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY, opcode
        frame = p.decode(data, p.default_max_frame())
        if not isinstance(frame, p.Ack):
            out.append(frame)
    return out


def test_a_receiver_that_stops_reading_gets_everything_in_order_when_it_reads_again() -> None:
    limits = {"slow_consumer_grace": 60, "message_timeout": 60}
    with serve_in_thread({APP_ID: APP_KEY}, limits=limits) as srv:
        alice = logged_in(srv, "alice")
        bob = RawClient(srv, hello=False)
        bob.ws.close()
        bob.ws = websocket.create_connection(  # a receive buffer of a few KB: the server's fills
            srv.url, timeout=5, sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
        bob.raw(bob.conn.hello(APP_ID, "raw-test"))
        bob.welcome = bob.next_event()
        assert bob.login("bob").code == 0
        n, payload = 200, b"z" * 60000  # 12 MB: far more than the kernel buffers take
        seqs = [alice.send("bob", payload + i.to_bytes(2, "big")) for i in range(n)]
        got: List[Any] = []
        while len(got) < n:  # bob reads again
            ev = bob.expect(p.Deliver, timeout=20)
            got.append(ev)
            if len(got) % 50 == 0:
                bob.ack()
        bob.ack()
        assert [int.from_bytes(ev.payload[-2:], "big") for ev in got] == list(range(n))
        assert [ev.seq for ev in got] == list(range(got[0].seq, got[0].seq + n))
        done: List[int] = []
        while len(done) < n:
            r = alice.expect(p.Result, timeout=20)
            assert r.code == 0
            done.extend(r.seqs)
        assert sorted(done) == seqs
        alice.close()
        bob.close()


def test_frames_from_many_sources_reach_a_receiver_in_sequence_order() -> None:
    with serve_in_thread({APP_ID: APP_KEY}) as srv:
        bob = logged_in(srv, "bob")
        senders = [logged_in(srv, "s%d" % i) for i in range(3)]
        per_sender, requests = 300, 100
        errors: List[BaseException] = []

        def blast(c: RawClient) -> None:
            try:
                for i in range(per_sender):
                    c.send("bob", "m%d" % i, config=i % 2)  # reliable and unreliable
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=blast, args=(c,)) for c in senders]
        for t in threads:
            t.start()
        for _ in range(requests):  # bob's own requests, answered meanwhile
            _, data = bob.conn.request(Op.ONLINE_STATUS, ["s0"])
            bob.raw(data)
        for t in threads:
            t.join()
        assert not errors
        frames = read_frames(bob.ws, 3 * per_sender + requests)
        numbered: List[Tuple[str, int]] = [(type(f).__name__, f.seq) for f in frames
                                           if isinstance(f, (p.Deliver, p.Response)) and f.seq]
        seqs = [seq for _, seq in numbered]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, nothing reordered
        assert sum(1 for kind, _ in numbered if kind == "Response") == requests
        by_sender = {}
        for f in frames:
            if isinstance(f, p.Deliver):
                by_sender.setdefault(f.sender, []).append(int(f.payload[1:]))
        assert by_sender == {"s%d" % i: list(range(per_sender)) for i in range(3)}
        for c in [bob, *senders]:
            c.close()


def test_a_burst_of_sends_in_one_tcp_write_is_answered_completely() -> None:
    """Many SENDs in one TCP segment: one cumulative ACK and coalesced RESULTs come back."""
    with serve_in_thread({APP_ID: APP_KEY}) as srv:
        alice, bob = logged_in(srv, "alice"), logged_in(srv, "bob")
        frames = []
        for i in range(100):
            _, data = alice.conn.send(0, "bob", 1, "u%d" % i, reliable=False)
            frames.append(websocket.ABNF.create_frame(data, websocket.ABNF.OPCODE_BINARY).format())
        alice.ws.sock.sendall(b"".join(frames))
        got = read_frames(bob.ws, 100)
        assert [f.payload for f in got] == ["u%d" % i for i in range(100)]
        seqs: List[int] = []
        acks = 0
        alice.ws.settimeout(10)
        while len(seqs) < 100:
            opcode, data = alice.ws.recv_data()
            f = p.decode(data, p.default_max_frame())
            if isinstance(f, p.Result):
                assert f.code == 0
                seqs.extend(f.seqs)
            elif isinstance(f, p.Ack):
                acks += 1
        assert sorted(seqs) == list(range(seqs[0], seqs[0] + 100)) and acks >= 1
        alice.close()
        bob.close()


def test_compression_is_never_negotiated_so_frames_go_out_as_written() -> None:
    """The server frames its own messages uncompressed: permessage-deflate is refused."""
    with serve_in_thread({APP_ID: APP_KEY}) as srv:
        url = urlsplit(srv.url)
        assert url.hostname is not None and url.port is not None
        with socket.create_connection((url.hostname, url.port), timeout=5) as sock:
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          "Sec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                          "\r\n" % (url.path, url.hostname, url.port, key)).encode("ascii"))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                assert chunk
                head += chunk
            status, _, rest = head.partition(b"\r\n")
            assert status.startswith(b"HTTP/1.1 101")
            assert b"sec-websocket-extensions" not in rest.split(b"\r\n\r\n")[0].lower()
