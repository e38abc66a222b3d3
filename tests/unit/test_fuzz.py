"""Property tests (hypothesis) of every parser that reads what a peer sends, beyond the codec's
own tests in test_protocol_frames.py: mutated and structurally arbitrary frames, a Connection fed
any sequence of frames or bytes in either role, the SDK's WebSocket parser fed any bytes cut
anywhere, and the token and V4-signature parsers the server runs on untrusted input.

The property in each case: the input gives a result or the module's own error
(RemoteProtocolError, TokenError, AuthError), never another exception, and the state after an
error is closed. No sockets, no sleeps, no mocks.
"""

from __future__ import annotations

import base64
import gc
from typing import Any, List, Tuple

import cbor2
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rts_sync._client.wsframe import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, WsParser
from rts_sync.errors import LocalProtocolError, RemoteProtocolError
from rts_sync.protocol import (
    Ack,
    Acked,
    Close,
    CloseCode,
    Connection,
    ConnectionPhase,
    Deliver,
    Event,
    Hello,
    Notice,
    Ping,
    Pong,
    Request,
    Response,
    Result,
    Role,
    Send,
    Welcome,
    decode,
    default_max_frame,
    encode,
    encode_deliver_tail,
)
from rts_sync.server.signing import AuthError, sign_request, verify_request
from rts_sync.token import AccessToken, TokenError, mint_login_token, parse

MAX_FRAME = default_max_frame()
EVENT_TYPES = (Hello, Welcome, Request, Response, Send, Result, Deliver, Notice, Ack, Ping, Pong, Close)

SEQ = st.integers(1, 2**63 - 1)
PAYLOAD = st.one_of(st.text(max_size=40), st.binary(max_size=40))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.text(max_size=8),
                   st.binary(max_size=8), st.floats(allow_nan=True))
#: Any CBOR value: scalars, arrays, maps (text or int keys), tags, nested a few levels.
CBOR_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-5, 5)), inner, max_size=3),
        st.builds(cbor2.CBORTag, st.integers(6, 2**32).filter(lambda t: t not in (55799,)), inner),
    ),
    max_leaves=12)
#: What an application can hand the protocol: Python values, no CBOR tags (a tag such as 25,
#: a string reference, encodes but is refused by the decoder, which is the decoder's business).
PLAIN_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-5, 5)), inner, max_size=3)),
    max_leaves=12)
EVENTS = st.one_of(
    st.builds(Hello, st.lists(st.integers(1, 65535), min_size=1, max_size=4).map(tuple),
              st.text(max_size=30), st.text(max_size=10),
              st.none() | st.tuples(st.text(max_size=20), st.integers(0, 50))),
    st.builds(Welcome, st.integers(1, 3), st.dictionaries(st.text(max_size=8), SCALAR, max_size=3)),
    st.builds(Request, st.integers(1, 60), st.integers(1, 255),
              st.lists(SCALAR, max_size=4).map(tuple)),
    st.builds(Response, st.integers(1, 60), st.integers(1, 60), st.integers(-5, 5), SCALAR),
    st.builds(Send, st.integers(1, 60), st.integers(0, 2), st.text(max_size=10), st.integers(0, 2),
              PAYLOAD),
    st.builds(Result, st.integers(1, 60), st.integers(-5, 5),
              st.lists(st.integers(1, 60), min_size=1, max_size=3).map(tuple),
              st.none() | st.binary(max_size=10)),
    st.builds(Deliver, st.integers(0, 60), st.integers(0, 1), st.text(max_size=10),
              st.none() | st.text(max_size=10), PAYLOAD),
    st.builds(Notice, st.integers(0, 60), st.integers(1, 255), st.lists(SCALAR, max_size=3).map(tuple)),
    st.builds(Ack, st.integers(0, 80)),
    st.builds(Ping, st.integers(0, 2**63 - 1)),
    st.builds(Pong, st.integers(0, 2**63 - 1)),
    st.builds(Close, st.integers(1000, 4999), st.text(max_size=20)),
)


def decode_or_error(data: bytes, max_frame: int = MAX_FRAME) -> Any:
    """``decode(data)``, or the RemoteProtocolError it raised (any other exception fails)."""
    try:
        return decode(data, max_frame)
    except RemoteProtocolError as exc:
        assert exc.code in (CloseCode.PROTOCOL_ERROR, CloseCode.FRAME_TOO_LARGE)
        return exc


