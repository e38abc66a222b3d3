"""Server configuration: the apps it serves and its named limits.

Every limit has a name, a default and a unit; ``rts-server --limit NAME=VALUE`` and
``serve_in_thread(..., limits={NAME: VALUE})`` set them through :meth:`Limits.from_mapping`.
Sizes and protective limits are on by default. The rate limits (``p2p_qps``, ``room_qps``,
``server_qps``) are Volcengine's cloud quotas (reference §7) and are off (0) unless configured;
the recommended setting that mirrors the cloud service is::

    --limit p2p_qps=100 --limit room_qps=65 --limit server_qps=20 --limit push_qps=500
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ..protocol import FRAME_OVERHEAD, MAX_PAYLOAD, default_max_frame
from ..token import APP_ID_LENGTH

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Limits", "ServerConfig"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8970


@dataclass(frozen=True)
class Limits:
    """The server's named limits (sizes in bytes, times in seconds, rates per second per session).

    Threading: immutable, safe to share between threads.
    """

    #: Largest WebSocket message (one frame) accepted from a client; larger ones close the
    #: connection with CloseCode.FRAME_TOO_LARGE. Must leave room for ``max_payload`` plus the
    #: frame's header fields (FRAME_OVERHEAD); by default derived from ``max_payload``.
    max_frame: int = default_max_frame()
    #: Largest message payload (UTF-8 bytes for text); larger SENDs get RESULT 103.
    max_payload: int = MAX_PAYLOAD
    #: A connection that has not logged in this long after opening is closed (LOGIN_TIMEOUT).
    login_timeout: float = 10.0
    #: Login: a token issued (its ``issued_at``) more than this many seconds in the future, by
    #: the server's clock, is refused as not valid yet (-1000); tolerates clocks that disagree.
    token_clock_skew: float = 300.0
    #: A reliable peer message not acknowledged by the receiver's SDK in this time gets
    #: RESULT 1 (TIMEOUT) and is not delivered afterwards if still queued.
    message_timeout: float = 10.0
    #: Frames queued per connection before producers (senders) are paced; also the most reliable
    #: frames a receiver may leave unacknowledged.
    send_queue_frames: int = 4096
    #: A connection whose queue stays full this long is closed (SLOW_CONSUMER), so one stuck
    #: reader cannot stall its senders for ever.
    slow_consumer_grace: float = 10.0
    #: How long a logged-in session outlives its WebSocket, waiting for the client to resume it
    #: (nothing lost: messages for it are kept, its rooms and presence stay); 0 = no resume.
    resume_window: float = 30.0
    #: Open WebSocket connections per client IP address; more are closed with REJECTED.
    max_connections_per_ip: int = 10000
    #: Logged-in sessions per app; further logins fail with -1001 (LOGIN_FAILED).
    max_sessions_per_app: int = 100000
    #: Peer-to-peer messages per second per session (token bucket, excess: RESULT 5
    #: EXCEED_QPS); 0 = off. Recommended (the cloud quota of reference §7): 100.
    p2p_qps: float = 0.0
    #: Room messages per second per session; 0 = off. Recommended (reference §7): 65.
    room_qps: float = 0.0
    #: Messages to the app server per second per session; 0 = off. Recommended (reference §7): 20.
    server_qps: float = 0.0
    #: Room messages per second per room, all senders together; 0 = off. Recommended (the
    #: cloud quota of reference §7): 100 (80 in rooms of 500 or more users).
    room_total_qps: float = 0.0
    #: Above this many members a room stops per-user join/leave notices and warns every member
    #: once with ROOM_STATE -2013 (reference §3.6).
    room_notify_limit: int = 500
    #: Rooms one session may be in at once; further joins fail with -1001.
    max_rooms_per_session: int = 1000
    #: Seconds an application server has to answer a forwarded message (connect + answer);
    #: later it counts as unreachable: RESULT 17 (E2BS_SEND_FAILED).
    app_server_timeout: float = 5.0
    #: HTTP requests to application servers in flight at once, per app; further messages wait
    #: for a free slot, and a session with this many messages waiting is paced (read no faster).
    app_server_concurrency: int = 64
    #: Push API: how far (seconds) a request's ``X-Date`` may be from the server's clock; a
    #: signature is also remembered this long to refuse replays.
    push_clock_skew: float = 300.0
    #: Push API calls per second per app (SendUnicast + SendBroadcast); 0 = off. Recommended
    #: (the cloud quota of reference §5): 500.
    push_qps: float = 0.0
    #: Cluster mode (``--redis``): how often a node renews its heartbeat key in Redis.
    node_heartbeat: float = 1.0
    #: Cluster mode: a node whose heartbeat is this old is dead; another node then removes its
    #: users from presence and rooms (the others see them leave, reason DROPPED).
    node_timeout: float = 5.0
    #: Cluster mode: 1 = a session can be resumed on any node (after its node died, or when
    #: the client comes back through another node): every frame to a client is first written
    #: to Redis with what the client has not acknowledged (docs/deployment.md §3); 0 = off
    #: (a client that lands on another node logs in again there).
    cluster_resume: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("limit %s must be a number, got %r" % (f.name, value))
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError("limit %s must be finite, got %r" % (f.name, value))
            if f.name.endswith("_qps") or f.name in ("resume_window", "cluster_resume"):
                if value < 0:
                    raise ValueError("limit %s must be >= 0 (0 = off), got %r" % (f.name, value))
            elif value <= 0:
                raise ValueError("limit %s must be > 0, got %r" % (f.name, value))
        if self.max_frame < self.max_payload + FRAME_OVERHEAD:
            raise ValueError("limit max_frame (%d) must be at least max_payload + %d (%d)"
                             % (self.max_frame, FRAME_OVERHEAD, self.max_payload + FRAME_OVERHEAD))

    @classmethod
    def names(cls) -> Dict[str, type]:
        """Each limit's name and type (int or float)."""
        defaults = cls()
        return {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(cls)}

    @classmethod
    def from_mapping(cls, values: Optional[Mapping[str, Any]] = None) -> Limits:
        """Limits from ``{name: value}``; values may be numbers or strings (from the CLI).

        Unset limits keep their defaults, except that ``max_frame`` follows ``max_payload``
        when only the latter is given. Raises ValueError for an unknown name or a bad value.
        """
        types = cls.names()
        parsed: Dict[str, Any] = {}
        for name, raw in (values or {}).items():
            kind = types.get(name)
            if kind is None:
                raise ValueError("unknown limit %r (known: %s)" % (name, ", ".join(sorted(types))))
            parsed[name] = _parse(name, raw, kind)
        if "max_payload" in parsed and "max_frame" not in parsed:
            parsed["max_frame"] = default_max_frame(parsed["max_payload"])
        return cls(**parsed)


