"""Wire frames (rts_sync.protocol.frames): round trips, golden bytes, and hostile input.

Every malformed input must become a RemoteProtocolError with the right CloseCode, never another
exception. No sockets, no sleeps, no mocks.

The golden files in tests/data/golden were written once by running this module as a script
(``python tests/unit/test_protocol_frames.py --write-golden``). Rewrite them only for a deliberate
wire change, which also needs a new protocol version.
"""

from __future__ import annotations

import ast
import random
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rts_sync.errors import RemoteProtocolError
from rts_sync.protocol import (
    FRAME_OVERHEAD,
    MAX_ID_LENGTH,
    MAX_PAYLOAD,
    Ack,
    Close,
    CloseCode,
    Deliver,
    DeliverKind,
    Event,
    FrameError,
    FrameType,
    Hello,
    Notice,
    NoticeKind,
    Op,
    Ping,
    Pong,
    Request,
    Response,
    Result,
    Send,
    TargetKind,
    Welcome,
    decode,
    default_max_frame,
    encode,
)

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "data" / "golden"
MAX_FRAME = default_max_frame()

#: The golden frames: name -> event. The files hold encode(event) as of protocol version 1 with
#: session resume (HELLO's ``resume``, sequenced RESPONSE and RESULT).
GOLDEN: Dict[str, Event] = {
    "hello": Hello((1,), "app-1", "rts_sync/0.1"),
    "hello_resume": Hello((1,), "app-1", "rts_sync/0.1", ("s-1", 300)),
    "welcome": Welcome(1, {"max_payload": MAX_PAYLOAD, "heartbeat": 15}),
    "welcome_resumed": Welcome(1, {"resumed": True, "last_seq": 24}),
    "request_login": Request(1, Op.LOGIN, ("tok", "alice", None, 0)),
    "response_login": Response(1, 1, 0, {"session": "s-1"}),
    "response_status": Response(24, 7, 0, 1),
    "send_text_unicode": Send(1, TargetKind.PEER, "bob", 0, "hi \u00e9\u4e2d\U0001f600"),
    "send_binary_room": Send(2, TargetKind.ROOM, "room.1", 1, b"\x00\xff\x01"),
    "result_ok": Result(2, 0, (1, 2)),
    "result_body": Result(3, 0, (3,), b'{"ok":true}'),
    "result_timeout": Result(300, 1, (5, 6)),
    "deliver_peer": Deliver(1, DeliverKind.PEER, "alice", None, "hi"),
    "deliver_room_unreliable": Deliver(0, DeliverKind.ROOM, "alice", "room.1", b""),
    "notice_kicked": Notice(2, NoticeKind.KICKED, (1,)),
    "ack": Ack(7),
    "ping": Ping(42),
    "pong": Pong(42),
    "close": Close(CloseCode.DUPLICATE_LOGIN, "logged in elsewhere"),
}

#: One valid frame per frame type, for round trips and arity tests.
ONE_OF_EACH: List[Event] = [
    Hello((2, 1), "app", "", ("s-1", 0)),
    Welcome(1),
    Request(5, Op.ONLINE_STATUS, ("bob",)),
    Response(6, 5, 0, 1),
    Send(3, TargetKind.SERVER, "", 0, b"to the app server"),
    Result(7, 3, (4,)),
    Deliver(9, DeliverKind.ROOM, "carol", "r", "x"),
    Notice(1, NoticeKind.USER_LEFT, ("r", "carol", 0)),
    Ack(0),
    Ping(),
    Pong(),
    Close(1000),
]


def rpe(data: bytes, max_frame: int = MAX_FRAME) -> RemoteProtocolError:
    """Decode ``data`` expecting a RemoteProtocolError (and nothing else)."""
    with pytest.raises(RemoteProtocolError) as info:
        decode(data, max_frame)
    return info.value


# ---------------------------------------------------------------------------------------- round trips
def test_one_of_each_covers_every_frame_type() -> None:
    assert sorted(cbor2.loads(encode(ev))[0] for ev in ONE_OF_EACH) == sorted(FrameType)


@pytest.mark.parametrize("ev", ONE_OF_EACH + list(GOLDEN.values()), ids=repr)
def test_round_trip(ev: Event) -> None:
    assert decode(encode(ev), MAX_FRAME) == ev


