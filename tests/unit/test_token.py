"""Tests for rts_sync.token (AccessToken version 001)."""

from __future__ import annotations

import base64
import json
import re
import struct

import pytest

from rts_sync.token import (
    AccessToken,
    Privilege,
    TokenError,
    main,
    mint_login_token,
    parse,
)

APP_ID = "123456781234567812345678"
APP_KEY = "app key"

# Vectors from the reference doc, produced by Volcengine's official Python and Java generators.
VECTOR_1 = (
    "001123456781234567812345678QwBOYbwAAPFTZRD/U2UIAG5ldyByb29tCwBuZXcgdXNlciBpZAUAAAAQ/1Nl"
    "AQAQ/1NlAgAQ/1NlAwAQ/1NlBAAAAAAAIACBb1UkubyLiQbgSE8mW0V1iap6eADRs2XDmO8kgOsmtQ=="
)
VECTOR_1_MSG = bytes.fromhex(
    "4e61bc0000f1536510ff536508006e657720726f6f6d0b006e65772075736572206964"
    "0500000010ff5365010010ff5365020010ff5365030010ff5365040000000000"
)
VECTOR_1_SIG = bytes.fromhex("816f5524b9bc8b8906e0484f265b457589aa7a7800d1b365c398ef2480eb26b5")
VECTOR_2 = (
    "001123456781234567812345678NgABAAAAAPFTZYBCVWUAAAYAdXNlcl8xBQAAAIBCVWUBAIBCVWUCAIBCVWUD"
    "AIBCVWUEAIBCVWUgAJuPA8YjELWmeM+0SmxtkSeQkERodehCy6EdI44bUFeD"
)


def vector_1_token() -> AccessToken:
    tok = AccessToken(APP_ID, APP_KEY, "new room", "new user id")
    tok.nonce = 12345678
    tok.issued_at = 1700000000
    tok.expire_time(1700003600)
    tok.add_privilege(Privilege.SUBSCRIBE_STREAM, 0)
    tok.add_privilege(Privilege.PUBLISH_STREAM, 1700003600)
    return tok


def make_token(content: bytes) -> str:
    return "001" + APP_ID + base64.b64encode(content).decode()


def blob(b: bytes) -> bytes:
    return struct.pack("<H", len(b)) + b


# --- test vectors ---------------------------------------------------------------------------

def test_vector_1_byte_exact() -> None:
    tok = vector_1_token()
    assert tok.pack_msg() == VECTOR_1_MSG
    assert tok.serialize() == VECTOR_1


def test_vector_2_login_byte_exact() -> None:
    tok = AccessToken(APP_ID, APP_KEY, "", "user_1")
    tok.nonce = 1
    tok.issued_at = 1700000000
    tok.expire_time(1700086400)
    tok.add_privilege(Privilege.PUBLISH_STREAM, 1700086400)
    tok.add_privilege(Privilege.SUBSCRIBE_STREAM, 1700086400)
    assert tok.serialize() == VECTOR_2


def test_mint_login_token_matches_layout() -> None:
    tok = parse(mint_login_token(APP_ID, APP_KEY, "user_1", lifetime_s=86400, now=1700000000))
    assert tok.room_id == "" and tok.user_id == "user_1"
    assert tok.issued_at == 1700000000 and tok.expire_at == 1700086400
    assert tok.privileges == {k: 1700086400 for k in range(5)}
    assert 1 <= tok.nonce <= 99999999
    tok.nonce = 1  # with the vector's nonce it is exactly vector 2
    tok.app_key = APP_KEY
    assert tok.serialize() == VECTOR_2


def test_parse_vector_fields() -> None:
    tok = parse(VECTOR_1)
    assert tok.app_id == APP_ID and tok.app_key == ""
    assert (tok.room_id, tok.user_id) == ("new room", "new user id")
    assert (tok.nonce, tok.issued_at, tok.expire_at) == (12345678, 1700000000, 1700003600)
    assert tok.privileges == {0: 1700003600, 1: 1700003600, 2: 1700003600,
                              3: 1700003600, 4: 0}
    assert tok.signature == VECTOR_1_SIG


def test_parse_serialize_round_trip() -> None:
    for raw in (VECTOR_1, VECTOR_2):
        assert parse(raw).serialize() == raw  # re-emits parsed signature
        tok = parse(raw)
        tok.app_key = APP_KEY  # re-signs
        assert tok.serialize() == raw


# --- verify ---------------------------------------------------------------------------------

def test_verify_right_and_wrong_key() -> None:
    tok = parse(VECTOR_1)
    assert tok.verify(APP_KEY, now=1700000001)
    assert not tok.verify("wrong key", now=1700000001)
    assert not tok.verify("", now=1700000001)


def test_verify_expiry_boundary() -> None:
    tok = parse(VECTOR_1)
    assert tok.verify(APP_KEY, now=1700003600)
    assert not tok.verify(APP_KEY, now=1700003601)


