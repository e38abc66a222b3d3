"""Fast decoding paths for the most frequent frames (ACK, SEND, DELIVER), used by
:func:`rts_sync.protocol.frames.decode`: the same results as the generic decoder, cheaper.

Sans-IO, no state: safe from any thread.
"""

from __future__ import annotations

from typing import Any, Optional, Type, TypeVar

import cbor2

from .frames import _LEAKY_TEXT_ERRORS, Ack, Deliver, Event, Send, _drop_tracebacks

# ---------------------------------------------------------------------- fast paths
# ACK frames are read byte by byte (canonical encodings only). SEND and DELIVER frames are decoded
# with ``cbor2.loads`` and checked field by field, without the generic path's stream and
# validating constructors. ``cbor2.loads`` ignores bytes after the first item, so a frame is taken
# here only when its *canonical* size (every head as short as it can be) equals its length: no
# CBOR item is shorter than its canonical encoding, so that also proves there is nothing after
# it. The one way an item can be shorter is a reference to a value shared earlier in the frame
# (CBOR tags 28/29), which decodes to that very object: a field that *is* an earlier one goes the
# generic way. So does anything else (another layout, a wrong field, an odd but valid
# encoding): the generic path decides, and the result is the same either way.

_E = TypeVar("_E", Ack, Send, Deliver)
_MAX_SEQ = (1 << 63) - 1
_REPLACEMENT = "\ufffd"


def _head(n: int) -> int:
    """Bytes in the canonical CBOR head of an unsigned int ``n`` or of a string of ``n`` bytes."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def _text_size(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))


def _build(cls: Type[_E], **fields: Any) -> _E:
    """An event from fields already checked as its constructor would (frozen dataclasses)."""
    ev = object.__new__(cls)
    ev.__dict__.update(fields)
    return ev


def _loads(data: bytes) -> Any:
    """``cbor2.loads``, or None if it fails or (old cbor2) the text might not be UTF-8."""
    try:
        if _LEAKY_TEXT_ERRORS:
            return cbor2.loads(data, str_errors="replace")
        return cbor2.loads(data)
    except Exception as exc:
        _drop_tracebacks(exc)
        return None


def fast_ack_seq(data: bytes) -> Optional[int]:
    """The seq of ``data`` if it is a canonically encoded ACK frame, else None (decode it)."""
    n = len(data)
    if n < 3 or n > 11 or data[0] != 0x82 or data[1] != 0x08:
        return None
    head = data[2]
    if n == 3:
        return head if head < 24 else None
    if n == 4:
        return data[3] if head == 0x18 and data[3] >= 24 else None
    seq = int.from_bytes(data[3:], "big")
    if n == 5:
        return seq if head == 0x19 and seq > 0xFF else None
    if n == 7:
        return seq if head == 0x1A and seq > 0xFFFF else None
    if n == 11:
        return seq if head == 0x1B and 0xFFFFFFFF < seq <= _MAX_SEQ else None
    return None


def _fast_send_or_deliver(data: bytes) -> Optional[Event]:
    f = _loads(data)
    if type(f) is not list or len(f) != 6:
        return None
    ftype, seq, kind, target, extra, payload = f
    tp = type(payload)
    if tp is str:
        if _LEAKY_TEXT_ERRORS and _REPLACEMENT in payload:
            return None
        psize = _text_size(payload)
    elif tp is bytes:
        psize = len(payload)
    else:
        return None
    if (type(seq) is not int or not 0 <= seq <= _MAX_SEQ or type(kind) is not int
            or type(target) is not str or (_LEAKY_TEXT_ERRORS and _REPLACEMENT in target)):
        return None
    if payload is target or extra is target or payload is extra:
        return None  # maybe a shared value (see above)
    tsize = _text_size(target)
    size = 4 + _head(seq) + _head(tsize) + tsize + _head(psize) + psize
    if ftype == 5:  # [5, seq, kind, target, config, payload]
        if (seq < 1 or not 0 <= kind <= 2 or type(extra) is not int or not 0 <= extra <= 2
                or len(data) != size):
            return None
        return _build(Send, seq=seq, kind=kind, target=target, config=extra, payload=payload)
    # [7, seq, kind, sender, room, payload]: a room in place of the 1-byte config
    if not 0 <= kind <= 1:
        return None
    if extra is not None:
        if type(extra) is not str or (_LEAKY_TEXT_ERRORS and _REPLACEMENT in extra):
            return None
        rsize = _text_size(extra)
        size += _head(rsize) + rsize - 1
    if len(data) != size:
        return None
    return _build(Deliver, seq=seq, kind=kind, sender=target, room=extra, payload=payload)


