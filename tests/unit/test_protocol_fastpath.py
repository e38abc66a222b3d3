"""The codec's fast paths (SEND, DELIVER and ACK decoded without the generic stream decoder; a
DELIVER encoded from its tail; an ACK built without an event) give exactly what the generic
code gives: the same events, the same bytes, the same errors, for valid frames, odd but valid
encodings, and anything mutated. No sockets, no sleeps."""

from __future__ import annotations

from typing import Any, List, Optional

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rts_sync.errors import LocalProtocolError, RemoteProtocolError
from rts_sync.protocol import (
    Ack,
    Acked,
    Connection,
    ConnectionPhase,
    Deliver,
    Role,
    Send,
    decode,
    default_max_frame,
    encode,
    encode_deliver_tail,
)
from rts_sync.protocol import frames as fr

MAX_FRAME = default_max_frame()
TEXT = st.text(max_size=40)
PAYLOAD = st.one_of(TEXT, st.binary(max_size=40), st.text(min_size=200, max_size=300),
                    st.sampled_from([b"\x00" * 65000, "\u00e9" * 32000]))
SEQ = st.one_of(st.integers(0, 300), st.integers(0, 2**63 - 1))
SENDS = st.builds(Send, st.integers(1, 2**63 - 1) | st.integers(1, 300), st.integers(0, 2), TEXT,
                  st.integers(0, 2), PAYLOAD)
DELIVERS = st.builds(Deliver, SEQ, st.integers(0, 1), TEXT, st.none() | TEXT, PAYLOAD)
ACKS = st.builds(Ack, SEQ)


def outcome(fn: Any, data: bytes) -> Any:
    """What ``fn(data)`` returns, with its type, or the RemoteProtocolError it raises (as text)."""
    try:
        ev = fn(data)
    except RemoteProtocolError as exc:
        return ("error", exc.code, str(exc))
    return (type(ev), ev)


def same_as_generic(data: bytes) -> None:
    assert outcome(lambda d: decode(d, MAX_FRAME), data) == outcome(fr._decode_generic, data)


@given(st.one_of(SENDS, DELIVERS, ACKS))
def test_valid_frames_decode_to_the_same_event(ev: Any) -> None:
    data = encode(ev)
    got = decode(data, MAX_FRAME)
    assert type(got) is type(ev) and got == ev and repr(got) == repr(ev) and hash(got) == hash(ev)
    same_as_generic(data)


def _uint_long(major: int, n: int, width: int) -> bytes:
    """A CBOR head for ``n`` in a longer form than needed (valid, not canonical)."""
    info = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([(major << 5) | info]) + n.to_bytes(width, "big")


def _item(value: Any, style: str) -> bytes:
    """``value`` encoded canonically or in an odd but valid way."""
    if style == "long" and isinstance(value, int) and value >= 0:
        return _uint_long(0, value, 8)
    if style == "long" and isinstance(value, (str, bytes)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        return _uint_long(3 if isinstance(value, str) else 2, len(raw), 4) + raw
    if style == "chunked" and isinstance(value, (str, bytes)):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        major = 3 if isinstance(value, str) else 2
        return bytes([(major << 5) | 31]) + cbor2.dumps(value) + bytes([0xFF])
    if style == "tagged":
        return b"\xd9\xd9\xf7" + cbor2.dumps(value)  # self-described CBOR: the value itself
    return cbor2.dumps(value)


@given(st.one_of(SENDS, DELIVERS, ACKS), st.data())
def test_odd_encodings_give_what_the_generic_decoder_gives(ev: Any, data: Any) -> None:
    fields = fr._ENCODERS[type(ev)](ev)
    styles = data.draw(st.lists(st.sampled_from(["canonical", "long", "chunked", "tagged"]),
                                min_size=len(fields) - 1, max_size=len(fields) - 1))
    raw = bytes([0x80 | len(fields)]) + cbor2.dumps(fields[0])
    raw += b"".join(_item(v, s) for v, s in zip(fields[1:], styles))
    same_as_generic(raw)
    same_as_generic(raw + data.draw(st.binary(min_size=1, max_size=30)))


@given(st.one_of(SENDS, DELIVERS), st.integers(0, 40))
def test_a_shared_value_referenced_later_with_junk_after_it_is_refused(ev: Any, junk: int) -> None:
    """A payload (or room) that is a reference to the target (CBOR tags 28/29) is shorter than
    its canonical encoding; with junk after the frame the sizes could add up: still refused."""
    fields = fr._ENCODERS[type(ev)](ev)
    raw = bytes([0x86]) + b"".join(cbor2.dumps(v) for v in fields[:3])
    raw += b"\xd8\x1c" + cbor2.dumps(fields[3])  # the target / sender, marked shareable
    raw += cbor2.dumps(fields[4]) + b"\xd8\x1d\x00"  # the payload: the same value
    same_as_generic(raw + b"\x00" * junk)


@st.composite
def mutated(draw: Any) -> bytes:
    data = bytearray(encode(draw(st.one_of(SENDS, DELIVERS, ACKS))))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "cut", "set"]))
        if how == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete" and len(data) > 1:
            del data[i]
        elif how == "cut":
            del data[i:]
        elif data:
            data[i] = draw(st.sampled_from([0x00, 0x18, 0x1b, 0x5f, 0x7f, 0xd8, 0xf6, 0xff]))
    return bytes(data)