# ------------------------------------------------------------------------------- the codec
@st.composite
def mutated_frames(draw: Any) -> bytes:
    """A valid frame with bits flipped, bytes inserted or deleted, cut short or spliced."""
    data = bytearray(encode(draw(EVENTS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(data) - 1)))
        how = draw(st.sampled_from(["flip", "insert", "delete", "cut", "splice", "set"]))
        if how == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif how == "delete" and len(data) > 1:
            del data[i]
        elif how == "cut":
            del data[i:]
        elif how == "splice":
            data[i:] = encode(draw(EVENTS))[draw(st.integers(0, 3)):]
        elif data:
            data[i] = draw(st.sampled_from([0x00, 0x1f, 0x5f, 0x7f, 0x9f, 0xbf, 0xd8, 0xf9, 0xff]))
    return bytes(data)


@settings(max_examples=800)
@given(mutated_frames())
def test_any_mutation_of_a_valid_frame_gives_an_event_or_a_protocol_error(data: bytes) -> None:
    out = decode_or_error(data)
    if not isinstance(out, RemoteProtocolError):
        # whatever decodes is a valid event, and re-encoding it reaches a fixed point
        assert type(out) in EVENT_TYPES
        again = encode(out)
        assert encode(decode(again, len(again))) == again


@settings(max_examples=500)
@given(st.integers(0, 14), st.lists(CBOR_VALUE, max_size=7))
def test_any_cbor_fields_under_any_frame_type_give_an_event_or_a_protocol_error(
        ftype: int, fields: List[Any]) -> None:
    try:
        data = cbor2.dumps([ftype, *fields])
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        assume(False)
        return
    out = decode_or_error(data)
    if not isinstance(out, RemoteProtocolError):
        assert type(out) in EVENT_TYPES


@given(st.lists(CBOR_VALUE, max_size=4), st.sampled_from([0x9f, 0xbf, 0x5f, 0x7f]))
def test_indefinite_length_containers_give_an_event_or_a_protocol_error(
        items: List[Any], head: int) -> None:
    """Indefinite-length arrays, maps, byte and text strings, with or without their break."""
    body = b"".join(cbor2.dumps(x) for x in items)
    for data in (bytes([head]) + body, bytes([head]) + body + b"\xff",
                 b"\x9f\x09" + body + b"\xff", b"\x82\x09" + bytes([head]) + body + b"\xff"):
        decode_or_error(data)


@given(st.integers(0, 1), st.text(max_size=30), st.none() | st.text(max_size=30), PAYLOAD,
       st.integers(0, 2**63 - 1))
def test_a_fanned_out_deliver_is_byte_identical_to_one_encoded_whole(
        kind: int, sender: str, room: Any, payload: Any, seq: int) -> None:
    server = Connection(Role.SERVER)
    server.out_seq = seq - 1 if seq else 0
    if seq == 0:
        return
    _, data = server.deliver_tail(encode_deliver_tail(kind, sender, room, payload))
    assert data == encode(Deliver(seq, kind, sender, room, payload))


def test_refused_frames_leave_nothing_behind() -> None:
    """Nothing of a refused frame stays in memory (cbor2 5.x, on Python 3.9, leaks the exceptions
    of its C decoder for text that is not UTF-8: frames.decode steers around it)."""
    bad = [b"\x82\x09\x61\xff", b"\x82\x09\x7f\x61\xc3\xff", b"\xa1\x61\xff\x00", b"\xff",
           b"\x9f\x09", encode(Ping(1)) + b"\x00", b"\x81" * 5000 + b"\x00"]

    def exceptions() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, BaseException))

    for data in bad:
        assert isinstance(decode_or_error(data), RemoteProtocolError)
    before = exceptions()
    for _ in range(200):
        for data in bad:
            decode_or_error(data)
    assert exceptions() - before < 10


@pytest.mark.parametrize("text", ["\ufffd", "a\ufffdb", "\ufffd" * 3 + "\u00e9"])
def test_text_with_replacement_characters_round_trips(text: str) -> None:
    for ev in (Send(1, 0, text, 0, text), Response(1, 1, 0, {text: [text]}),
               Notice(1, 2, (text, "u", 0))):
        assert decode(encode(ev), MAX_FRAME) == ev


# ------------------------------------------------------------------------ the state machine
def _open_pair() -> Tuple[Connection, Connection]:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive(client.hello("app"))
    client.receive(server.welcome(1, {}))
    return client, server


