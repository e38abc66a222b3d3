"""rts_sync: a threaded, synchronous Python SDK for real-time signaling (the Volcengine RTS API).

Quick start::

    import rts_sync
    with rts_sync.create_rts(APP_ID, server_url="ws://127.0.0.1:8970/rts") as rts:
        rts.login(token, "alice").result(timeout=10)
        rts.send_message("bob", "hello").result(timeout=10)

Every public name is importable from here; ``__all__`` is locked by a test.
"""

import logging

from . import token
from ._client.operations import Operation, SendOperation
from ._version import __version__
from .engine import DEFAULT_SERVER_URL, RTS, create_rts, destroy_rts, get_sdk_version
from .enums import (
    BusinessCheckCode,
    ConnectionState,
    ConnectionStateChangeReason,
    JoinRoomType,
    LocalProxyError,
    LocalProxyState,
    LocalProxyType,
    LoginErrorCode,
    LoginType,
    LogoutReason,
    MessageConfig,
    NetworkType,
    ReturnStatus,
    RoomErrorCode,
    RoomMessageSendResult,
    RoomWarningCode,
    UserMessageSendResult,
    UserOfflineReason,
    UserOnlineStatus,
)
from .errors import (
    AppServerFailedError,
    AppServerUnreachableError,
    ClientClosed,
    ConnectionBrokenError,
    ConnectionLost,
    ConnectTimeout,
    ExceedQpsError,
    InvalidArgumentError,
    InvalidStateError,
    LocalProtocolError,
    LoginError,
    LogoutError,
    MessageTooLargeError,
    NoReceiverError,
    NotJoinedError,
    NotLoggedInError,
    ProtocolError,
    ProxyError,
    RemoteProtocolError,
    RequestTimeout,
    RoomError,
    RTSError,
    SendError,
    SendTimeoutError,
    ServerParamsNotSetError,
    TransportError,
)
from .handlers import RTSEventHandler, RTSRoomEventHandler
from .room import RTSRoom
from .types import LocalProxyConfiguration, Message, SysStats

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_SERVER_URL",
    "RTS",
    "AppServerFailedError",
    "AppServerUnreachableError",
    "BusinessCheckCode",
    "ClientClosed",
    "ConnectTimeout",
    "ConnectionBrokenError",
    "ConnectionLost",
    "ConnectionState",
    "ConnectionStateChangeReason",
    "ExceedQpsError",
    "InvalidArgumentError",
    "InvalidStateError",
    "JoinRoomType",
    "LocalProtocolError",
    "LocalProxyConfiguration",
    "LocalProxyError",
    "LocalProxyState",
    "LocalProxyType",
    "LoginError",
    "LoginErrorCode",
    "LoginType",
    "LogoutError",
    "LogoutReason",
    "Message",
    "MessageConfig",
    "MessageTooLargeError",
    "NetworkType",
    "NoReceiverError",
    "NotJoinedError",
    "NotLoggedInError",
    "Operation",
    "ProtocolError",
    "ProxyError",
    "RTSError",
    "RTSEventHandler",
    "RTSRoom",
    "RTSRoomEventHandler",
    "RemoteProtocolError",
    "RequestTimeout",
    "ReturnStatus",
    "RoomError",
    "RoomErrorCode",
    "RoomMessageSendResult",
    "RoomWarningCode",
    "SendError",
    "SendOperation",
    "SendTimeoutError",
    "ServerParamsNotSetError",
    "SysStats",
    "TransportError",
    "UserMessageSendResult",
    "UserOfflineReason",
    "UserOnlineStatus",
    "__version__",
    "create_rts",
    "destroy_rts",
    "get_sdk_version",
    "token",
]