@pytest.mark.parametrize(
    "payload",
    ["", b"", "plain", b"\x00\x01\xfe\xff", "\u00e9\u4e2d\U0001f600", "a\x00b", "\ufeff"],
    ids=repr,
)
def test_payloads_keep_their_type_and_value(payload: Any) -> None:
    for ev in (Send(1, 0, "bob", 0, payload), Deliver(1, 0, "bob", None, payload),
               Deliver(0, 1, "bob", "room", payload)):
        back = decode(encode(ev), MAX_FRAME)
        assert back == ev
        assert type(back.payload) is type(payload)


def test_request_args_and_response_results_round_trip() -> None:
    for ev in (Request(1, Op.LOGOUT), Request(2, Op.JOIN_ROOM, ("room",)),
               Request(3, Op.SET_SERVER_PARAMS, ("sig", "https://app.example/rts")),
               Response(1, 2, 0, {"members": ["a", "b"]}), Response(2, 3, -1000),
               Response(2**63 - 1, 2**63 - 1, 1000, None)):
        assert decode(encode(ev), MAX_FRAME) == ev


@pytest.mark.parametrize(
    "resume", [None, ("s-1", 0), ("", 1), ("\u00e9\u4e2d", 2**63 - 1), ("x" * 200, 24)], ids=repr)
def test_hello_resume_round_trips(resume: Any) -> None:
    ev = Hello((1,), "app-1", "sdk", resume)
    back = decode(encode(ev), MAX_FRAME)
    assert back == ev and back.resume == resume
    assert cbor2.loads(encode(ev))[4] == (None if resume is None else list(resume))


@pytest.mark.parametrize(
    "build",
    [
        lambda: Hello((1,), "app", "", ["s", 1]),  # a list, not a tuple
        lambda: Hello((1,), "app", "", ("s",)),
        lambda: Hello((1,), "app", "", ("s", 1, 2)),
        lambda: Hello((1,), "app", "", (b"s", 1)),
        lambda: Hello((1,), "app", "", ("s", -1)),
        lambda: Hello((1,), "app", "", ("s", True)),
        lambda: Response(0, 1, 0),
        lambda: Response(1, 0, 0),
        lambda: Result(0, 0, (1,)),
        lambda: Result(True, 0, (1,)),
    ],
    ids=["resume-list", "resume-1", "resume-3", "resume-bytes", "resume-negative", "resume-bool",
         "response-seq-0", "response-rid-0", "result-seq-0", "result-seq-bool"],
)
def test_invalid_new_fields_are_refused_when_built(build: Any) -> None:
    with pytest.raises(FrameError):
        build()


@pytest.mark.parametrize(
    "fields",
    [[1, [1], "app", ""], [4, 1, 0, None], [6, 0, [1], None]],
    ids=["hello-4", "response-4", "result-4"],
)
def test_pre_resume_layouts_are_refused(fields: List[Any]) -> None:
    """HELLO, RESPONSE and RESULT as they were before session resume: one element short."""
    assert "needs 5 elements" in str(rpe(cbor2.dumps(fields)))


