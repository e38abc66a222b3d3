"""WebSocket framing of the server's outgoing binary messages, written straight to the transport.

aiohttp's ``WebSocketResponse.send_bytes`` writes one frame per call (one ``send`` syscall each)
and is a coroutine; the server's sessions frame a whole batch here instead and write it with one
``transport.write``. A server frame is never masked (RFC 6455 §5.1) and, with compression off
(``WebSocketResponse(compress=False)``: no permessage-deflate is negotiated), it is the payload
behind a 2, 4 or 10-byte header: FIN + opcode 2, then the length in 7, 7+16 or 7+64 bits.

Backpressure follows aiohttp's own writer: the request handler (an aiohttp ``BaseProtocol``)
is told by the transport when its write buffer passes the high-water mark (``pause_writing``,
which sets ``_paused``) and ``_drain_helper()`` waits until it is below the low-water mark again.
Both exist, with these names, in every aiohttp from 3.9 on (:func:`flow_control_supported`).

Threading: pure functions; the callers run on the server's event loop.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable, List, Tuple

__all__ = ["CHUNK", "flow_control_supported", "frame", "frames", "header"]

#: About how many bytes one ``transport.write`` takes before the writer checks for backpressure.
CHUNK = 64 * 1024

_SHORT = [bytes((0x82, n)) for n in range(126)]
_MEDIUM = struct.Struct("!BBH").pack
_LONG = struct.Struct("!BBQ").pack


def header(n: int) -> bytes:
    """The header of an unmasked, final, binary frame of ``n`` payload bytes."""
    if n < 126:
        return _SHORT[n]
    if n < 65536:
        return _MEDIUM(0x82, 126, n)
    return _LONG(0x82, 127, n)


def frame(data: bytes) -> bytes:
    """One binary frame holding ``data``."""
    n = len(data)
    return (_SHORT[n] if n < 126 else header(n)) + data


def frames(datas: Iterable[bytes]) -> bytes:
    """Consecutive binary frames, one per item, as one byte string."""
    parts: List[bytes] = []
    for data in datas:
        n = len(data)
        parts.append(_SHORT[n] if n < 126 else header(n))
        parts.append(data)
    return b"".join(parts)


def flow_control_supported(protocol: Any) -> bool:
    """True when aiohttp's protocol object has the flow-control members this module relies on."""
    return isinstance(getattr(protocol, "_paused", None), bool) and callable(
        getattr(protocol, "_drain_helper", None))


def parse(data: bytes) -> List[Tuple[int, bytes]]:
    """(opcode, payload) of each unmasked frame in ``data`` (for tests; no fragmentation)."""
    out: List[Tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        b0, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        out.append((b0 & 0x0F, data[pos:pos + n]))
        pos += n
    return out