def test_verify_never_expiring_and_default_now() -> None:
    tok = AccessToken(APP_ID, APP_KEY, "room", "u")
    tok.add_privilege(Privilege.SUBSCRIBE_STREAM, 0)
    parsed = parse(tok.serialize())
    assert parsed.expire_at == 0
    assert parsed.verify(APP_KEY, now=2**32 - 1)
    assert parsed.verify(APP_KEY)


def test_verify_unparsed_token_uses_own_key() -> None:
    tok = vector_1_token()
    assert tok.verify(APP_KEY, now=1700000000)
    assert not tok.verify("other", now=1700000000)


def test_expired_minted_token() -> None:
    raw = mint_login_token(APP_ID, APP_KEY, "u", lifetime_s=10, now=1000)
    assert parse(raw).verify(APP_KEY, now=1010)
    assert not parse(raw).verify(APP_KEY, now=1011)


def test_tampered_byte_fails_verify() -> None:
    content = bytearray(base64.b64decode(VECTOR_1[27:]))
    for pos in (2, 10, 20, 30):  # nonce, issued_at, room_id, user_id bytes inside msg
        t = bytearray(content)
        t[pos] ^= 0x01
        tampered = parse(make_token(bytes(t)))
        assert not tampered.verify(APP_KEY, now=1700000000)
    t = bytearray(content)
    t[-1] ^= 0x80  # signature byte
    assert not parse(make_token(bytes(t))).verify(APP_KEY, now=1700000000)


def test_modified_field_after_parse_fails_verify() -> None:
    tok = parse(VECTOR_1)
    tok.user_id = "someone else"
    assert not tok.verify(APP_KEY, now=1700000000)


# --- privileges -----------------------------------------------------------------------------

def test_publish_stream_sets_sub_privileges() -> None:
    tok = AccessToken(APP_ID, APP_KEY, "", "u")
    tok.add_privilege(Privilege.PUBLISH_STREAM, 42)
    assert tok.privileges == {0: 42, 1: 42, 2: 42, 3: 42}
    tok2 = AccessToken(APP_ID, APP_KEY, "", "u")
    tok2.add_privilege(Privilege.PUBLISH_AUDIO_STREAM, 7)
    assert tok2.privileges == {1: 7}


def test_privileges_sorted_in_output() -> None:
    a = AccessToken(APP_ID, APP_KEY, "r", "u")
    b = AccessToken(APP_ID, APP_KEY, "r", "u")
    for t in (a, b):
        t.nonce, t.issued_at = 5, 100
    a.add_privilege(Privilege.SUBSCRIBE_STREAM, 9)
    a.add_privilege(Privilege.PUBLISH_STREAM, 8)
    b.add_privilege(Privilege.PUBLISH_STREAM, 8)
    b.add_privilege(Privilege.SUBSCRIBE_STREAM, 9)
    assert list(a.privileges) != list(b.privileges)
    assert a.serialize() == b.serialize()
    tail = a.pack_msg()[-(2 + 5 * 6):]
    keys = [struct.unpack_from("<H", tail, 2 + i * 6)[0] for i in range(5)]
    assert keys == [0, 1, 2, 3, 4]
    assert list(parse(a.serialize()).privileges) == [0, 1, 2, 3, 4]


def test_privilege_values() -> None:
    assert [int(p) for p in Privilege] == [0, 1, 2, 3, 4]
    assert Privilege.PUBLISH_STREAM.name == "PUBLISH_STREAM"
    assert int(Privilege.SUBSCRIBE_STREAM) == 4


# --- unicode ------------------------------------------------------------------------------

@pytest.mark.parametrize("uid", ["用户_1", "Ünïcødé", "emoji-😀", "a" * 128])
def test_unicode_user_and_room_ids(uid: str) -> None:
    tok = AccessToken(APP_ID, APP_KEY, "房间 1", uid)
    tok.add_privilege(Privilege.SUBSCRIBE_STREAM, 0)
    raw = tok.serialize()
    back = parse(raw)
    assert (back.user_id, back.room_id) == (uid, "房间 1")
    assert back.verify(APP_KEY)
    assert back.serialize() == raw
    assert blob(uid.encode("utf-8")) in base64.b64decode(raw[27:])


# --- errors ------------------------------------------------------------------------------

def test_hand_built_content_matches_vector() -> None:
    assert make_token(blob(VECTOR_1_MSG) + blob(VECTOR_1_SIG)) == VECTOR_1


