"""The protocol state of one connection, for either side: frames in, events out, bytes out.

``Connection(Role.CLIENT)`` and ``Connection(Role.SERVER)`` are the same class with opposite roles.
It checks that each frame is allowed in its direction and state (HELLO/WELCOME first), keeps the
sequence numbers and cumulative acks of both directions, drops duplicates, and holds every
sequenced reliable frame it sent until the peer acknowledges it, so that a later resume can send
them again (``unacked_frames``).

Sequencing rules (docs/protocol.md, "Sequences and acks"):

* Client -> server: every REQUEST (its ``rid``) and SEND (its ``seq``) takes the next number of one
  sequence 1, 2, 3, ... Unreliable SENDs are numbered but never kept for resending, so the server
  may see gaps.
* Server -> client: RESPONSE, RESULT, NOTICE and reliable DELIVER frames take the next number of
  the server's sequence; an unreliable DELIVER carries 0 and is neither acknowledged nor replayed.
* A receiver drops any sequenced frame whose seq is not above the highest it has seen, and sends
  ``ACK(highest)`` after each batch it has taken in (``ack()``).
* Resume: a session outlives its WebSocket. ``reopen()`` starts the handshake of the next
  connection keeping both sequences and the unacknowledged frames; the HELLO (client) and WELCOME
  (server) carry the highest seq each side received, and ``resume_from(seq)`` returns the frames
  to send again.

Sans-IO: no sockets, threads, clocks or logging here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import cbor2

from ..errors import LocalProtocolError, RemoteProtocolError
from . import frames as fr
from .fastpath import fast_ack_seq
from .limits import SUPPORTED_VERSIONS, CloseCode, default_max_frame

__all__ = ["Acked", "Connection", "ConnectionPhase", "Role", "negotiate"]


class Role(Enum):
    """Which end of the connection this object is."""

    CLIENT = "client"
    SERVER = "server"


class ConnectionPhase(Enum):
    """Where a connection is in its life; transitions happen only in this module."""

    #: Waiting for the handshake (server: HELLO; client: WELCOME).
    HANDSHAKE = 1
    #: Handshake done; all other frames allowed.
    OPEN = 2
    #: A CLOSE was sent or received, or a protocol error happened; nothing more is accepted.
    CLOSED = 3


@dataclass(frozen=True)
class Acked:
    """Not a wire frame: the peer acknowledged ``seq``; ``tags`` belong to the frames it freed."""

    seq: int
    tags: Tuple[Any, ...] = ()


_dumps = cbor2.dumps
#: ``Connection._unacked`` while nothing is unacknowledged; never appended to.
_NONE: Deque[Tuple[int, bytes, Any]] = deque(maxlen=0)
#: The CBOR head of an ACK frame: a 2-element array and the ACK type.
_ACK_HEAD = b"\x82" + _dumps(int(fr.FrameType.ACK))

#: Frames numbered in their sender's sequence (seq 0: an unsequenced DELIVER).
_SEQUENCED = (fr.Send, fr.Request, fr.Deliver, fr.Notice, fr.Response, fr.Result)

#: Frame types each role may receive.
_ALLOWED = {
    Role.SERVER: (fr.Hello, fr.Request, fr.Send, fr.Ack, fr.Ping, fr.Pong, fr.Close),
    Role.CLIENT: (fr.Welcome, fr.Response, fr.Result, fr.Deliver, fr.Notice, fr.Ack, fr.Ping,
                  fr.Pong, fr.Close),
}


def negotiate(offered: Sequence[int], supported: Sequence[int] = SUPPORTED_VERSIONS) -> Optional[int]:
    """The highest version in both lists, or None."""
    common = set(offered) & set(supported)
    return max(common) if common else None


class Connection:
    """Protocol state of one connection (see the module docstring).

    Threading: not thread-safe; one thread owns it (the SDK's I/O thread, or the server's event
    loop).
    """

    def __init__(self, role: Role, max_frame: int | None = None) -> None:
        self.role = role
        self.max_frame = default_max_frame() if max_frame is None else max_frame
        self.phase = ConnectionPhase.HANDSHAKE
        self.version: Optional[int] = None
        #: Highest sequence number this side sent (SEND seq for a client, DELIVER/NOTICE for a server).
        self.out_seq = 0
        #: Highest sequence number received from the peer.
        self.in_seq = 0
        #: Highest sequence number the peer acknowledged.
        self.peer_acked = 0
        self._last_acked_sent = 0
        self._hello_seen = False
        self._close_sent = False
        #: (seq, frame, tag) of each reliable frame sent and not acknowledged yet, oldest first;
        #: the shared empty ``_NONE`` while there is none (an idle connection holds no deque).
        self._unacked: Deque[Tuple[int, bytes, Any]] = _NONE
        self._allowed = _ALLOWED[role]

    # ------------------------------------------------------------------ inbound
    def receive(self, data: bytes) -> Any:
        """Take one frame; return its event, an :class:`Acked`, or None for a dropped duplicate.

        Raises RemoteProtocolError (and the connection is CLOSED) for anything not allowed.
        """
        if self.phase is ConnectionPhase.CLOSED:
            raise RemoteProtocolError("frame after close", CloseCode.PROTOCOL_ERROR)
        try:
            if self.phase is ConnectionPhase.OPEN and len(data) <= self.max_frame:
                seq = fast_ack_seq(data)  # the most frequent frame: no event built
                if seq is not None:
                    return self._on_ack(seq)
            ev = fr.decode(data, self.max_frame)
            return self._take(ev)
        except RemoteProtocolError:
            self.phase = ConnectionPhase.CLOSED
            raise

    def _take(self, ev: fr.Event) -> Any:
        t = type(ev)
        if t not in self._allowed:
            raise RemoteProtocolError("%s may not be sent to a %s" % (t.__name__, self.role.value),
                                      CloseCode.PROTOCOL_ERROR)
        if self.phase is ConnectionPhase.HANDSHAKE:
            if t is fr.Close:
                self.phase = ConnectionPhase.CLOSED
                return ev
            if t is not (fr.Hello if self.role is Role.SERVER else fr.Welcome) or self._hello_seen:
                raise RemoteProtocolError("%s before the handshake" % t.__name__,
                                          CloseCode.PROTOCOL_ERROR)
            self._hello_seen = t is fr.Hello
            if t is fr.Welcome:
                if ev.version not in SUPPORTED_VERSIONS:  # type: ignore[union-attr]
                    raise RemoteProtocolError("server chose unsupported version %d"
                                              % ev.version,  # type: ignore[union-attr]
                                              CloseCode.UNSUPPORTED_VERSION)
                self.version = ev.version  # type: ignore[union-attr]
                self.phase = ConnectionPhase.OPEN
            return ev
        if t is fr.Hello or t is fr.Welcome:
            raise RemoteProtocolError("second handshake frame", CloseCode.PROTOCOL_ERROR)
        if t in _SEQUENCED:
            seq = ev.rid if t is fr.Request else ev.seq  # type: ignore[union-attr]
            if seq:
                if seq <= self.in_seq:
                    return None  # a duplicate (resent after a resume): already taken
                self.in_seq = seq
            return ev
        if t is fr.Ack:
            return self._on_ack(ev.seq)  # type: ignore[union-attr]
        if t is fr.Close:
            self.phase = ConnectionPhase.CLOSED
        return ev

    def _on_ack(self, seq: int) -> Acked:
        if seq > self.out_seq:
            raise RemoteProtocolError("ack of %d, only %d sent" % (seq, self.out_seq),
                                      CloseCode.PROTOCOL_ERROR)
        tags: List[Any] = []
        if seq > self.peer_acked:
            self.peer_acked = seq
            buf = self._unacked
            while buf and buf[0][0] <= seq:
                tag = buf.popleft()[2]
                if tag is not None:
                    tags.append(tag)
            if not buf:
                self._unacked = _NONE
        return Acked(seq, tuple(tags))

    # ------------------------------------------------------------------ outbound
    def _keep(self, seq: int, data: bytes, tag: Any) -> None:
        """Hold a sent reliable frame until the peer acknowledges it."""
        buf = self._unacked
        if buf is _NONE:
            buf = self._unacked = deque()
        buf.append((seq, data, tag))

    def _out(self, cls: Any, *fields: Any) -> bytes:
        """Build frame ``cls(*fields)`` and encode it; LocalProtocolError for anything invalid."""
        if self.phase is ConnectionPhase.CLOSED and (cls is not fr.Close or self._close_sent):
            raise LocalProtocolError("connection is closed", CloseCode.PROTOCOL_ERROR)
        try:
            ev = cls(*fields)
        except fr.FrameError as exc:
            raise LocalProtocolError("invalid %s: %s" % (cls.__name__, exc),
                                     CloseCode.PROTOCOL_ERROR) from exc
        data = fr.encode(ev)
        if len(data) > self.max_frame:
            raise LocalProtocolError("frame of %d bytes exceeds the limit of %d"
                                     % (len(data), self.max_frame), CloseCode.FRAME_TOO_LARGE)
        return data

    def hello(self, app_id: str, sdk: str = "", versions: Sequence[int] = SUPPORTED_VERSIONS,
              session_id: Optional[str] = None) -> bytes:
        """The client's first frame; with ``session_id`` it asks to resume that session."""
        assert self.role is Role.CLIENT
        resume = None if session_id is None else (session_id, self.in_seq)
        return self._out(fr.Hello, tuple(versions), app_id, sdk, resume)

    def welcome(self, version: int, params: Dict[str, Any]) -> bytes:
        """The server's answer to HELLO; the connection is open afterwards."""
        assert self.role is Role.SERVER
        data = self._out(fr.Welcome, version, params)
        self.version = version
        self.phase = ConnectionPhase.OPEN
        return data

    def request(self, op: int, args: Sequence[Any] = ()) -> Tuple[int, bytes]:
        """A REQUEST; its id is the next client seq; kept until acked. Returns (rid, bytes)."""
        rid = self.out_seq + 1
        data = self._out(fr.Request, rid, int(op), tuple(args))
        self.out_seq = rid
        self._keep(rid, data, None)
        return rid, data

    def respond(self, rid: int, code: int, result: Any = None) -> bytes:
        """A sequenced RESPONSE to request ``rid``, kept until acked."""
        seq = self.out_seq + 1
        data = self._out(fr.Response, seq, rid, int(code), result)
        self.out_seq = seq
        self._keep(seq, data, None)
        return data

    def send(self, kind: int, target: str, config: int, payload: fr.Payload,
             reliable: bool = True) -> Tuple[int, bytes]:
        """A client SEND; reliable ones are kept until acknowledged. Returns (seq, bytes)."""
        seq = self.out_seq + 1
        data = self._out(fr.Send, seq, int(kind), target, int(config), payload)
        self.out_seq = seq
        if reliable:
            self._keep(seq, data, None)
        return seq, data

    def result(self, code: int, seqs: Sequence[int], body: Optional[bytes] = None) -> bytes:
        """A sequenced RESULT for client SENDs ``seqs``, kept until acked."""
        seq = self.out_seq + 1
        data = self._out(fr.Result, seq, int(code), tuple(seqs), body)
        self.out_seq = seq
        self._keep(seq, data, None)
        return data

    def deliver(self, kind: int, sender: str, room: Optional[str], payload: fr.Payload,
                reliable: bool = True, tag: Any = None) -> Tuple[int, bytes]:
        """A server DELIVER; reliable ones are sequenced and kept (with ``tag``) until acked."""
        if self.phase is ConnectionPhase.CLOSED:
            raise LocalProtocolError("connection is closed", CloseCode.PROTOCOL_ERROR)
        try:
            tail = fr.encode_deliver_tail(kind, sender, room, payload)
        except fr.FrameError as exc:
            raise LocalProtocolError("invalid Deliver: %s" % exc, CloseCode.PROTOCOL_ERROR) from exc
        return self.deliver_tail(tail, tag, reliable)

    def deliver_tail(self, tail: bytes, tag: Any = None, reliable: bool = True) -> Tuple[int, bytes]:
        """A DELIVER from fields encoded once by ``frames.encode_deliver_tail`` (room fan-out,
        peer messages): only this receiver's seq is encoded here. Reliable ones are sequenced
        and kept (with ``tag``) until acked; unreliable ones carry seq 0. Returns (seq, bytes)."""
        if self.phase is ConnectionPhase.CLOSED:
            raise LocalProtocolError("connection is closed", CloseCode.PROTOCOL_ERROR)
        seq = self.out_seq + 1 if reliable else 0
        data = fr.DELIVER_HEAD + _dumps(seq) + tail
        if len(data) > self.max_frame:
            raise LocalProtocolError("frame of %d bytes exceeds the limit of %d"
                                     % (len(data), self.max_frame), CloseCode.FRAME_TOO_LARGE)
        if reliable:
            self.out_seq = seq
            self._keep(seq, data, tag)
        return seq, data

    def notice(self, kind: int, args: Sequence[Any] = (), tag: Any = None) -> Tuple[int, bytes]:
        """A sequenced server NOTICE, kept until acked. Returns (seq, bytes)."""
        seq = self.out_seq + 1
        data = self._out(fr.Notice, seq, int(kind), tuple(args))
        self.out_seq = seq
        self._keep(seq, data, tag)
        return seq, data

    def ack(self, upto: Optional[int] = None) -> Optional[bytes]:
        """An ACK of everything received so far (of at most ``upto``), or None when nothing
        new needs acknowledging."""
        seq = self.in_seq if upto is None or upto > self.in_seq else upto
        if seq <= self._last_acked_sent or self.phase is not ConnectionPhase.OPEN:
            return None
        self._last_acked_sent = seq
        return _ACK_HEAD + _dumps(seq)  # == encode(Ack(seq)), without building it

    def ping(self, token: int = 0) -> bytes:
        return self._out(fr.Ping, token)

    def pong(self, token: int = 0) -> bytes:
        return self._out(fr.Pong, token)

    def close(self, code: int, reason: str = "") -> bytes:
        """A CLOSE frame; the connection accepts nothing more afterwards.

        Allowed once even after a protocol error closed the connection, so the peer can be told
        why.
        """
        data = self._out(fr.Close, int(code), reason[:200])
        self._close_sent = True
        self.phase = ConnectionPhase.CLOSED
        return data

    # ------------------------------------------------------------------ resume support
    def reopen(self) -> None:
        """Start the handshake of a new connection for the same session: both sequences and the
        unacknowledged frames are kept; the next ``ack()`` acknowledges everything again."""
        self.phase = ConnectionPhase.HANDSHAKE
        self._hello_seen = False
        self._close_sent = False
        self._last_acked_sent = 0

    def restart(self) -> None:
        """The peer started a new session on this open connection (a resume was refused):
        both sequences start again from 0 and nothing unacknowledged is kept."""
        self.out_seq = self.in_seq = self.peer_acked = 0
        self._last_acked_sent = 0
        self._unacked = _NONE

    def resume_from(self, peer_seq: Any, keep: Any = None) -> Tuple[Acked, List[bytes]]:
        """The peer has everything up to ``peer_seq`` (from its HELLO or WELCOME): free that,
        and return what that acknowledged (with the freed frames' tags) and the frames still
        unacknowledged, to send again in order. ``keep(tag)`` may drop tagged frames for good
        (for example a delivery that timed out meanwhile). RemoteProtocolError if ``peer_seq``
        is not a seq or claims more than was sent."""
        if not isinstance(peer_seq, int) or isinstance(peer_seq, bool) or peer_seq < 0:
            raise RemoteProtocolError("resume seq must be an integer >= 0, got %r" % (peer_seq,),
                                      CloseCode.PROTOCOL_ERROR)
        acked = self._on_ack(peer_seq)
        if keep is not None:
            self._unacked = deque(e for e in self._unacked if e[2] is None or keep(e[2])) or _NONE
        return acked, [data for _, data, _ in self._unacked]

    @property
    def unacked_count(self) -> int:
        """How many reliable sequenced frames wait for the peer's acknowledgement."""
        return len(self._unacked)

    def unacked_frames(self) -> List[bytes]:
        """The reliable frames not yet acknowledged, oldest first, as they were sent."""
        return [data for _, data, _ in self._unacked]

    def unacked_tags(self) -> List[Any]:
        """The tags of the frames not yet acknowledged, oldest first (None where untagged)."""
        return [tag for _, _, tag in self._unacked]