MAX_ID = "u" * MAX_ID_LENGTH
MAX_TEXT_4 = "\U0001f600" * (MAX_PAYLOAD // 4)  # 65,536 UTF-8 bytes
MAX_TEXT_2 = "\u00e9" * (MAX_PAYLOAD // 2)


@pytest.mark.parametrize(
    "ev",
    [
        Send(2**63 - 1, TargetKind.PEER, MAX_ID, 2, b"\xff" * MAX_PAYLOAD),
        Send(1, TargetKind.ROOM, MAX_ID, 0, MAX_TEXT_4),
        Deliver(2**63 - 1, DeliverKind.ROOM, MAX_ID, MAX_ID, b"\xff" * MAX_PAYLOAD),
        Deliver(1, DeliverKind.ROOM, MAX_ID, MAX_ID, MAX_TEXT_2),
        Deliver(1, DeliverKind.PEER, MAX_ID, None, "x" * MAX_PAYLOAD),
        Result(2**63 - 1, 0, (2**63 - 1,), b"\xff" * MAX_PAYLOAD),
    ],
    ids=["send-bytes", "send-text4", "deliver-bytes", "deliver-text2", "deliver-ascii", "result-body"],
)
def test_max_payload_fits_the_default_frame_limit(ev: Event) -> None:
    data = encode(ev)
    assert MAX_PAYLOAD < len(data) <= MAX_FRAME == MAX_PAYLOAD + FRAME_OVERHEAD
    assert decode(data, MAX_FRAME) == ev


# -------------------------------------------------------------------------------------------- golden
@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_bytes(name: str) -> None:
    data = (GOLDEN_DIR / (name + ".cbor")).read_bytes()
    assert encode(GOLDEN[name]) == data
    assert decode(data, MAX_FRAME) == GOLDEN[name]


def test_golden_files_are_all_listed() -> None:
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.cbor")) == sorted(GOLDEN)


@pytest.mark.parametrize(
    ("ev", "hex_bytes"),
    [
        (Ping(1), "8209 01"),
        (Ack(7), "8208 07"),
        (Close(1000), "830c 1903e8 60"),
        (Deliver(0, 0, "a", None, b""), "86 07 00 00 6161 f6 40"),
        (Result(5, 0, (1, 2)), "85 06 05 00 820102 f6"),
        (Result(300, 1, (2,), b""), "85 06 19012c 01 8102 40"),
        (Response(1, 1, 0), "85 04 01 01 00 f6"),
        (Response(24, 1, -1, [None]), "85 04 1818 01 20 81f6"),
        (Request(3, 2), "84 03 03 02 80"),
        (Hello((1,), "a"), "85 01 8101 6161 60 f6"),
        (Hello((1,), "a", "", ("s", 24)), "85 01 8101 6161 60 82 6173 1818"),
    ],
    ids=repr,
)
def test_hand_written_bytes(ev: Event, hex_bytes: str) -> None:
    """A few frames spelled out by hand from the CBOR spec, independent of any encoder."""
    assert encode(ev) == bytes.fromhex(hex_bytes.replace(" ", ""))


DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
#: A worked-example row of docs/protocol.md: | n | wire | NAME `[diagnostic]` ... | `hex` |
DOC_ROW = re.compile(r"^\| (\d+) \| [^|]+ \| [A-Z]+ `(\[.*?\])`[^|]* \| `([0-9a-f ]+)` \|$")


def _doc_rows() -> List[Any]:
    text = DOC.read_text(encoding="utf-8")
    return [m.groups() for m in map(DOC_ROW.match, text[text.index("## 8. Worked example"):].splitlines())
            if m]


def test_docs_worked_example_has_rows() -> None:
    assert [int(n) for n, _, _ in _doc_rows()] == list(range(1, 16))


@pytest.mark.parametrize(("n", "diag", "hex_bytes"), _doc_rows(), ids=lambda v: str(v)[:20])
def test_docs_worked_example_bytes(n: str, diag: str, hex_bytes: str) -> None:
    """Each row's bytes are the encoding of its diagnostic notation, and a valid frame."""
    value = ast.literal_eval(re.sub(r"\b(null|true|false)\b",
                                    lambda m: {"null": "None", "true": "True", "false": "False"}[m[1]], diag))
    data = bytes.fromhex(hex_bytes)
    assert cbor2.loads(data) == value
    assert encode(decode(data, MAX_FRAME)) == data


# ------------------------------------------------------------------------------------------- garbage
def test_random_bytes_give_an_event_or_a_protocol_error() -> None:
    rng = random.Random(20240501)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        try:
            decode(data, MAX_FRAME)
        except RemoteProtocolError as exc:
            assert exc.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_truncated_frames_at_every_cut_point(name: str) -> None:
    data = encode(GOLDEN[name])
    for cut in range(len(data)):
        assert rpe(data[:cut]).code == CloseCode.PROTOCOL_ERROR


def test_truncated_max_size_frame() -> None:
    data = encode(Send(1, 0, "bob", 0, b"\x00" * MAX_PAYLOAD))
    for cut in (0, 1, 5, len(data) // 2, len(data) - 1):
        assert rpe(data[:cut]).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("ev", ONE_OF_EACH, ids=repr)
def test_wrong_arity(ev: Event) -> None:
    fields = cbor2.loads(encode(ev))
    for bad in (fields[:-1], [*fields, None], fields[:1], fields + fields[1:]):
        assert rpe(cbor2.dumps(bad)).code == CloseCode.PROTOCOL_ERROR


BAD_FIELDS = {
    "hello-versions-empty": [1, [], "app", "", None],
    "hello-versions-not-array": [1, 1, "app", "", None],
    "hello-version-zero": [1, [0], "app", "", None],
    "hello-version-bool": [1, [True], "app", "", None],
    "hello-too-many-versions": [1, list(range(1, 18)), "app", "", None],
    "hello-app-bytes": [1, [1], b"app", "", None],
    "hello-sdk-null": [1, [1], "app", None, None],
    "hello-resume-text": [1, [1], "app", "", "s-1"],
    "hello-resume-int": [1, [1], "app", "", 5],
    "hello-resume-map": [1, [1], "app", "", {"s-1": 5}],
    "hello-resume-empty": [1, [1], "app", "", []],
    "hello-resume-one": [1, [1], "app", "", ["s-1"]],
    "hello-resume-three": [1, [1], "app", "", ["s-1", 5, 6]],
    "hello-resume-session-bytes": [1, [1], "app", "", [b"s-1", 5]],
    "hello-resume-session-null": [1, [1], "app", "", [None, 5]],
    "hello-resume-seq-negative": [1, [1], "app", "", ["s-1", -1]],
    "hello-resume-seq-bool": [1, [1], "app", "", ["s-1", True]],
    "hello-resume-seq-float": [1, [1], "app", "", ["s-1", 5.0]],
    "hello-resume-seq-null": [1, [1], "app", "", ["s-1", None]],
    "hello-resume-seq-too-big": [1, [1], "app", "", ["s-1", 2**63]],
    "hello-resume-false": [1, [1], "app", "", False],
    "welcome-version-float": [2, 1.0, {}],
    "welcome-version-too-big": [2, 65536, {}],
    "welcome-params-array": [2, 1, []],
    "request-rid-zero": [3, 0, 1, []],
    "request-rid-str": [3, "1", 1, []],
    "request-op-zero": [3, 1, 0, []],
    "request-op-256": [3, 1, 256, []],
    "request-args-map": [3, 1, 1, {}],
    "response-seq-zero": [4, 0, 1, 0, None],
    "response-seq-negative": [4, -1, 1, 0, None],
    "response-seq-bool": [4, True, 1, 0, None],
    "response-seq-null": [4, None, 1, 0, None],
    "response-seq-too-big": [4, 2**63, 1, 0, None],
    "response-rid-zero": [4, 1, 0, 0, None],
    "response-rid-negative": [4, 1, -1, 0, None],
    "response-rid-str": [4, 1, "1", 0, None],
    "response-code-float": [4, 1, 1, 0.0, None],
    "response-code-too-big": [4, 1, 1, 2**31, None],
    "send-seq-zero": [5, 0, 0, "bob", 0, "x"],
    "send-seq-negative": [5, -1, 0, "bob", 0, "x"],
    "send-seq-bool": [5, True, 0, "bob", 0, "x"],
    "send-seq-float": [5, 1.5, 0, "bob", 0, "x"],
    "send-seq-too-big": [5, 2**63, 0, "bob", 0, "x"],
    "send-kind-3": [5, 1, 3, "bob", 0, "x"],
    "send-target-bytes": [5, 1, 0, b"bob", 0, "x"],
    "send-target-null": [5, 1, 0, None, 0, "x"],
    "send-config-3": [5, 1, 0, "bob", 3, "x"],
    "send-config-bool": [5, 1, 0, "bob", False, "x"],
    "send-payload-int": [5, 1, 0, "bob", 0, 1],
    "send-payload-null": [5, 1, 0, "bob", 0, None],
    "send-payload-array": [5, 1, 0, "bob", 0, ["x"]],
    "result-frame-seq-zero": [6, 0, 0, [1], None],
    "result-frame-seq-negative": [6, -1, 0, [1], None],
    "result-frame-seq-float": [6, 1.0, 0, [1], None],
    "result-frame-seq-array": [6, [1], 0, [1], None],
    "result-body-str": [6, 1, 0, [1], "body"],
    "result-seqs-empty": [6, 1, 0, [], None],
    "result-seqs-int": [6, 1, 0, 1, None],
    "result-seq-zero": [6, 1, 0, [0], None],
    "result-seq-bool": [6, 1, 0, [True], None],
    "result-code-bool": [6, 1, False, [1], None],
    "result-code-too-big": [6, 1, 2**31, [1], None],
    "deliver-seq-negative": [7, -1, 0, "a", None, "x"],
    "deliver-seq-float": [7, 0.0, 0, "a", None, "x"],
    "deliver-kind-2": [7, 1, 2, "a", None, "x"],
    "deliver-sender-null": [7, 1, 0, None, None, "x"],
    "deliver-room-int": [7, 1, 1, "a", 5, "x"],
    "deliver-payload-map": [7, 1, 0, "a", None, {}],
    "notice-kind-zero": [11, 1, 0, []],
    "notice-args-str": [11, 1, 1, "x"],
    "ack-negative": [8, -1],
    "ack-bool": [8, True],
    "ack-str": [8, "1"],
    "ping-float": [9, 1.0],
    "pong-null": [10, None],
    "close-code-999": [12, 999, ""],
    "close-code-5000": [12, 5000, ""],
    "close-reason-bytes": [12, 1000, b""],
}


@pytest.mark.parametrize("fields", list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
def test_wrong_field_types(fields: List[Any]) -> None:
    err = rpe(cbor2.dumps(fields))
    assert err.code == CloseCode.PROTOCOL_ERROR
    assert "invalid frame" in str(err)  # a field was refused, not the element count


@pytest.mark.parametrize("ftype", [0, 13, 99, 255, -1, 2**64, True, 9.0, "9", b"\x09", None, [9]],
                         ids=repr)
def test_unknown_or_mistyped_frame_type(ftype: Any) -> None:
    assert rpe(cbor2.dumps([ftype, 1])).code == CloseCode.PROTOCOL_ERROR


def test_unknown_frame_type_as_huge_bignum() -> None:
    assert rpe(cbor2.dumps([1 << 16000, 1])).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("tail", [b"\x00", b"\xff", encode(Ping(2))], ids=repr)
def test_trailing_bytes_after_a_frame(tail: bytes) -> None:
    assert rpe(encode(Ping(1)) + tail).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "value",
    [0, -1, "frame", b"\x82\x09\x01", None, True, 1.5, {9: 1}, {}, [], cbor2.CBORTag(4000, [9, 1])],
    ids=repr,
)
def test_non_array_top_level(value: Any) -> None:
    assert rpe(cbor2.dumps(value)).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",  # a lone "break"
        b"\x1c",  # reserved additional information
        b"\x9f\x09\x01",  # indefinite array without its break
        b"\x9b" + b"\xff" * 8,  # array claiming 2**64-1 elements
        b"\x5b\x00\x00\x00\xff\xff\xff\xff\xff",  # byte string claiming ~1 TB
        b"\x82\x09\x61\xff",  # text that is not UTF-8
        b"\x82\x09\xc0\x74" + b"not-a-date-at-all!!!",  # bad tagged datetime
    ],
    ids=repr,
)
def test_malformed_cbor(data: bytes) -> None:
    assert rpe(data).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "data",
    [
        b"\x81" * 60000 + b"\x00",  # arrays nested 60,000 deep
        b"\xa1\x00" * 30000 + b"\x00",  # maps nested 30,000 deep
        b"\xc6" * 60000 + b"\x00",  # tags nested 60,000 deep
        b"\x84\x03\x01\x01" + b"\x81" * 60000 + b"\x00",  # a REQUEST whose args are a depth bomb
        b"\x9f" * 60000,  # indefinite arrays, never closed
    ],
    ids=["arrays", "maps", "tags", "request-args", "indefinite"],
)
def test_nested_depth_bombs(data: bytes) -> None:
    assert len(data) <= MAX_FRAME
    assert rpe(data).code == CloseCode.PROTOCOL_ERROR