@settings(max_examples=1500)
@given(mutated())
def test_mutated_frames_give_what_the_generic_decoder_gives(data: bytes) -> None:
    same_as_generic(data)


@pytest.mark.parametrize("text", ["caf\u00e9", "\u6f22\u5b57", "\U0001f600", "\ufffd", ""])
def test_non_ascii_text_fields(text: str) -> None:
    for ev in (Send(3, 0, text, 1, text + "x"), Deliver(0, 1, text, text + "r", text + "p")):
        data = encode(ev)
        assert decode(data, MAX_FRAME) == ev
        same_as_generic(data)


def test_text_that_is_not_utf8_is_refused() -> None:
    data = bytearray(encode(Send(1, 0, "bob", 0, "ab")))
    data[-1] = 0xFF
    same_as_generic(bytes(data))
    with pytest.raises(RemoteProtocolError):
        decode(bytes(data), MAX_FRAME)


@pytest.mark.parametrize("seq", [0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1])
def test_fast_ack_seq_reads_every_canonical_width(seq: int) -> None:
    assert fr.fast_ack_seq(encode(Ack(seq))) == seq


@pytest.mark.parametrize("data", [b"\x82\x08", b"\x82\x08\x18\x05", b"\x82\x08\x19\x00\xff",
                                  b"\x82\x08\x1b\x80" + b"\x00" * 7, b"\x82\x08\x20",
                                  b"\x82\x08\x01\x00", b"\x83\x08\x01\x00", b"\x82\x09\x01"])
def test_fast_ack_seq_leaves_anything_else_to_the_decoder(data: bytes) -> None:
    assert fr.fast_ack_seq(data) is None
    same_as_generic(data)


# ------------------------------------------------------------------------------- encoding
@given(st.integers(0, 300) | st.integers(0, 2**63 - 2), st.integers(0, 1), TEXT, st.none() | TEXT,
       PAYLOAD, st.booleans())
def test_connection_deliver_is_byte_identical_to_an_encoded_deliver(
        seq: int, kind: int, sender: str, room: Optional[str], payload: Any, reliable: bool) -> None:
    c = Connection(Role.SERVER, max_frame=2 * MAX_FRAME)
    c.out_seq = seq
    got_seq, data = c.deliver(kind, sender, room, payload, reliable=reliable, tag="t")
    want = seq + 1 if reliable else 0
    assert got_seq == want and data == encode(Deliver(want, kind, sender, room, payload))
    assert c.unacked_frames() == ([data] if reliable else [])
    assert c.unacked_tags() == (["t"] if reliable else [])
    assert encode_deliver_tail(kind, sender, room, payload) == data[len(fr.DELIVER_HEAD)
                                                                   + len(cbor2.dumps(want)):]


@pytest.mark.parametrize("fields", [(2, "a", None, "p"), (True, "a", None, "p"), (0, 5, None, "p"),
                                    (0, "a", 5, "p"), (0, "a", None, 5), (-1, "a", None, "p"),
                                    (0, "a", None, bytearray(b"p"))])
def test_connection_deliver_refuses_invalid_fields_as_before(fields: List[Any]) -> None:
    c = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError, match="invalid Deliver"):
        c.deliver(*fields)
    assert c.out_seq == 0 and c.unacked_count == 0


def test_deliver_kind_may_be_an_enum_member() -> None:
    c = Connection(Role.SERVER)
    _, data = c.deliver(fr.DeliverKind.ROOM, "a", "r", b"p")
    assert data == encode(Deliver(1, 1, "a", "r", b"p"))


def test_deliver_over_the_frame_limit_and_after_close() -> None:
    c = Connection(Role.SERVER, max_frame=100)
    with pytest.raises(LocalProtocolError, match="exceeds the limit"):
        c.deliver(0, "a", None, "x" * 100, reliable=False)
    assert c.out_seq == 0
    c.close(1000)
    with pytest.raises(LocalProtocolError, match="closed"):
        c.deliver(0, "a", None, "x")


@given(st.integers(1, 2**63 - 1))
def test_ack_bytes_are_an_encoded_ack(seq: int) -> None:
    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    server.receive(client.hello("app"))
    client.receive(server.welcome(1, {}))
    server.in_seq = seq
    assert server.ack() == encode(Ack(seq))
    assert server.ack() is None


def test_received_ack_takes_the_same_checks_on_the_fast_path() -> None:
    server, client = Connection(Role.SERVER), Connection(Role.CLIENT)
    with pytest.raises(RemoteProtocolError, match="before the handshake"):
        server.receive(encode(Ack(0)))
    server = Connection(Role.SERVER)
    server.receive(client.hello("app"))
    client.receive(server.welcome(1, {}))
    _, frame = server.deliver(0, "a", None, "x", tag="t1")
    server.deliver(0, "a", None, "y", tag="t2")
    assert server.receive(encode(Ack(1))) == Acked(1, ("t1",))
    assert server.receive(encode(Ack(1))) == Acked(1, ())
    with pytest.raises(RemoteProtocolError, match="ack of 3, only 2 sent"):
        server.receive(encode(Ack(3)))
    assert server.phase is ConnectionPhase.CLOSED
