"""The RTS API's codes as :class:`enum.IntEnum` types, with the original numeric values.

Every enum keeps the numbers of Volcengine's RTS SDK, so a value compares equal to the
plain ``int`` the original API documents (``LoginErrorCode.INVALID_TOKEN == -1000``).
Names drop the platform prefixes (``ByteRTC``, ``kRts``, ``LOGIN_ERROR_CODE_``) and
members are UPPER_SNAKE without the type's prefix.

Where each enum comes from (sections of ``reference/volcengine-rts-api.md``):

===============================  =====================================================
Enum                             Source
===============================  =====================================================
``LoginErrorCode``               §3.1 LoginErrorCode (``on_login_result``)
``LoginType``                    §3.1 LoginType
``LogoutReason``                 §3.1 LogoutReason (``on_logout``)
``UserMessageSendResult``        §3.2 UserMessageSendResult (``on_message_send_result``,
                                 ``on_server_message_send_result``)
``RoomMessageSendResult``        §3.2 RoomMessageSendResult (``on_room_message_send_result``)
``UserOnlineStatus``             §3.3 UserOnlineStatus (``on_get_peer_online_status``)
``ConnectionState``              §3.4 ConnectionState (``on_connection_state_changed``)
``ConnectionStateChangeReason``  **our addition**: §2.1/§3.4 say the seed's ``reason`` is
                                 "currently not enabled, fixed to -1"; we give real reasons
``UserOfflineReason``            §3.5 UserOfflineReason (``on_user_leave``)
``RoomErrorCode``                §3.6 RtsErrorCode, plus ``SUCCESS = 0``
                                 (``on_room_state_changed``, ``on_create_room_state_changed``)
``RoomWarningCode``              §3.6 RtsWarningCode
``JoinRoomType``                 §3.6 JoinRoomType (``join_type`` in ``extra_info``)
``NetworkType``                  §3.7 NetworkType (``on_network_type_changed``)
``LocalProxyType``               §3.8 LocalProxyType
``LocalProxyState``              §3.8 LocalProxyState (``on_local_proxy_state_changed``)
``LocalProxyError``              §3.8 LocalProxyError (``on_local_proxy_state_changed``)
``MessageConfig``                §3.10 MessageConfig (``send_message`` and friends)
``BusinessCheckCode``            §3.11 BusinessCheckCode (``set_business_id``), plus
                                 ``SUCCESS = 0`` from §1
``ReturnStatus``                 §1 the hidden ``RtsReturnStatus``
===============================  =====================================================

Threading: enum members are immutable singletons, safe to share between threads.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "BusinessCheckCode",
    "ConnectionState",
    "ConnectionStateChangeReason",
    "JoinRoomType",
    "LocalProxyError",
    "LocalProxyState",
    "LocalProxyType",
    "LoginErrorCode",
    "LoginType",
    "LogoutReason",
    "MessageConfig",
    "NetworkType",
    "ReturnStatus",
    "RoomErrorCode",
    "RoomMessageSendResult",
    "RoomWarningCode",
    "UserMessageSendResult",
    "UserOfflineReason",
    "UserOnlineStatus",
]


class LoginErrorCode(IntEnum):
    """The ``error_code`` of ``on_login_result`` (reference §3.1).

    Threading: immutable, safe to share between threads.
    """

    #: Login succeeded.
    SUCCESS = 0
    #: The token is invalid or expired; get a new token and call ``update_login_token``
    #: (the SDK then logs in again by itself).
    INVALID_TOKEN = -1000
    #: Unknown login error; log in again.
    LOGIN_FAILED = -1001
    #: The uid passed to ``login`` is invalid.
    INVALID_USER_ID = -1002
    #: The server failed while logging in.
    SERVER_ERROR = -1003


class LoginType(IntEnum):
    """How a login happened (reference §3.1).

    Threading: immutable, safe to share between threads.
    """

    #: First login, from an explicit ``login`` call.
    FIRST_LOGIN = 0
    #: Automatic re-login by the SDK after a reconnect.
    RECONNECTED = 1


class LogoutReason(IntEnum):
    """The ``reason`` of ``on_logout`` (reference §3.1).

    Threading: immutable, safe to share between threads.
    """

    #: ``logout`` was called or the engine was destroyed.
    LOGOUT = 0
    #: Another client logged in with the same uid; this session was logged out.
    DUPLICATE_LOGIN = 1


class UserMessageSendResult(IntEnum):
    """The ``error`` of ``on_message_send_result`` and ``on_server_message_send_result``
    (reference §3.2).

    Threading: immutable, safe to share between threads.
    """

    #: The message was sent.
    SUCCESS = 0
    #: Timed out; the message was not sent.
    TIMEOUT = 1
    #: The channel is broken; the message was not sent.
    BROKEN = 2
    #: The receiver was not found.
    NO_RECEIVER = 3
    #: No relay path: the remote user is not logged in or not in the room.
    NO_RELAY_PATH = 4
    #: Over the QPS limit.
    EXCEED_QPS = 5
    #: The application server did not receive the message (app-server messages only).
    E2BS_SEND_FAILED = 17
    #: The application server received the message but its response failed, e.g. an
    #: HTTP status other than 200 (app-server messages only).
    E2BS_RETURN_FAILED = 18
    #: The sender is not in the room.
    NOT_JOIN = 100
    #: The connection is not initialized.
    INIT = 101
    #: There is no data channel.
    NO_CONNECTION = 102
    #: The message is larger than the maximum (64 KB).
    EXCEED_MAX_LENGTH = 103
    #: The receiver uid is empty.
    EMPTY_USER = 104
    #: The sender is not logged in.
    NOT_LOGIN = 105
    #: ``set_server_params`` was not called before sending to the application server.
    SERVER_PARAMS_NOT_SET = 106
    #: Unknown error.
    UNKNOWN = 1000


class RoomMessageSendResult(IntEnum):
    """The ``error`` of ``on_room_message_send_result`` (reference §3.2).

    Note that success is 200 here, not 0.

    Threading: immutable, safe to share between threads.
    """

    #: The message was sent.
    SUCCESS = 200
    #: Timed out; the message was not sent.
    TIMEOUT = 1
    #: The network is disconnected; the message was not sent.
    NETWORK_DISCONNECTED = 2
    #: Over the QPS limit.
    EXCEED_QPS = 5
    #: The sender has not joined the room.
    NOT_JOIN = 100
    #: The connection is not initialized.
    INIT = 101
    #: There is no data channel.
    NO_CONNECTION = 102
    #: The message is larger than the maximum (64 KB).
    EXCEED_MAX_LENGTH = 103
    #: Unknown error.
    UNKNOWN = 1000


class UserOnlineStatus(IntEnum):
    """The ``status`` of ``on_get_peer_online_status`` (reference §3.3).

    Threading: immutable, safe to share between threads.
    """

    #: The peer logged out or never logged in; no peer-to-peer messages possible.
    OFFLINE = 0
    #: The peer is logged in and its connection is normal.
    ONLINE = 1
    #: The peer cannot be reached (cascade error or abnormal state).
    UNREACHABLE = 2


class ConnectionState(IntEnum):
    """The ``state`` of ``on_connection_state_changed`` (reference §3.4).

    Threading: immutable, safe to share between threads.
    """

    #: Disconnected for more than 12 s; the SDK tries to reconnect by itself.
    DISCONNECTED = 1
    #: The first connection is in progress.
    CONNECTING = 2
    #: The first connection succeeded.
    CONNECTED = 3
    #: The first connection did not complete within 10 s, or the connection was lost
    #: for 10 s; the SDK is reconnecting.
    RECONNECTING = 4
    #: Reconnected after a drop.
    RECONNECTED = 5
    #: Disconnected for more than 10 s without reconnecting; the SDK keeps retrying.
    LOST = 6
    #: The server reported an abnormal state; the SDK does not reconnect.
    FAILED = 7


class ConnectionStateChangeReason(IntEnum):
    """The ``reason`` of ``on_connection_state_changed``.

    **Our addition.** The original API passes a ``reason`` that is "currently not
    enabled, fixed to -1" (reference §2.1, §3.4); this SDK reports why the state changed.
    ``UNKNOWN`` keeps the original's -1.

    Threading: immutable, safe to share between threads.
    """

    #: No reason known (the original API's fixed value).
    UNKNOWN = -1
    #: Connecting because ``login`` was called.
    LOGIN = 0
    #: The connection to the server succeeded.
    CONNECT_SUCCESS = 1
    #: The connection attempt failed.
    CONNECT_FAILED = 2
    #: The network connection was lost.
    NETWORK_LOST = 3
    #: The server did not answer heartbeats in time.
    HEARTBEAT_TIMEOUT = 4
    #: The server closed the connection.
    SERVER_CLOSED = 5
    #: Kicked because the same uid logged in elsewhere (duplicate login).
    KICKED = 6
    #: The login token expired.
    TOKEN_EXPIRED = 7
    #: The local proxy failed.
    PROXY_ERROR = 8
    #: The network type changed.
    NETWORK_CHANGED = 9
    #: ``logout`` was called.
    LOGOUT = 10
    #: The engine was destroyed.
    DESTROYED = 11
    #: The peer violated the wire protocol.
    PROTOCOL_ERROR = 12
    #: The session was resumed after a reconnect, with nothing lost.
    RESUMED = 13


class UserOfflineReason(IntEnum):
    """The ``reason`` of ``on_user_leave`` (reference §3.5).

    Threading: immutable, safe to share between threads.
    """

    #: The remote user called ``leave_room``.
    QUIT = 0
    #: The remote user dropped (network loss or token expiry).
    DROPPED = 1
    #: The remote user switched to invisible.
    SWITCH_TO_INVISIBLE = 2
    #: The remote user was removed by the server (administrator).
    KICKED_BY_ADMIN = 3


class RoomErrorCode(IntEnum):
    """Room states and errors: the ``state`` of ``on_room_state_changed`` and the
    ``error_code`` of ``on_create_room_state_changed`` (reference §3.6, ``RtsErrorCode``).

    ``SUCCESS`` (0) is the "joined successfully" state of ``on_room_state_changed``.

    Threading: immutable, safe to share between threads.
    """

    #: Success; for ``on_room_state_changed``: joined the room.
    SUCCESS = 0
    #: The token is invalid.
    INVALID_TOKEN = -1000
    #: Unknown error while joining the room.
    JOIN_ROOM = -1001
    #: The same uid joined this room elsewhere; this client was kicked.
    DUPLICATE_LOGIN = -1004
    #: Kicked out of the room by the server.
    KICKED_OUT = -1006
    #: The room id is illegal (must match ``[a-zA-Z0-9_@\-\.]{1,128}``).
    ROOM_ID_ILLEGAL = -1007
    #: The token expired.
    TOKEN_EXPIRED = -1009
    #: The token passed to update the token is invalid.
    UPDATE_TOKEN_WITH_INVALID_TOKEN = -1010
    #: The server dismissed the room.
    ROOM_DISMISS = -1011
    #: A room with the same room id already exists.
    ROOM_ALREADY_EXIST = -1013
    #: A different uid was used; one engine must use the same uid in all rooms.
    USER_ID_DIFFERENT = -1014
    #: The server is in an abnormal state; disconnected without automatic reconnect.
    ABNORMAL_SERVER_STATUS = -1084
    #: Internal error.
    INTERNAL = -1111


class RoomWarningCode(IntEnum):
    """Room warnings (reference §3.6, ``RtsWarningCode``).

    Threading: immutable, safe to share between threads.
    """

    #: Getting the room failed (deprecated).
    GET_ROOM_FAILED = -2000
    #: Joining the room failed because of a server error; the SDK retries.
    JOIN_ROOM_FAILED = -2001
    #: Publishing a stream failed.
    PUBLISH_STREAM_FAILED = -2002
    #: An invocation failed.
    INVOKE_ERROR = -2005
    #: The expected media server address is invalid.
    INVALID_EXPECT_MEDIA_SERVER_ADDRESS = -2007
    #: A custom message was sent while not in the room.
    SEND_CUSTOM_MESSAGE = -2011
    #: The room has more than 500 users: ``on_user_joined`` / ``on_user_leave`` are no
    #: longer sent to existing users.
    USER_NOTIFY_STOP = -2013
    #: The room already exists (deprecated).
    ROOM_ALREADY_EXIST = -2015
    #: The old room was replaced.
    OLD_ROOM_BEEN_REPLACED = -2016


class JoinRoomType(IntEnum):
    """The ``join_type`` in the ``extra_info`` JSON of ``on_room_state_changed``
    (reference §3.6).

    Threading: immutable, safe to share between threads.
    """

    #: First join, from an explicit ``join_room`` call.
    FIRST = 0
    #: Automatic re-join after a reconnect.
    RECONNECTED = 1


class NetworkType(IntEnum):
    """The ``type`` of ``on_network_type_changed`` (reference §3.7).

    Threading: immutable, safe to share between threads.
    """

    #: The network type is unknown.
    UNKNOWN = -1
    #: The network is disconnected.
    DISCONNECTED = 0
    #: Wired LAN.
    LAN = 1
    #: Wi-Fi, including hotspots.
    WIFI = 2
    #: 2G mobile network.
    MOBILE_2G = 3
    #: 3G mobile network.
    MOBILE_3G = 4
    #: 4G mobile network.
    MOBILE_4G = 5
    #: 5G mobile network.
    MOBILE_5G = 6


class LocalProxyType(IntEnum):
    """The kind of a local proxy in ``LocalProxyConfiguration`` and the ``type`` of
    ``on_local_proxy_state_changed`` (reference §3.8).

    Threading: immutable, safe to share between threads.
    """

    #: A SOCKS5 proxy.
    SOCKS5 = 1
    #: An HTTP tunnel (HTTP ``CONNECT``) proxy.
    HTTP_TUNNEL = 2


class LocalProxyState(IntEnum):
    """The ``state`` of ``on_local_proxy_state_changed`` (reference §3.8).

    Threading: immutable, safe to share between threads.
    """

    #: The TCP connection to the proxy server is established.
    INITED = 0
    #: Connected through the local proxy.
    CONNECTED = 1
    #: The local proxy failed; see the ``LocalProxyError``.
    ERROR = 2


class LocalProxyError(IntEnum):
    """The ``error`` of ``on_local_proxy_state_changed`` (reference §3.8).

    Threading: immutable, safe to share between threads.
    """

    #: No error.
    OK = 0
    #: The SOCKS5 proxy answered with an unsupported version.
    SOCKS5_VERSION_ERROR = 1
    #: The SOCKS5 proxy's answer is malformed.
    SOCKS5_FORMAT_ERROR = 2
    #: The SOCKS5 proxy's answer contains an invalid value.
    SOCKS5_INVALID_VALUE = 3
    #: The SOCKS5 proxy requires a username and password, and none were given.
    SOCKS5_USER_PASS_NOT_GIVEN = 4
    #: The SOCKS5 proxy closed the TCP connection.
    SOCKS5_TCP_CLOSED = 5
    #: The HTTP tunnel proxy failed.
    HTTP_TUNNEL_FAILED = 6


class MessageConfig(IntEnum):
    """How a peer-to-peer message is delivered (``config`` of ``send_message``,
    reference §3.10).

    Threading: immutable, safe to share between threads.
    """

    #: Low-latency, reliable, ordered.
    RELIABLE_ORDERED = 0
    #: Ultra-low-latency, unreliable (at most once), ordered.
    UNRELIABLE_ORDERED = 1
    #: Ultra-low-latency, unreliable (at most once), unordered.
    UNRELIABLE_UNORDERED = 2


class BusinessCheckCode(IntEnum):
    """The result of ``set_business_id`` (reference §3.11 and §1).

    Threading: immutable, safe to share between threads.
    """

    #: The business id was set.
    SUCCESS = 0
    #: The user is already in a room; the business id must be set before joining.
    ALREADY_IN_ROOM = -6001
    #: The business id is invalid (allowed: letters, digits, ``.``, ``-``, ``_``, ``@``).
    INPUT_INVALIDATE = -6002


class ReturnStatus(IntEnum):
    """Return codes of the original API's calls (reference §1, the hidden ``RtsReturnStatus``).

    This SDK raises instead of returning these; the code is on the exception's ``.code``.

    Threading: immutable, safe to share between threads.
    """

    #: Success.
    SUCCESS = 0
    #: Generic failure (e.g. no engine).
    FAILURE = -1
    #: A parameter is invalid.
    PARAMETER_ERR = -2
    #: The call is not allowed in the current state.
    WRONG_STATE = -3
    #: Already in the room.
    HAS_IN_ROOM = -4
    #: Already logged in.
    HAS_IN_LOGIN = -5
    #: The room id is already in use.
    ROOM_ID_IN_USE = -8