def test_oversized_frame_is_checked_before_decoding() -> None:
    valid = encode(Send(1, 0, "bob", 0, b"\x00" * MAX_FRAME))
    assert len(valid) > MAX_FRAME
    assert rpe(valid).code == CloseCode.FRAME_TOO_LARGE
    # garbage and depth bombs one byte over the limit are rejected by size, not by the decoder
    assert rpe(b"\xff" * (MAX_FRAME + 1)).code == CloseCode.FRAME_TOO_LARGE
    assert rpe(b"\x81" * (MAX_FRAME + 1)).code == CloseCode.FRAME_TOO_LARGE


def test_frame_limit_boundary() -> None:
    data = encode(Ping(1))
    assert decode(data, len(data)) == Ping(1)
    assert rpe(data, len(data) - 1).code == CloseCode.FRAME_TOO_LARGE


# ------------------------------------------------------------------------------------------ property
@given(st.binary(max_size=2048))
def test_any_bytes_give_an_event_or_a_protocol_error(data: bytes) -> None:
    try:
        ev = decode(data, MAX_FRAME)
    except RemoteProtocolError as exc:
        assert exc.code == CloseCode.PROTOCOL_ERROR
    else:
        assert type(ev) in (Hello, Welcome, Request, Response, Send, Result, Deliver, Notice, Ack,
                            Ping, Pong, Close)


