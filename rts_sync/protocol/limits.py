"""Protocol constants and the identifier rules shared by the SDK and the server.

Sans-IO: no sockets, threads, clocks or logging here.
"""

from __future__ import annotations

import functools
import re
from enum import IntEnum

__all__ = [
    "FRAME_OVERHEAD",
    "ID_PATTERN",
    "MAX_ID_LENGTH",
    "MAX_PAYLOAD",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "CloseCode",
    "default_max_frame",
    "is_valid_id",
    "payload_size",
]

#: The protocol version this code speaks (negotiated in HELLO / WELCOME).
PROTOCOL_VERSION = 1
#: Every version this code can speak, newest first.
SUPPORTED_VERSIONS = (1,)

#: Largest message payload: 64 KB = 65,536 bytes (UTF-8 bytes for text), text and binary alike.
MAX_PAYLOAD = 65536
#: Room for a frame's header fields (type, sequence, uids, room id) around a full payload.
FRAME_OVERHEAD = 1024
#: Longest user, room and business id.
MAX_ID_LENGTH = 128
#: The seed's rule for user ids, room ids, business ids and OpenAPI From/To.
ID_PATTERN = re.compile(r"[a-zA-Z0-9_@\-.]{1,128}")


def default_max_frame(max_payload: int = MAX_PAYLOAD) -> int:
    """The frame size limit that fits a ``max_payload`` message with all its header fields."""
    return max_payload + FRAME_OVERHEAD


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a str matching ``[a-zA-Z0-9_@\\-.]{1,128}``."""
    return isinstance(value, str) and _valid_str_id(value)


@functools.lru_cache(maxsize=4096)
def _valid_str_id(value: str) -> bool:
    # Cached: the same few peer and room ids are checked for every message.
    return ID_PATTERN.fullmatch(value) is not None


def payload_size(payload: str | bytes) -> int:
    """Size of a payload as the 64 KB limit counts it (UTF-8 bytes for text)."""
    if isinstance(payload, str):
        # ASCII text is its own UTF-8; other text is encoded (strictly: a lone surrogate raises
        # UnicodeEncodeError, a ValueError, since it cannot be sent as CBOR text either).
        return len(payload) if payload.isascii() else len(payload.encode("utf-8"))
    return len(payload)


class CloseCode(IntEnum):
    """Why a connection is closed: in CLOSE frames and as the WebSocket close code."""

    #: Normal close (logout, destroy, server shutdown of an idle session).
    NORMAL = 1000
    #: The server is going away (shutdown or restart); clients may reconnect elsewhere.
    GOING_AWAY = 1001
    #: A frame that is not valid CBOR or not a valid frame of this protocol.
    PROTOCOL_ERROR = 4400
    #: A frame that needs a logged-in session arrived before login.
    UNAUTHENTICATED = 4401
    #: No login within the login timeout.
    LOGIN_TIMEOUT = 4408
    #: The same uid logged in elsewhere (the seed's DuplicateLogin).
    DUPLICATE_LOGIN = 4409
    #: A frame larger than the negotiated frame limit.
    FRAME_TOO_LARGE = 4413
    #: No protocol version in common.
    UNSUPPORTED_VERSION = 4426
    #: The peer stopped reading for longer than the grace period (send buffer full).
    SLOW_CONSUMER = 4429
    #: Unknown app id, or too many connections or sessions.
    REJECTED = 4403
    #: An internal server error; the client may reconnect.
    INTERNAL_ERROR = 4500