def _parse(name: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, bool):
        raise ValueError("limit %s must be a number, got %r" % (name, raw))
    if isinstance(raw, str):
        text = raw.strip()
        try:
            value: Any = int(text) if kind is int else float(text)
        except ValueError:
            raise ValueError("limit %s must be %s, got %r"
                             % (name, "an integer" if kind is int else "a number", raw)) from None
    elif isinstance(raw, (int, float)):
        value = raw
    else:
        raise ValueError("limit %s must be a number, got %r" % (name, raw))
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("limit %s must be an integer, got %r" % (name, raw))
            value = int(value)
    else:
        value = float(value)
    return value


@dataclass(frozen=True)
class ServerConfig:
    """What one server serves: ``apps`` maps each app id (24 characters) to its app key.

    Threading: immutable, safe to share between threads.
    """

    apps: Dict[str, str]
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    limits: Limits = field(default_factory=Limits)
    #: Push API credentials: access key id -> secret access key (none: the push API refuses all).
    access_keys: Dict[str, str] = field(default_factory=dict)
    #: Cluster mode: ``redis://HOST:PORT/DB`` of the Redis shared by every node (None: one node,
    #: nothing needs Redis).
    redis_url: Optional[str] = None
    #: TLS: (certificate chain file, private key file), both PEM; the port then serves
    #: ``wss://`` and ``https://`` only (None: plain ``ws://`` and ``http://``).
    tls: Optional[Tuple[str, str]] = None
    #: Push API: the apps each listed access key may push to (a key not listed here may push to
    #: every app of this server).
    access_key_apps: Dict[str, Tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.apps:
            raise ValueError("at least one app (app id and app key) is needed")
        for app_id, app_key in self.apps.items():
            if not isinstance(app_id, str) or len(app_id) != APP_ID_LENGTH or not app_id.isascii():
                raise ValueError("app id must be exactly %d ASCII characters, got %r"
                                 % (APP_ID_LENGTH, app_id))
            if not isinstance(app_key, str) or not app_key:
                raise ValueError("app key of %s must be a non-empty string" % app_id)
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in [0, 65535], got %r" % (self.port,))
        for ak, sk in self.access_keys.items():
            if not isinstance(ak, str) or not ak or not ak.isascii() or "/" in ak or ak != ak.strip():
                raise ValueError("access key id must be non-empty ASCII without '/' or spaces, "
                                 "got %r" % (ak,))
            if not isinstance(sk, str) or not sk:
                raise ValueError("secret key of access key %s must be a non-empty string" % ak)
        if self.redis_url is not None and not (
                isinstance(self.redis_url, str)
                and self.redis_url.startswith(("redis://", "rediss://", "unix://"))):
            raise ValueError("redis url must be redis://HOST:PORT/DB (or rediss://, unix://), "
                             "got %r" % (self.redis_url,))
        if self.tls is not None and not (
                isinstance(self.tls, tuple) and len(self.tls) == 2
                and all(isinstance(f, str) and f for f in self.tls)):
            raise ValueError("tls must be (certificate file, key file), got %r" % (self.tls,))
        for ak, scope in self.access_key_apps.items():
            if ak not in self.access_keys:
                raise ValueError("access key %s is limited to apps but is not an access key" % ak)
            for app_id in scope:
                if app_id not in self.apps:
                    raise ValueError("access key %s is limited to app %s, which is not served"
                                     % (ak, app_id))