@given(st.binary(max_size=64))
def test_any_bytes_over_a_small_limit_are_too_large(data: bytes) -> None:
    limit = len(data) // 2
    try:
        decode(data, limit)
    except RemoteProtocolError as exc:
        assert exc.code == (CloseCode.FRAME_TOO_LARGE if len(data) > limit else CloseCode.PROTOCOL_ERROR)


@given(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.binary(max_size=8)),
                min_size=1, max_size=7))
def test_any_cbor_array_of_ints_and_bytes_gives_an_event_or_a_protocol_error(fields: List[Any]) -> None:
    try:
        decode(cbor2.dumps(fields), MAX_FRAME)
    except RemoteProtocolError as exc:
        assert exc.code == CloseCode.PROTOCOL_ERROR


SEQ = st.integers(1, 2**63 - 1)
PAYLOAD = st.one_of(st.text(max_size=50), st.binary(max_size=50))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=10),
                   st.binary(max_size=10))
ARGS = st.lists(st.one_of(SCALAR, st.lists(SCALAR, max_size=3)), max_size=4).map(tuple)
EVENTS = st.one_of(
    st.builds(Hello, st.lists(st.integers(1, 65535), min_size=1, max_size=16).map(tuple), st.text(),
              st.text(), st.none() | st.tuples(st.text(max_size=40), st.integers(0, 2**63 - 1))),
    st.builds(Welcome, st.integers(1, 65535), st.dictionaries(st.text(max_size=8), SCALAR, max_size=4)),
    st.builds(Request, SEQ, st.integers(1, 255), ARGS),
    st.builds(Response, SEQ, SEQ, st.integers(-(2**31), 2**31 - 1), SCALAR),
    st.builds(Send, SEQ, st.integers(0, 2), st.text(max_size=20), st.integers(0, 2), PAYLOAD),
    st.builds(Result, SEQ, st.integers(-(2**31), 2**31 - 1), st.lists(SEQ, min_size=1, max_size=5).map(tuple),
              st.none() | st.binary(max_size=30)),
    st.builds(Deliver, st.integers(0, 2**63 - 1), st.integers(0, 1), st.text(max_size=20),
              st.none() | st.text(max_size=20), PAYLOAD),
    st.builds(Notice, st.integers(0, 2**63 - 1), st.integers(1, 255), ARGS),
    st.builds(Ack, st.integers(0, 2**63 - 1)),
    st.builds(Ping, st.integers(0, 2**63 - 1)),
    st.builds(Pong, st.integers(0, 2**63 - 1)),
    st.builds(Close, st.integers(1000, 4999), st.text(max_size=30)),
)


@given(EVENTS)
def test_any_event_round_trips(ev: Event) -> None:
    data = encode(ev)
    assert decode(data, len(data)) == ev


def _write_golden() -> None:
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for name, ev in sorted(GOLDEN.items()):
        (GOLDEN_DIR / (name + ".cbor")).write_bytes(encode(ev))
        print(name, encode(ev).hex())


if __name__ == "__main__" and sys.argv[1:] == ["--write-golden"]:
    _write_golden()
