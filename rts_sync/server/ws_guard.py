"""The frame size limit checked from each WebSocket frame's header, on every aiohttp version.

aiohttp 3.14.1 refuses a data frame longer than ``max_msg_size`` from its header, before reading
any of its body. Older versions (3.13 is the newest for Python 3.9) buffer the whole body first
and compare its size afterwards, so a client that announces a huge frame and keeps sending could
grow the server's memory without bound. There, :func:`guarded_reader` puts a
:class:`FrameSizeGuard` in front of aiohttp's reader: it follows the frame headers in the bytes
received and, at the first frame or fragmented message over the limit, fails the reader with
MESSAGE_TOO_BIG (which the handler answers with CLOSE 4413) and drops everything after it.

aiohttp added the check in 3.14.1 (:func:`reader_checks_header`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from typing import Any, Iterator, Optional, Tuple

import aiohttp
from aiohttp import WebSocketError, WSCloseCode

__all__ = ["FrameSizeGuard", "guarded_reader", "reader_checks_header"]

log = logging.getLogger(__name__)

#: The first aiohttp whose reader refuses an oversized frame from its header.
CHECKED_SINCE = (3, 14, 1)


@functools.lru_cache(maxsize=16)  # asked at every connection
def reader_checks_header(version: str = aiohttp.__version__) -> bool:
    """True when aiohttp's WebSocket reader refuses an oversized frame from its header alone."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return m is not None and tuple(int(x) for x in m.groups()) >= CHECKED_SINCE


class FrameSizeGuard:
    """Wraps aiohttp's WebSocket reader (see the module docstring).

    Threading: not thread-safe; runs on the server's event loop, called by aiohttp's protocol.
    """

    def __init__(self, inner: Any, queue: Any, limit: int) -> None:
        self._inner = inner
        self._queue = queue  #: the WebSocket's message queue, which the reader feeds
        self._limit = limit
        self._head = bytearray()  #: the current frame's header so far
        self._skip = 0  #: bytes of the current frame's body still to come
        self._message = 0  #: bytes of the fragmented message so far
        self._tripped = False

    def __getattr__(self, name: str) -> Any:  # anything else aiohttp asks of its reader
        return getattr(self._inner, name)

    def feed_eof(self) -> None:
        self._inner.feed_eof()

    def feed_data(self, data: Any) -> Tuple[bool, bytes]:
        if self._tripped:
            return True, b""
        found = self._scan(memoryview(data))
        if found is None:
            result: Tuple[bool, bytes] = self._inner.feed_data(data)
            return result
        too_big, start = found
        if start:  # the whole frames before the oversized one still count
            self._inner.feed_data(bytes(data[:start]))
        self._tripped = True
        self._queue.set_exception(WebSocketError(
            WSCloseCode.MESSAGE_TOO_BIG,
            "Message size %d exceeds limit %d" % (too_big, self._limit)))
        return True, b""

    def _scan(self, data: memoryview) -> Optional[Tuple[int, int]]:
        """Follow the frame headers in ``data``: None, or the announced size of the first frame
        or message over the limit and where its header starts in ``data`` (0 if before)."""
        pos, end = 0, len(data)
        start = 0
        while True:
            if self._skip:
                if pos >= end:
                    return None
                n = min(self._skip, end - pos)
                self._skip -= n
                pos += n
                continue
            head = self._head
            if not head:
                start = pos
            need = 2
            if len(head) >= 2:
                n7 = head[1] & 0x7F
                need = 2 + (2 if n7 == 126 else 8 if n7 == 127 else 0) + (4 if head[1] & 0x80 else 0)
            if len(head) < need:
                if pos >= end:
                    return None
                take = min(need - len(head), end - pos)
                head += data[pos:pos + take]
                pos += take
                continue  # a header completed by the last byte is checked before returning
            fin, opcode, n7 = head[0] & 0x80, head[0] & 0x0F, head[1] & 0x7F
            length = (n7 if n7 < 126 else int.from_bytes(head[2:4], "big") if n7 == 126
                      else int.from_bytes(head[2:10], "big"))
            head.clear()
            if opcode < 0x8:  # a data frame: count the message it belongs to
                total = length + (self._message if opcode == 0 else 0)
                if total > self._limit:
                    return total, start
                self._message = 0 if fin else total
            self._skip = length


@contextlib.contextmanager
def guarded_reader(protocol: Any, ws: Any, limit: int) -> Iterator[None]:
    """Around aiohttp's installing of the reader of WebSocket ``ws`` on ``protocol`` (the
    request's RequestHandler): afterwards, wrap the reader in a FrameSizeGuard, and feed it the
    bytes that came right behind the upgrade request, which aiohttp would have fed to the bare
    reader. Does nothing when aiohttp checks frame headers itself."""
    if reader_checks_header() or not hasattr(protocol, "_message_tail"):
        yield
        return
    tail = protocol._message_tail
    protocol._message_tail = b""
    yield
    inner = getattr(protocol, "_payload_parser", None)
    queue = getattr(ws, "_reader", None)
    if inner is None or queue is None or not hasattr(queue, "set_exception"):
        log.warning("cannot guard the WebSocket frame size with aiohttp %s", aiohttp.__version__)
        if inner is not None and tail:
            inner.feed_data(tail)
        elif tail:
            protocol._message_tail = tail
        return
    guard = FrameSizeGuard(inner, queue, limit)
    protocol._payload_parser = guard
    if tail:
        guard.feed_data(tail)
