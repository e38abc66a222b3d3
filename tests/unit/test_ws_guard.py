"""The frame-size guard in front of older aiohttp WebSocket readers (rts_sync.server.ws_guard),
fed client frame streams cut anywhere: it passes every byte of a stream within the limit through
unchanged, and at the first frame or fragmented message over the limit it passes the frames
before it, fails the reader with MESSAGE_TOO_BIG and drops the rest. No sockets, no aiohttp
protocol: a recording reader stands in for aiohttp's."""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

import pytest
from aiohttp import WebSocketError, WSCloseCode
from hypothesis import given, settings
from hypothesis import strategies as st

from rts_sync.server.ws_guard import FrameSizeGuard, reader_checks_header

LIMIT = 1000


def frame(payload_len: int, opcode: int = 0x2, fin: bool = True, mask: bool = True,
          length: Optional[int] = None) -> bytes:
    n = payload_len if length is None else length
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    return bytes(head) + (os.urandom(4) if mask else b"") + b"\xaa" * payload_len


class Queue:
    def __init__(self) -> None:
        self.exc: Optional[BaseException] = None

    def set_exception(self, exc: BaseException) -> None:
        self.exc = exc


class Reader:
    """Stands in for aiohttp's WebSocketReader: records what it is fed (and holds the queue,
    which aiohttp's WebSocketResponse holds)."""

    def __init__(self) -> None:
        self.queue = Queue()
        self.fed = bytearray()
        self.eof = False

    def feed_data(self, data: Any) -> Tuple[bool, bytes]:
        self.fed += data
        return False, b""

    def feed_eof(self) -> None:
        self.eof = True


def feed(stream: bytes, cuts: List[int]) -> Tuple[Reader, List[Tuple[bool, bytes]]]:
    reader = Reader()
    guard = FrameSizeGuard(reader, reader.queue, LIMIT)
    results = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        results.append(guard.feed_data(stream[last:cut]))
        last = cut
    guard.feed_eof()
    assert reader.eof
    return reader, results


@st.composite
def streams(draw: Any, over: bool) -> Tuple[bytes, int]:
    """Frames within the limit (fragmented messages, control frames between fragments, masked
    or not); with ``over``, then one frame or message over it, then more. Returns the stream and
    where the offending frame's header starts (the stream's length when there is none)."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 5))):
        parts = draw(st.lists(st.integers(0, 300), min_size=1, max_size=3))
        if sum(parts) > LIMIT:
            parts = [LIMIT // len(parts)] * len(parts)
        for i, n in enumerate(parts):
            out += frame(n, 0x2 if i == 0 else 0x0, fin=i == len(parts) - 1,
                         mask=draw(st.booleans()))
            if i < len(parts) - 1 and draw(st.booleans()):
                out += frame(draw(st.integers(0, 125)), 0x9)
    if not over:
        return bytes(out), len(out)
    kind = draw(st.sampled_from(["one", "fragments", "claim"]))
    if kind == "one":
        start = len(out)
        out += frame(LIMIT + 1)
    elif kind == "fragments":
        out += frame(600, 0x2, fin=False)
        start = len(out)
        out += frame(401, 0x0, fin=True)
    else:
        start = len(out)
        out += frame(10, length=draw(st.sampled_from([LIMIT + 1, 1 << 16, 1 << 40, (1 << 64) - 1])))
    out += frame(5) * 3
    return bytes(out), start


@settings(max_examples=300)
@given(streams(over=False), st.lists(st.integers(0, 3000), max_size=10))
def test_a_stream_within_the_limit_passes_through_unchanged(stream: Tuple[bytes, int],
                                                            cuts: List[int]) -> None:
    data, _ = stream
    reader, results = feed(data, cuts)
    assert bytes(reader.fed) == data and reader.queue.exc is None
    assert all(r == (False, b"") for r in results)


@settings(max_examples=300)
@given(streams(over=True), st.lists(st.integers(0, 3000), max_size=10))
def test_the_first_oversized_frame_fails_the_reader_and_nothing_after_it_is_read(
        stream: Tuple[bytes, int], cuts: List[int]) -> None:
    data, start = stream
    reader, results = feed(data, cuts)
    exc = reader.queue.exc
    assert isinstance(exc, WebSocketError) and exc.code == WSCloseCode.MESSAGE_TOO_BIG
    # what the reader got is the stream up to the offending frame's header at most: never a
    # byte of its body (a header cut by a read may have gone through in part)
    assert bytes(reader.fed) == data[:len(reader.fed)] and len(reader.fed) < start + 14
    assert results[-1] == (True, b"")  # and everything after the trip is dropped


@pytest.mark.parametrize("length", [LIMIT + 1, 1 << 16, 1 << 40])
def test_an_oversized_header_that_ends_a_read_is_refused_before_it_is_passed_on(length: int) -> None:
    ok = frame(10)
    big = frame(0, length=length)
    reader, results = feed(ok + big + frame(5), [len(ok), len(ok) + len(big)])
    assert bytes(reader.fed) == ok and results[1] == (True, b"")
    assert isinstance(reader.queue.exc, WebSocketError)


def test_exactly_the_limit_is_allowed() -> None:
    reader, _ = feed(frame(LIMIT) + frame(LIMIT // 2, fin=False) + frame(LIMIT // 2, 0), [3])
    assert reader.queue.exc is None


@pytest.mark.parametrize("version, checks", [
    ("3.9.0", False), ("3.13.5", False), ("3.14.0", False), ("3.14.1", True), ("3.14.5", True),
    ("3.15.0a1", True), ("4.0.0", True), ("garbage", False),
])
def test_the_guard_is_needed_before_aiohttp_3_14_1(version: str, checks: bool) -> None:
    assert reader_checks_header(version) is checks
