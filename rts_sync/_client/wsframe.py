"""WebSocket framing for the data phase of the SDK's connection (sans-IO).

websocket-client does the opening handshake on our own socket. The frames of the data phase are
encoded (masked) and read here instead: writing without building websocket-client's ``ABNF``
objects (measured at 6.5 % of the I/O thread's time in a send burst), reading from bytes the I/O
thread received without blocking, so that one thread can read and write the same socket through
``selectors`` and the frame size limit is checked from the header, before the body is buffered.
"""

from __future__ import annotations

import os
import struct
from typing import List, Optional, Tuple

from ..errors import RemoteProtocolError
from ..protocol import CloseCode

__all__ = ["OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG", "OP_TEXT", "WsParser", "encode_frame"]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA


class _MaskKeys:
    """4-byte masking keys from the OS's strong random source (RFC 6455 §5.3), drawn 4 KiB at
    a time instead of one ``os.urandom`` call per frame.

    Threading: used by the I/O thread only.
    """

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def __call__(self, n: int) -> bytes:
        if self._pos + n > len(self._pool):
            self._pool, self._pos = os.urandom(4096), 0
        key = self._pool[self._pos:self._pos + n]
        self._pos += n
        return key


_mask_keys = _MaskKeys()


_HEAD_SHORT = struct.Struct("!BB").pack
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


def encode_frame(payload: bytes, opcode: int = OP_BINARY) -> bytes:
    """One final, masked client frame (RFC 6455 §5.2, §5.3) carrying ``payload``."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        head = _HEAD_SHORT(first, 0x80 | n)
    elif n < 0x10000:
        head = _HEAD_16(first, 0x80 | 126, n)
    else:
        head = _HEAD_64(first, 0x80 | 127, n)
    key = _mask_keys(4)
    if not n:
        return head + key
    # XOR with the key repeated over the payload, as one big-integer operation
    stream = key * ((n >> 2) + 1)
    masked = (int.from_bytes(payload, "little")
              ^ int.from_bytes(stream[:n], "little")).to_bytes(n, "little")
    return head + key + masked


def _fail(msg: str, code: int = CloseCode.PROTOCOL_ERROR) -> RemoteProtocolError:
    return RemoteProtocolError("websocket: " + msg, code)


class WsParser:
    """Turns received bytes into whole (opcode, payload) messages; control frames included.

    Threading: not thread-safe; owned by the I/O thread.
    """

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._pos = 0
        self._frag_op: Optional[int] = None
        self._frag: List[bytes] = []
        self._frag_len = 0

    def feed(self, data: bytes | memoryview) -> List[Tuple[int, bytes]]:
        """Add received bytes; return every message now complete, in order."""
        buf = self._buf
        if self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        buf += data
        out: List[Tuple[int, bytes]] = []
        pos = self._pos
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise _fail("reserved bits set")
            if b1 & 0x80:
                raise _fail("a server frame must not be masked")
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if opcode >= 0x8:
                if length > 125 or not b0 & 0x80:
                    raise _fail("invalid control frame")
            elif length + self._frag_len > self.max_message:
                raise _fail("message of %d bytes exceeds the limit of %d"
                            % (length + self._frag_len, self.max_message),
                            CloseCode.FRAME_TOO_LARGE)
            if end - pos < head + length:
                break
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            msg = self._assemble(b0 & 0x80 != 0, opcode, payload)
            if msg is not None:
                out.append(msg)
        # Compact once per feed, not once per frame.
        if pos:
            del buf[:pos]
        self._pos = 0
        return out

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Optional[Tuple[int, bytes]]:
        if opcode >= 0x8:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise _fail("unknown control opcode %d" % opcode)
            return opcode, payload
        if opcode == OP_CONT:
            if self._frag_op is None:
                raise _fail("continuation without a start frame")
            self._frag.append(payload)
            self._frag_len += len(payload)
            if not fin:
                return None
            whole = (self._frag_op, b"".join(self._frag))
            self._frag_op, self._frag, self._frag_len = None, [], 0
            return whole
        if opcode not in (OP_TEXT, OP_BINARY):
            raise _fail("unknown data opcode %d" % opcode)
        if self._frag_op is not None:
            raise _fail("new message inside a fragmented one")
        if fin:
            return opcode, payload
        self._frag_op, self._frag, self._frag_len = opcode, [payload], len(payload)
        return None
