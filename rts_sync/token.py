"""Volcengine RTC/RTS AccessToken (version "001"): mint, parse and verify.

Wire format, compatible with Volcengine's official generators (all integers
little-endian)::

    token   = "001" || app_id (24 chars) || base64_std_padded(content)
    content = u16(len(msg)) || msg || u16(len(sig)) || sig        # sig: 32 bytes
    msg     = u32(nonce) || u32(issued_at) || u32(expire_at)
              || u16(len(room_id_utf8)) || room_id_utf8
              || u16(len(user_id_utf8)) || user_id_utf8
              || u16(n) || n * (u16(privilege) || u32(privilege_expire_at))
    sig     = HMAC-SHA256(key=app_key.encode("utf-8"), data=msg)

Privileges are written sorted by key. ``expire_at == 0`` means the token
never expires; privilege expiry 0 likewise means "no expiry". A login (RTS)
token uses ``room_id == ""``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import secrets
import sys
import time
from enum import IntEnum

__all__ = ["APP_ID_LENGTH", "VERSION", "AccessToken", "Privilege", "TokenError", "main",
           "mint_login_token", "parse"]

VERSION = "001"
APP_ID_LENGTH = 24
_SIG_LENGTH = 32


class TokenError(ValueError):
    """A token could not be built or parsed."""


class Privilege(IntEnum):
    PUBLISH_STREAM = 0
    PUBLISH_AUDIO_STREAM = 1
    PUBLISH_VIDEO_STREAM = 2
    PUBLISH_DATA_STREAM = 3
    SUBSCRIBE_STREAM = 4


def _uint(size: int, value: int, what: str) -> bytes:
    if not isinstance(value, int) or not 0 <= value < 1 << (8 * size):
        raise TokenError(f"{what} out of range for u{8 * size}: {value!r}")
    return value.to_bytes(size, "little")


def _blob(data: bytes, what: str) -> bytes:
    return _uint(2, len(data), f"length of {what}") + data


class _Reader:
    def __init__(self, buf: bytes, what: str) -> None:
        self.buf = buf
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise TokenError(f"truncated {self.what}: need {n} byte(s) at offset "
                             f"{self.pos}, only {len(self.buf) - self.pos} left")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def blob(self) -> bytes:
        return self.take(self.u16())

    def text(self, field: str) -> str:
        try:
            return self.blob().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TokenError(f"{field} is not valid UTF-8: {exc}") from None

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise TokenError(f"overlong {self.what}: {len(self.buf) - self.pos} "
                             "unexpected trailing byte(s)")


class AccessToken:
    """An RTC/RTS access token. Build, :meth:`serialize`; or :func:`parse`, :meth:`verify`."""

    def __init__(self, app_id: str, app_key: str, room_id: str, user_id: str) -> None:
        self.app_id = app_id
        self.app_key = app_key
        self.room_id = room_id
        self.user_id = user_id
        self.nonce: int = secrets.randbelow(99999999) + 1
        self.issued_at: int = int(time.time())
        self.expire_at: int = 0
        self.privileges: dict[int, int] = {}
        #: Raw signature of a parsed token (None for a token built locally).
        self.signature: bytes | None = None

    def add_privilege(self, privilege: int, expire_ts: int) -> None:
        """Grant ``privilege`` until ``expire_ts`` (0 = none); PUBLISH_STREAM also grants 1-3."""
        self.privileges[int(privilege)] = int(expire_ts)
        if privilege == Privilege.PUBLISH_STREAM:
            for sub in (Privilege.PUBLISH_AUDIO_STREAM, Privilege.PUBLISH_VIDEO_STREAM,
                        Privilege.PUBLISH_DATA_STREAM):
                self.privileges[int(sub)] = int(expire_ts)

    def expire_time(self, expire_ts: int) -> None:
        """Set the absolute token expiry (Unix seconds; 0 = never)."""
        self.expire_at = int(expire_ts)

    def pack_msg(self) -> bytes:
        """The signed ``msg`` part of the token."""
        out = [_uint(4, self.nonce, "nonce"), _uint(4, self.issued_at, "issued_at"),
               _uint(4, self.expire_at, "expire_at"),
               _blob(self.room_id.encode("utf-8"), "room_id"),
               _blob(self.user_id.encode("utf-8"), "user_id"),
               _uint(2, len(self.privileges), "privilege count")]
        for key in sorted(self.privileges):
            out.append(_uint(2, key, "privilege key"))
            out.append(_uint(4, self.privileges[key], f"expiry of privilege {key}"))
        return b"".join(out)

    def _sign(self, app_key: str, msg: bytes) -> bytes:
        return hmac.new(app_key.encode("utf-8"), msg, hashlib.sha256).digest()

    def serialize(self) -> str:
        """Return the token string, signed with ``app_key``.

        A parsed token (``app_key == ""``) re-emits its original signature, so
        ``parse(t).serialize() == t`` for well-formed tokens.
        """
        if len(self.app_id) != APP_ID_LENGTH or not self.app_id.isascii():
            raise TokenError(f"app_id must be exactly {APP_ID_LENGTH} ASCII characters, "
                             f"got {len(self.app_id)}: {self.app_id!r}")
        msg = self.pack_msg()
        if self.app_key:
            sig = self._sign(self.app_key, msg)
        elif self.signature is not None:
            sig = self.signature
        else:
            raise TokenError("app_key must not be empty")
        content = _blob(msg, "msg") + _blob(sig, "signature")
        return VERSION + self.app_id + base64.b64encode(content).decode("ascii")

    def verify(self, app_key: str, now: int | None = None) -> bool:
        """True if the token is unexpired (at ``now``) and signed with ``app_key``."""
        if now is None:
            now = int(time.time())
        if self.expire_at > 0 and now > self.expire_at:
            return False
        expected = self.signature
        if expected is None:
            if not self.app_key:
                return False
            expected = self._sign(self.app_key, self.pack_msg())
        return hmac.compare_digest(self._sign(app_key, self.pack_msg()), expected)

    def __repr__(self) -> str:
        return (f"AccessToken(app_id={self.app_id!r}, room_id={self.room_id!r}, "
                f"user_id={self.user_id!r}, nonce={self.nonce}, issued_at={self.issued_at}, "
                f"expire_at={self.expire_at}, privileges={self.privileges!r})")


def parse(token: str) -> AccessToken:
    """Decode a token string (without checking its signature; see :meth:`AccessToken.verify`)."""
    if not isinstance(token, str):
        raise TokenError(f"token must be a str, not {type(token).__name__}")
    token = token.strip()
    if not token.startswith(VERSION):
        raise TokenError(f"unsupported token version {token[:len(VERSION)]!r} "
                         f"(expected {VERSION!r})")
    body_start = len(VERSION) + APP_ID_LENGTH
    if len(token) <= body_start:
        raise TokenError(f"token too short: {len(token)} characters, need more than "
                         f"{body_start} (version + {APP_ID_LENGTH}-char app id + content)")
    try:
        content = base64.b64decode(token[body_start:], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"token content is not valid base64: {exc}") from None
    outer = _Reader(content, "token content")
    msg = outer.blob()
    sig = outer.blob()
    outer.end()
    if len(sig) != _SIG_LENGTH:
        raise TokenError(f"wrong signature length: {len(sig)} bytes (expected {_SIG_LENGTH})")
    r = _Reader(msg, "token message")
    tok = AccessToken(token[len(VERSION):body_start], "", "", "")
    tok.nonce = r.u32()
    tok.issued_at = r.u32()
    tok.expire_at = r.u32()
    tok.room_id = r.text("room_id")
    tok.user_id = r.text("user_id")
    tok.privileges = {}
    for _ in range(r.u16()):
        key = r.u16()
        tok.privileges[key] = r.u32()
    r.end()
    tok.signature = sig
    return tok


def mint_login_token(app_id: str, app_key: str, user_id: str, lifetime_s: int = 86400,
                     now: int | None = None) -> str:
    """Mint an RTS login token (room ``""``) valid for ``lifetime_s`` seconds."""
    return _mint(app_id, app_key, "", user_id, lifetime_s, now)


def _mint(app_id: str, app_key: str, room_id: str, user_id: str, lifetime_s: int,
          now: int | None) -> str:
    if not user_id:
        raise TokenError("user_id must not be empty")
    if lifetime_s <= 0:
        raise TokenError(f"lifetime must be a positive number of seconds, got {lifetime_s}")
    issued = int(time.time()) if now is None else int(now)
    expire = issued + int(lifetime_s)
    tok = AccessToken(app_id, app_key, room_id, user_id)
    tok.issued_at = issued
    tok.expire_time(expire)
    tok.add_privilege(Privilege.PUBLISH_STREAM, expire)
    tok.add_privilege(Privilege.SUBSCRIBE_STREAM, expire)
    return tok.serialize()


def _describe(tok: AccessToken, now: int) -> dict[str, object]:
    known = {int(p): p.name for p in Privilege}
    return {
        "version": VERSION, "app_id": tok.app_id, "room_id": tok.room_id,
        "user_id": tok.user_id, "nonce": tok.nonce, "issued_at": tok.issued_at,
        "expire_at": tok.expire_at, "expired": 0 < tok.expire_at < now,
        "privileges": {known.get(k, str(k)): tok.privileges[k] for k in sorted(tok.privileges)},
        "signature": tok.signature.hex() if tok.signature is not None else None,
    }


def main(argv: list[str] | None = None) -> int:
    """Console script ``rts-token``: mint a token, or ``--parse`` one."""
    p = argparse.ArgumentParser(
        prog="rts-token",
        description="Mint or inspect Volcengine RTC/RTS access tokens (version 001).")
    p.add_argument("--parse", metavar="TOKEN", help="decode TOKEN and print its fields as JSON")
    p.add_argument("--app-id", help=f"application id ({APP_ID_LENGTH} characters)")
    p.add_argument("--app-key", help="application key (with --parse: verify the signature)")
    p.add_argument("--uid", help="user id")
    p.add_argument("--room", default="", help='room id (default "": RTS login token)')
    p.add_argument("--lifetime", type=int, default=86400, metavar="SECONDS",
                   help="validity in seconds (default 86400)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:  # usage errors -> 2, --help -> 0
        return exc.code if isinstance(exc.code, int) else 2

    def fail(msg: str) -> int:
        print(f"rts-token: error: {msg}", file=sys.stderr)
        return 2

    now = int(time.time())
    if args.parse is not None:
        if args.app_id is not None or args.uid is not None:
            return fail("--parse cannot be combined with --app-id/--uid")
        try:
            tok = parse(args.parse)
        except TokenError as exc:
            return fail(f"invalid token: {exc}")
        info = _describe(tok, now)
        ok = True
        if args.app_key is not None:
            ok = tok.verify(args.app_key, now=now)
            info["verified"] = ok
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0 if ok else 1

    missing = [flag for flag, v in (("--app-id", args.app_id), ("--app-key", args.app_key),
                                    ("--uid", args.uid)) if not v]
    if missing:
        return fail(f"missing required option(s): {', '.join(missing)} (or use --parse TOKEN)")
    try:
        print(_mint(args.app_id, args.app_key, args.room, args.uid, args.lifetime, now))
    except TokenError as exc:
        return fail(str(exc))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