def _feed(conn: Connection, frames: List[bytes]) -> None:
    """Feed frames the way a reader does; check the invariants after each."""
    closed = False
    for data in frames:
        in_seq, acked, unacked = conn.in_seq, conn.peer_acked, conn.unacked_count
        try:
            out = conn.receive(data)
        except RemoteProtocolError as exc:
            assert exc.code in set(CloseCode)
            assert conn.phase is ConnectionPhase.CLOSED
            closed = True
            continue
        assert not closed, "a frame was taken after a protocol error"
        assert out is None or isinstance(out, Acked) or type(out) in EVENT_TYPES
        assert conn.in_seq >= in_seq and conn.peer_acked >= acked
        assert conn.unacked_count <= unacked and conn.peer_acked <= conn.out_seq
        if isinstance(out, Close):
            closed = True
    if conn.phase is ConnectionPhase.CLOSED:  # and it stays closed
        with pytest.raises(RemoteProtocolError):
            conn.receive(encode(Ping(1)))


@settings(max_examples=400)
@given(st.sampled_from(list(Role)), st.booleans(), st.lists(EVENTS, max_size=25))
def test_any_frame_sequence_in_either_role_keeps_the_state_consistent(
        role: Role, opened: bool, events: List[Event]) -> None:
    client, server = _open_pair() if opened else (Connection(Role.CLIENT), Connection(Role.SERVER))
    conn = client if role is Role.CLIENT else server
    for _ in range(3):  # something of its own unacknowledged, so that ACKs can free it
        if conn.phase is ConnectionPhase.OPEN:
            if role is Role.CLIENT:
                conn.send(0, "bob", 0, "x")
            else:
                conn.deliver(0, "bob", None, "x")
    _feed(conn, [encode(ev) for ev in events])


@settings(max_examples=400)
@given(st.sampled_from(list(Role)), st.lists(st.one_of(st.binary(max_size=40), mutated_frames()),
                                             max_size=10))
def test_any_bytes_into_an_open_connection_give_events_or_close_it(
        role: Role, frames: List[bytes]) -> None:
    client, server = _open_pair()
    _feed(client if role is Role.CLIENT else server, frames)


@given(st.lists(st.tuples(st.sampled_from(["send", "request", "deliver", "notice", "respond"]),
                          PAYLOAD), max_size=30), st.randoms(use_true_random=False))
def test_frames_fed_in_order_with_random_duplicates_are_taken_once(
        steps: List[Tuple[str, Any]], rnd: Any) -> None:
    """Whatever one side sends, the other takes each sequenced frame exactly once, in order,
    however many times each arrives (a resume resends), and the ACKs free everything."""
    client, server = _open_pair()
    up: List[bytes] = []
    down: List[bytes] = []
    for kind, payload in steps:
        if kind == "send":
            up.append(client.send(0, "bob", 0, payload)[1])
        elif kind == "request":
            up.append(client.request(3, [payload])[1])
        elif kind == "deliver":
            down.append(server.deliver(0, "al", None, payload)[1])
        elif kind == "notice":
            down.append(server.notice(2, ["r", "al", 0])[1])
        else:
            down.append(server.respond(1, 0, payload))
    for sender, receiver, frames in ((client, server, up), (server, client, down)):
        wire = [f for f in frames for _ in range(rnd.randint(1, 3))]
        got = [receiver.receive(f) for f in wire]
        taken = [ev for ev in got if ev is not None]
        assert [encode(ev) for ev in taken] == frames
        ack = receiver.ack()
        if frames:
            assert ack is not None and sender.receive(ack) == Acked(sender.out_seq, ())
        assert sender.unacked_count == 0


@given(st.one_of(PLAIN_VALUE, st.builds(object), st.sets(st.integers(), max_size=2),
                 st.floats(allow_nan=True)))
def test_building_a_frame_from_any_value_gives_bytes_or_a_local_error(value: Any) -> None:
    """What the application hands the protocol (request args, targets, payloads, results, notice
    args, room ids) is either encoded into a frame the other side decodes, or refused locally
    with LocalProtocolError."""
    client, server = _open_pair()
    for build in (lambda: client.request(3, [value])[1], lambda: client.send(0, value, 0, "x")[1],
                  lambda: client.send(0, "bob", 0, value)[1], lambda: server.respond(1, 0, value),
                  lambda: server.notice(2, [value])[1],
                  lambda: server.deliver(0, "al", value, "x")[1]):
        try:
            data = build()
        except LocalProtocolError as exc:
            assert exc.code in (CloseCode.PROTOCOL_ERROR, CloseCode.FRAME_TOO_LARGE)
            continue
        assert type(decode(data, MAX_FRAME)) in EVENT_TYPES