@pytest.mark.parametrize("raw, match", [
    ("002" + VECTOR_1[3:], "unsupported token version"),
    ("", "unsupported token version"),
    ("abc", "unsupported token version"),
    ("001", "too short"),
    ("001" + APP_ID, "too short"),
    ("001" + APP_ID + "!!!!", "not valid base64"),
    ("001" + APP_ID + "QwBOYbw", "not valid base64"),  # bad padding
    (make_token(b"\x05"), "truncated token content"),
    (make_token(blob(VECTOR_1_MSG)), "truncated token content"),  # signature missing
    (make_token(blob(VECTOR_1_MSG) + blob(VECTOR_1_SIG) + b"\x00"), "overlong token content"),
    (make_token(blob(VECTOR_1_MSG[:-3]) + blob(VECTOR_1_SIG)), "truncated token message"),
    (make_token(blob(VECTOR_1_MSG + b"xx") + blob(VECTOR_1_SIG)), "overlong token message"),
    (make_token(blob(VECTOR_1_MSG) + blob(VECTOR_1_SIG[:31])), "wrong signature length"),
    (make_token(blob(VECTOR_1_MSG) + blob(b"")), "wrong signature length"),
    (make_token(blob(struct.pack("<III", 1, 2, 3) + blob(b"\xff") + blob(b"u") + b"\0\0")
                + blob(VECTOR_1_SIG)), "room_id is not valid UTF-8"),
])
def test_parse_errors(raw: str, match: str) -> None:
    with pytest.raises(TokenError, match=match):
        parse(raw)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(TokenError, match="must be a str"):
        parse(VECTOR_1.encode())  # type: ignore[arg-type]


def test_token_error_is_value_error() -> None:
    assert issubclass(TokenError, ValueError)


def test_parse_strips_whitespace() -> None:
    assert parse("  " + VECTOR_1 + "\n").serialize() == VECTOR_1


@pytest.mark.parametrize("attr, value, match", [
    ("app_id", "short", "exactly 24 ASCII characters"),
    ("app_key", "", "app_key must not be empty"),
    ("nonce", -1, "nonce out of range"),
    ("expire_at", 2**32, "expire_at out of range"),
    ("user_id", "x" * 70000, "length of user_id out of range"),
])
def test_serialize_errors(attr: str, value: object, match: str) -> None:
    tok = vector_1_token()
    setattr(tok, attr, value)
    with pytest.raises(TokenError, match=match):
        tok.serialize()


def test_mint_errors() -> None:
    with pytest.raises(TokenError, match="user_id"):
        mint_login_token(APP_ID, APP_KEY, "")
    with pytest.raises(TokenError, match="lifetime"):
        mint_login_token(APP_ID, APP_KEY, "u", lifetime_s=0)


def test_random_nonce_and_issued_at() -> None:
    nonces = {AccessToken(APP_ID, APP_KEY, "", "u").nonce for _ in range(50)}
    assert all(1 <= n <= 99999999 for n in nonces) and len(nonces) > 1
    assert AccessToken(APP_ID, APP_KEY, "", "u").issued_at > 1700000000


# --- CLI --------------------------------------------------------------------------------

def test_cli_mint_then_parse_verify(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--app-id", APP_ID, "--app-key", APP_KEY, "--uid", "用户",
                 "--lifetime", "600"]) == 0
    raw = capsys.readouterr().out.strip()
    tok = parse(raw)
    assert tok.user_id == "用户" and tok.room_id == ""
    assert tok.expire_at - tok.issued_at == 600

    assert main(["--parse", raw, "--app-key", APP_KEY]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is True and info["expired"] is False
    assert info["user_id"] == "用户" and info["app_id"] == APP_ID
    assert info["privileges"] == {p.name: tok.expire_at for p in Privilege}
    assert info["signature"] == (tok.signature or b"").hex()

    assert main(["--parse", raw, "--app-key", "wrong"]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_cli_room_and_parse_without_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--app-id", APP_ID, "--app-key", APP_KEY, "--uid", "u", "--room", "r1"]) == 0
    raw = capsys.readouterr().out.strip()
    assert main(["--parse", raw]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["room_id"] == "r1" and "verified" not in info
    assert info["expire_at"] - info["issued_at"] == 86400


def test_cli_expired_vector(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--parse", VECTOR_1, "--app-key", APP_KEY]) == 1  # expired in 2023
    info = json.loads(capsys.readouterr().out)
    assert info["expired"] is True and info["verified"] is False
    assert info["privileges"]["SUBSCRIBE_STREAM"] == 0


@pytest.mark.parametrize("argv, match", [
    (["--parse", "garbage"], "invalid token: unsupported token version"),
    (["--parse", "001" + APP_ID + "@@"], "invalid token: .*base64"),
    (["--app-id", APP_ID, "--uid", "u"], "missing required option.*--app-key"),
    ([], "missing required option"),
    (["--app-id", "abc", "--app-key", "k", "--uid", "u"], "exactly 24 ASCII characters"),
    (["--app-id", APP_ID, "--app-key", "k", "--uid", "u", "--lifetime", "0"], "lifetime"),
    (["--app-id", APP_ID, "--app-key", "k", "--uid", "u", "--lifetime", "x"], "invalid int"),
    (["--parse", VECTOR_1, "--uid", "u"], "cannot be combined"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_input_exit_2(argv: list[str], match: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert re.search(match, captured.err)


def test_cli_help_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "rts-token" in capsys.readouterr().out
