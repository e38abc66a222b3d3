"""Wire frames: one CBOR array per binary WebSocket message, ``[type, field, ...]``.

Every frame is an event class here, validated when it is built, the same class on both sides.
``encode(event) -> bytes`` and ``decode(data, max_frame) -> event`` are exact inverses; ``decode``
checks the size before it decodes anything and turns every malformed input into a
:class:`~rts_sync.errors.RemoteProtocolError` (never another exception). ``docs/protocol.md``
documents each frame.

Sans-IO: no sockets, threads, clocks or logging here.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from importlib.metadata import version as _dist_version
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import cbor2

from ..errors import LocalProtocolError, RemoteProtocolError
from .limits import CloseCode

__all__ = [
    "Ack",
    "Close",
    "Deliver",
    "DeliverKind",
    "Event",
    "FrameError",
    "FrameType",
    "Hello",
    "Notice",
    "NoticeKind",
    "Op",
    "Payload",
    "Ping",
    "Pong",
    "Request",
    "Response",
    "Result",
    "Send",
    "TargetKind",
    "Welcome",
    "decode",
    "encode",
    "encode_deliver_tail",
]

Payload = Union[str, bytes]

_dumps = cbor2.dumps


class FrameType(IntEnum):
    """The first element of every frame."""

    #: C->S, first frame: protocol versions the client speaks, app id, SDK version.
    HELLO = 1
    #: S->C, answer to HELLO: the chosen version and the server's limits.
    WELCOME = 2
    #: C->S: a request with an id; answered by exactly one RESPONSE.
    REQUEST = 3
    #: S->C: the outcome of a REQUEST.
    RESPONSE = 4
    #: C->S: a message to a peer, a room or the app server, with the client's sequence number.
    SEND = 5
    #: S->C: the result code of one or more SENDs (the app server's answer body for P2Server).
    RESULT = 6
    #: S->C: a message for this client (peer or room), sequenced unless unreliable.
    DELIVER = 7
    #: either way: cumulative acknowledgement of sequenced frames.
    ACK = 8
    #: either way: liveness probe; answered by PONG with the same token.
    PING = 9
    #: either way: answer to PING.
    PONG = 10
    #: S->C: a sequenced server event (kicked, room presence, ...).
    NOTICE = 11
    #: either way: the sender is closing, with a CloseCode and a reason.
    CLOSE = 12


class Op(IntEnum):
    """Request operations (REQUEST's ``op``); each takes exactly the args listed (a wrong count
    is a protocol error)."""

    #: args: [token, uid, business_id or None, login_type]; result: {"session": str}
    LOGIN = 1
    #: args: []
    LOGOUT = 2
    #: args: [peer_uid]; result: UserOnlineStatus value
    ONLINE_STATUS = 3
    #: args: [room_id]; result: {"members": [uid, ...]}
    JOIN_ROOM = 4
    #: args: [room_id]
    LEAVE_ROOM = 5
    #: args: [signature, url]
    SET_SERVER_PARAMS = 6


class TargetKind(IntEnum):
    """Where a SEND goes."""

    PEER = 0
    ROOM = 1
    SERVER = 2


class DeliverKind(IntEnum):
    """What a DELIVER carries."""

    PEER = 0
    ROOM = 1


class NoticeKind(IntEnum):
    """What a NOTICE reports; its ``args`` per kind are in docs/protocol.md."""

    #: args: [LogoutReason] - this session is ended by the server (e.g. duplicate login).
    KICKED = 1
    #: args: [room_id, uid, elapsed]
    USER_JOINED = 2
    #: args: [room_id, uid, UserOfflineReason]
    USER_LEFT = 3
    #: args: [room_id, state, extra_info] - a room state change (kicked from room, warnings).
    ROOM_STATE = 4


class FrameError(ValueError):
    """A frame event with a field of the wrong type or range (raised when one is built).

    ``decode`` turns it into RemoteProtocolError (the peer sent it); ``Connection`` turns it into
    LocalProtocolError (we were about to send it).
    """


def _fail(msg: str) -> FrameError:
    return FrameError(msg)


def _int(v: object, what: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise _fail("%s must be an integer in [%d, %d]" % (what, lo, hi))
    return v


def _str(v: object, what: str) -> str:
    if type(v) is not str:
        raise _fail("%s must be a text string" % what)
    return v


def _payload(v: object) -> Payload:
    if type(v) is not str and type(v) is not bytes:
        raise _fail("payload must be a text or byte string")
    return v  # type: ignore[return-value,unused-ignore]


@dataclass(frozen=True)
class Hello:
    versions: Tuple[int, ...]
    app_id: str
    sdk: str = ""
    #: To resume a session: (session id, highest seq received from the server); else None.
    resume: Optional[Tuple[str, int]] = None

    def __post_init__(self) -> None:
        if not self.versions or len(self.versions) > 16:
            raise _fail("HELLO needs 1..16 versions")
        for v in self.versions:
            _int(v, "version", 1, 65535)
        _str(self.app_id, "app_id")
        _str(self.sdk, "sdk")
        if self.resume is not None:
            if type(self.resume) is not tuple or len(self.resume) != 2:
                raise _fail("HELLO resume must be [session id, seq]")
            _str(self.resume[0], "resume session id")
            _int(self.resume[1], "resume seq", 0)


@dataclass(frozen=True)
class Welcome:
    version: int
    params: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _int(self.version, "version", 1, 65535)
        if type(self.params) is not dict:
            raise _fail("WELCOME params must be a map")


@dataclass(frozen=True)
class Request:
    #: The request's id, which is also its client sequence number (shared with SEND).
    rid: int
    op: int
    args: Tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _int(self.rid, "request id", 1)
        _int(self.op, "op", 1, 255)


@dataclass(frozen=True)
class Response:
    #: Server sequence number (shared with RESULT, DELIVER and NOTICE).
    seq: int
    rid: int
    code: int
    result: Any = None

    def __post_init__(self) -> None:
        _int(self.seq, "seq", 1)
        _int(self.rid, "request id", 1)
        _int(self.code, "code", -(1 << 31), (1 << 31) - 1)


@dataclass(frozen=True)
class Send:
    seq: int
    kind: int
    target: str
    config: int
    payload: Payload

    def __post_init__(self) -> None:
        _int(self.seq, "seq", 1)
        _int(self.kind, "target kind", 0, 2)
        _str(self.target, "target")
        _int(self.config, "config", 0, 2)
        _payload(self.payload)


@dataclass(frozen=True)
class Result:
    #: Server sequence number of this frame (``seqs`` are the client SENDs it answers).
    seq: int
    code: int
    seqs: Tuple[int, ...]
    body: Optional[bytes] = None

    def __post_init__(self) -> None:
        _int(self.seq, "seq", 1)
        _int(self.code, "code", -(1 << 31), (1 << 31) - 1)
        if not self.seqs:
            raise _fail("RESULT needs at least one seq")
        for s in self.seqs:
            _int(s, "seq", 1)
        if self.body is not None and type(self.body) is not bytes:
            raise _fail("RESULT body must be a byte string")


@dataclass(frozen=True)
class Deliver:
    seq: int
    kind: int
    sender: str
    room: Optional[str]
    payload: Payload

    def __post_init__(self) -> None:
        _int(self.seq, "seq", 0)
        _int(self.kind, "deliver kind", 0, 1)
        _str(self.sender, "sender")
        if self.room is not None:
            _str(self.room, "room")
        _payload(self.payload)


@dataclass(frozen=True)
class Notice:
    seq: int
    kind: int
    args: Tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        _int(self.seq, "seq", 0)
        _int(self.kind, "notice kind", 1, 255)


@dataclass(frozen=True)
class Ack:
    seq: int

    def __post_init__(self) -> None:
        _int(self.seq, "ack seq", 0)


@dataclass(frozen=True)
class Ping:
    token: int = 0

    def __post_init__(self) -> None:
        _int(self.token, "ping token", 0)


@dataclass(frozen=True)
class Pong:
    token: int = 0

    def __post_init__(self) -> None:
        _int(self.token, "pong token", 0)


@dataclass(frozen=True)
class Close:
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        _int(self.code, "close code", 1000, 4999)
        _str(self.reason, "reason")


Event = Union[Hello, Welcome, Request, Response, Send, Result, Deliver, Notice, Ack, Ping, Pong, Close]


def _i(x: Any) -> Any:
    """An IntEnum member as its plain int (the wire has no enums); anything else as it is."""
    return x if type(x) is int else int(x) if isinstance(x, IntEnum) else x


#: The fields of each frame type as a list (top-level IntEnum members made plain ints by ``_i``).
_ENCODERS: Dict[type, Callable[[Any], List[Any]]] = {
    Deliver: lambda ev: [7, _i(ev.seq), _i(ev.kind), ev.sender, ev.room, ev.payload],
    Send: lambda ev: [5, _i(ev.seq), _i(ev.kind), ev.target, _i(ev.config), ev.payload],
    Ack: lambda ev: [8, _i(ev.seq)],
    Result: lambda ev: [6, _i(ev.seq), _i(ev.code), list(ev.seqs), ev.body],
    Request: lambda ev: [3, _i(ev.rid), _i(ev.op), list(ev.args)],
    Response: lambda ev: [4, _i(ev.seq), _i(ev.rid), _i(ev.code), _i(ev.result)],
    Notice: lambda ev: [11, _i(ev.seq), _i(ev.kind), list(ev.args)],
    Ping: lambda ev: [9, _i(ev.token)],
    Pong: lambda ev: [10, _i(ev.token)],
    Hello: lambda ev: [1, list(ev.versions), ev.app_id, ev.sdk,
                       None if ev.resume is None else list(ev.resume)],
    Welcome: lambda ev: [2, _i(ev.version), ev.params],
    Close: lambda ev: [12, _i(ev.code), ev.reason],
}


def encode(ev: Event) -> bytes:
    """The CBOR bytes of one frame (one binary WebSocket message).

    Raises LocalProtocolError when a field cannot be encoded.
    """
    fields = _ENCODERS.get(type(ev))
    if fields is None:
        raise LocalProtocolError("not a frame event: %r" % (ev,))
    try:
        return _dumps(fields(ev))
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise LocalProtocolError("cannot encode %s: %s" % (type(ev).__name__, exc),
                                 CloseCode.PROTOCOL_ERROR) from exc


#: The CBOR of a DELIVER's kind and of a null room (``encode_deliver_tail``).
_KINDS = (b"\x00", b"\x01")
_NULL = b"\xf6"


def encode_deliver_tail(kind: int, sender: str, room: Optional[str], payload: Payload) -> bytes:
    """The CBOR of a DELIVER's fields after its seq, encoded once for a fan-out to many members
    (and for each peer message: it costs a fraction of building and encoding a ``Deliver``).

    ``Connection.deliver_tail`` prefixes it with each receiver's own array header, type and seq;
    the result is byte-identical to ``encode(Deliver(seq, kind, sender, room, payload))``.
    Raises FrameError for invalid fields.
    """
    if type(kind) is not int and isinstance(kind, IntEnum):
        kind = int(kind)  # DeliverKind.PEER, say
    if (type(kind) is not int or not 0 <= kind <= 1 or type(sender) is not str
            or (room is not None and type(room) is not str)
            or (type(payload) is not str and type(payload) is not bytes)):
        Deliver(0, kind, sender, room, payload)  # raises FrameError
    return (_KINDS[kind] + _dumps(sender) + (_NULL if room is None else _dumps(room))
            + _dumps(payload))


#: CBOR head of a 6-element array followed by the DELIVER type (``encode_deliver_tail``).
DELIVER_HEAD = b"\x86" + cbor2.dumps(int(FrameType.DELIVER))


def _tuple(v: object, what: str) -> Tuple[Any, ...]:
    if type(v) is not list:
        raise _fail("%s must be an array" % what)
    return tuple(v)


def _opt_bytes(v: object) -> Optional[bytes]:
    if v is not None and type(v) is not bytes:
        raise _fail("RESULT body must be a byte string or null")
    return v


_DECODERS: Dict[int, Tuple[int, Callable[[List[Any]], Event]]] = {
    FrameType.HELLO: (5, lambda f: Hello(_tuple(f[1], "versions"), f[2], f[3],
                                         None if f[4] is None else _tuple(f[4], "resume"))),
    FrameType.WELCOME: (3, lambda f: Welcome(f[1], f[2])),
    FrameType.REQUEST: (4, lambda f: Request(f[1], f[2], _tuple(f[3], "args"))),
    FrameType.RESPONSE: (5, lambda f: Response(f[1], f[2], f[3], f[4])),
    FrameType.SEND: (6, lambda f: Send(f[1], f[2], f[3], f[4], f[5])),
    FrameType.RESULT: (5, lambda f: Result(f[1], f[2], _tuple(f[3], "seqs"), _opt_bytes(f[4]))),
    FrameType.DELIVER: (6, lambda f: Deliver(f[1], f[2], f[3], f[4], f[5])),
    FrameType.ACK: (2, lambda f: Ack(f[1])),
    FrameType.PING: (2, lambda f: Ping(f[1])),
    FrameType.PONG: (2, lambda f: Pong(f[1])),
    FrameType.NOTICE: (4, lambda f: Notice(f[1], f[2], _tuple(f[3], "args"))),
    FrameType.CLOSE: (3, lambda f: Close(f[1], f[2])),
}


def decode(data: bytes, max_frame: int) -> Event:
    """Decode one frame, checking its size first. Raises RemoteProtocolError, nothing else."""
    if len(data) > max_frame:
        raise RemoteProtocolError(
            "frame of %d bytes exceeds the limit of %d" % (len(data), max_frame),
            CloseCode.FRAME_TOO_LARGE,
        )
    if len(data) > 2 and data[0] == 0x86 and (data[1] == 0x05 or data[1] == 0x07):
        ev = _fast_send_or_deliver(data)
        if ev is not None:
            return ev
    else:
        seq = fast_ack_seq(data)
        if seq is not None:
            return _build(Ack, seq=seq)
    return _decode_generic(data)


def _decode_generic(data: bytes) -> Event:
    """``decode`` for any frame, without the size check and the fast paths."""
    fp = io.BytesIO(data)
    try:
        if _LEAKY_TEXT_ERRORS:
            f = cbor2.load(fp, str_errors="replace")
            if _has_replacement(f, 0):  # maybe text that is not UTF-8: the strict decoder decides
                fp = io.BytesIO(data)
                f = _strict_decoder(fp).decode()
        else:
            f = cbor2.load(fp)
    except Exception as exc:  # cbor2 raises several types (CBORDecodeError, ValueError, ...)
        _drop_tracebacks(exc)
        raise _remote("malformed CBOR: %s" % exc) from exc
    if fp.tell() != len(data):
        raise _remote("%d bytes after the frame" % (len(data) - fp.tell()))
    if type(f) is not list or not f or type(f[0]) is not int:
        raise _remote("a frame must be a non-empty CBOR array starting with its type")
    entry = _DECODERS.get(f[0])
    if entry is None:
        raise _remote("unknown frame type %s" % (f[0] if -1000 < f[0] < 1000 else "(out of range)"))
    if len(f) != entry[0]:
        raise _remote("frame type %d needs %d elements, got %d" % (f[0], entry[0], len(f)))
    try:
        return entry[1](f)
    except Exception as exc:  # FrameError, or an odd value inside a field
        raise _remote("invalid frame: %s" % exc) from exc


def _remote(msg: str) -> RemoteProtocolError:
    return RemoteProtocolError(msg, CloseCode.PROTOCOL_ERROR)


#: cbor2 before 6 (5.9 is the newest for Python 3.9) leaks, in its C decoder, every exception it
#: raises for text that is not UTF-8. With it, frames are decoded with bad text replaced by
#: U+FFFD, and one that then holds a U+FFFD is decoded again, strictly, by cbor2's pure-Python
#: decoder, which leaks nothing: the result is the same, the memory stays bounded.
_LEAKY_TEXT_ERRORS = int(_dist_version("cbor2").split(".")[0]) < 6
_strict_decoder: Any = (importlib.import_module("cbor2._decoder").CBORDecoder
                        if _LEAKY_TEXT_ERRORS else None)


def _has_replacement(v: Any, depth: int) -> bool:
    """True when a decoded value holds U+FFFD in some text (depth-bounded like the decoder)."""
    t = type(v)
    if t is str:
        return "\ufffd" in v
    if depth > 500:
        return True  # let the strict decoder refuse it
    if t is list or t is tuple or t is set or t is frozenset:
        return any(_has_replacement(x, depth + 1) for x in v)
    if isinstance(v, Mapping):
        return any(_has_replacement(k, depth + 1) or _has_replacement(x, depth + 1)
                   for k, x in v.items())
    if isinstance(v, cbor2.CBORTag):
        return _has_replacement(v.value, depth + 1)
    return False


def _drop_tracebacks(exc: Optional[BaseException]) -> None:
    """Forget where cbor2's exception (and those it chains) passed: cbor2 5.x, the newest for
    Python 3.9, leaks a reference to some of its exceptions (e.g. for text that is not UTF-8),
    and a traceback would keep the caller's frames, and what they hold, alive with it."""
    for _ in range(8):
        if exc is None:
            return
        exc.__traceback__ = None
        exc = exc.__context__


# The fast paths (fastpath.py) build the frame classes above, so they are imported last.
from .fastpath import _build, _fast_send_or_deliver, fast_ack_seq  # noqa: E402