# ------------------------------------------------------------------- the SDK's WebSocket parser
def server_frame(payload: bytes, opcode: int = OP_BINARY, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + n.to_bytes(2, "big")
    else:
        head += bytes([127]) + n.to_bytes(8, "big")
    return head + payload


@st.composite
def server_streams(draw: Any) -> Tuple[bytes, List[Tuple[int, bytes]]]:
    """A stream of valid server frames (fragmented messages with control frames between the
    fragments) and the messages a parser must give for it."""
    wire = bytearray()
    messages: List[Tuple[int, bytes]] = []
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):
            op = draw(st.sampled_from([OP_PING, OP_PONG, OP_CLOSE]))
            payload = draw(st.binary(max_size=125))
            wire += server_frame(payload, op)
            messages.append((op, payload))
            continue
        op = draw(st.sampled_from([OP_BINARY, OP_TEXT]))
        parts = draw(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
        controls: List[Tuple[int, bytes]] = []
        for i, part in enumerate(parts):
            wire += server_frame(part, op if i == 0 else 0, fin=i == len(parts) - 1)
            if i < len(parts) - 1 and draw(st.booleans()):
                wire += server_frame(b"p", OP_PING)
                controls.append((OP_PING, b"p"))
        messages += [*controls, (op, b"".join(parts))]
    return bytes(wire), messages


@settings(max_examples=300)
@given(server_streams(), st.lists(st.integers(0, 4000), max_size=8))
def test_ws_parser_gives_the_same_messages_however_the_bytes_are_cut(
        stream: Tuple[bytes, List[Tuple[int, bytes]]], cuts: List[int]) -> None:
    wire, messages = stream
    parser = WsParser(100_000)
    out: List[Tuple[int, bytes]] = []
    last = 0
    for cut in [*sorted(c for c in cuts if c <= len(wire)), len(wire)]:
        out += parser.feed(wire[last:cut])
        last = cut
    assert out == messages


@settings(max_examples=500)
@given(st.binary(max_size=300), st.lists(st.integers(1, 300), max_size=6), st.integers(1, 200))
def test_ws_parser_fed_any_bytes_gives_messages_or_a_protocol_error(
        data: bytes, cuts: List[int], limit: int) -> None:
    parser = WsParser(limit)
    last = 0
    try:
        for cut in [*sorted(c for c in cuts if c <= len(data)), len(data)]:
            for opcode, payload in parser.feed(data[last:cut]):
                assert opcode in (OP_BINARY, OP_TEXT, OP_PING, OP_PONG, OP_CLOSE)
                assert len(payload) <= max(limit, 125)
            last = cut
    except RemoteProtocolError as exc:
        assert exc.code in (CloseCode.PROTOCOL_ERROR, CloseCode.FRAME_TOO_LARGE)


# ------------------------------------------------------- what the server parses before trusting
APP_ID, APP_KEY = "rtsapp000000000000000001", "key"


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=200).map(
    lambda b: "001" + APP_ID + base64.b64encode(b).decode())))
def test_any_token_text_parses_or_raises_token_error(text: str) -> None:
    try:
        tok = parse(text)
    except TokenError:
        return
    assert isinstance(tok, AccessToken)
    assert not tok.verify(APP_KEY)  # nothing random is signed with the key


@settings(max_examples=500)
@given(st.integers(0, 400), st.integers(0, 255), st.integers(0, 3))
def test_a_token_changed_anywhere_is_refused(pos: int, value: int, how: int) -> None:
    good = mint_login_token(APP_ID, APP_KEY, "alice", now=1_700_000_000)
    raw = bytearray(base64.b64decode(good[27:]))
    pos %= len(raw)
    if how == 0:
        raw[pos] ^= value or 1
    elif how == 1:
        raw.insert(pos, value)
    elif how == 2:
        del raw[pos]
    else:
        del raw[pos:]
    text = good[:27] + base64.b64encode(bytes(raw)).decode()
    try:
        tok = parse(text)
    except TokenError:
        return
    assert not tok.verify(APP_KEY, now=1_700_000_001)


HEADER_TEXT = st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), max_size=120)


@settings(max_examples=500)
@given(st.dictionaries(st.sampled_from(["Authorization", "X-Date", "X-Content-Sha256", "Host",
                                        "Content-Type"]), HEADER_TEXT, max_size=5),
       st.binary(max_size=50))
def test_any_push_api_headers_verify_or_raise_auth_error(headers: Any, body: bytes) -> None:
    good = sign_request("POST", "http://h:1/?Action=SendUnicast&Version=2020-12-01", body,
                        "AK", "SK", now=1_700_000_000)
    for merged in (headers, dict(good, **headers)):
        try:
            verify_request("POST", "/", [("Action", "SendUnicast"), ("Version", "2020-12-01")],
                           list(merged.items()), body, {"AK": "SK"}, 1_700_000_000.0, 300.0)
        except AuthError as exc:
            assert exc.status in (400, 401, 403) and exc.code
