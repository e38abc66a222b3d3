"""The exception tree of rts_sync.

Every error the SDK raises is an :class:`RTSError` and carries the seed's numeric ``.code`` (the
same number the matching callback receives), so a script can use ``Operation.result()`` and a
threaded app can use the handler, and both see one code::

    RTSError                              .code, .retriable
    ├── InvalidArgumentError(ValueError)  bad argument at call time (seed: negative return value)
    ├── InvalidStateError(RuntimeError)   wrong state at call time (not logged in, destroyed, ...)
    │   └── ClientClosed                  the engine was destroyed
    ├── LoginError                        onLoginResult failure (LoginErrorCode)
    ├── LogoutError                       logout could not be confirmed by the server
    ├── SendError                         onMessageSendResult / onServerMessageSendResult failure
    │   ├── SendTimeoutError              1   TIMEOUT
    │   ├── ConnectionBrokenError         2   BROKEN (channel broke before a result)
    │   ├── NoReceiverError               3   NO_RECEIVER (peer not logged in)
    │   ├── ExceedQpsError                5   EXCEED_QPS
    │   ├── AppServerUnreachableError     17  E2BS_SEND_FAILED
    │   ├── AppServerFailedError          18  E2BS_RETURN_FAILED
    │   ├── NotJoinedError                100 NOT_JOIN
    │   ├── MessageTooLargeError          103 EXCEED_MAX_LENGTH
    │   ├── NotLoggedInError              105 NOT_LOGIN
    │   └── ServerParamsNotSetError       106 SERVER_PARAMS_NOT_SET
    ├── RoomError                         room creation / join failures (RoomErrorCode)
    ├── RequestTimeout                    no answer from the server in time (retriable)
    ├── ProtocolError                     the wire protocol was violated
    │   ├── LocalProtocolError            ... by us (a bug, or a frame too large to send)
    │   └── RemoteProtocolError           ... by the peer (malformed or unexpected frame)
    └── TransportError                    the connection could not be made or was lost (retriable)
        ├── ConnectTimeout
        ├── ProxyError
        └── ConnectionLost

Foreign exceptions (socket, ssl, websocket-client, PySocks, cbor2) are translated at the boundary
with ``raise Mapped(...) from exc`` so the cause is kept.

Threading: exception objects are immutable once raised and may cross threads freely.
"""

from __future__ import annotations

from typing import ClassVar, Dict, Tuple, Type

__all__ = [
    "AppServerFailedError",
    "AppServerUnreachableError",
    "ClientClosed",
    "ConnectTimeout",
    "ConnectionBrokenError",
    "ConnectionLost",
    "ExceedQpsError",
    "InvalidArgumentError",
    "InvalidStateError",
    "LocalProtocolError",
    "LoginError",
    "LogoutError",
    "MessageTooLargeError",
    "NoReceiverError",
    "NotJoinedError",
    "NotLoggedInError",
    "ProtocolError",
    "ProxyError",
    "RTSError",
    "RemoteProtocolError",
    "RequestTimeout",
    "RoomError",
    "SendError",
    "SendTimeoutError",
    "ServerParamsNotSetError",
    "TransportError",
    "error_for",
]


class RTSError(Exception):
    """Base of every rts_sync error; ``code`` is the seed's numeric code (or -1 where none)."""

    retriable: ClassVar[bool] = False
    default_code: ClassVar[int] = -1

    def __init__(self, message: str = "", code: int | None = None) -> None:
        self.code: int = self.default_code if code is None else int(code)
        super().__init__(message or type(self).__name__)

    def __str__(self) -> str:
        return "%s (code %d)" % (self.args[0], self.code)


class InvalidArgumentError(RTSError, ValueError):
    """A bad argument, reported at call time (the seed returns a negative value)."""

    default_code = -2


class InvalidStateError(RTSError, RuntimeError):
    """A call made in the wrong state (the seed returns a negative value)."""

    default_code = -3


class ClientClosed(InvalidStateError):
    """The engine was destroyed; nothing more can be done with it."""

    default_code = -1


class LoginError(RTSError):
    """Login failed; ``code`` is a :class:`rts_sync.LoginErrorCode`."""

    default_code = -1001


class LogoutError(RTSError):
    """Logout could not be confirmed by the server (the session is closed locally anyway)."""


class SendError(RTSError):
    """A message send failed; ``code`` is a UserMessageSendResult / RoomMessageSendResult."""

    default_code = 1000


class SendTimeoutError(SendError):
    default_code = 1
    retriable = True


class ConnectionBrokenError(SendError):
    default_code = 2
    retriable = True


class NoReceiverError(SendError):
    default_code = 3


class ExceedQpsError(SendError):
    default_code = 5
    retriable = True


class AppServerUnreachableError(SendError):
    default_code = 17
    retriable = True


class AppServerFailedError(SendError):
    default_code = 18


class NotJoinedError(SendError):
    default_code = 100


class MessageTooLargeError(SendError):
    default_code = 103


class NotLoggedInError(SendError):
    default_code = 105


class ServerParamsNotSetError(SendError):
    default_code = 106


class RoomError(RTSError):
    """Room creation or joining failed; ``code`` is a :class:`rts_sync.RoomErrorCode`."""

    default_code = -1001


class RequestTimeout(RTSError):
    """The server did not answer a request in time."""

    default_code = 1
    retriable = True


class ProtocolError(RTSError):
    """The wire protocol was violated; ``code`` is a :class:`rts_sync.protocol.CloseCode`."""

    default_code = 4400


class LocalProtocolError(ProtocolError):
    """We were about to violate the protocol (for example a frame over the size limit)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class TransportError(RTSError):
    """The connection could not be made, or was lost."""

    default_code = 2
    retriable = True


class ConnectTimeout(TransportError):
    pass


class ProxyError(TransportError):
    pass


class ConnectionLost(TransportError):
    pass


#: (domain, code) -> class. Domains: "send" (peer, server and room send results), "login", "room".
_REGISTRY: Dict[Tuple[str, int], Type[RTSError]] = {}


def _register(domain: str, cls: Type[RTSError], *codes: int) -> None:
    for code in codes:
        _REGISTRY[(domain, code)] = cls


for _cls in (
    SendTimeoutError,
    ConnectionBrokenError,
    NoReceiverError,
    ExceedQpsError,
    AppServerUnreachableError,
    AppServerFailedError,
    NotJoinedError,
    MessageTooLargeError,
    NotLoggedInError,
    ServerParamsNotSetError,
):
    _register("send", _cls, _cls.default_code)


def error_for(domain: str, code: int, message: str = "") -> RTSError:
    """Return the exception instance for a failed outcome ``code`` in ``domain``.

    ``domain`` is ``"send"``, ``"login"`` or ``"room"``; unknown codes give the domain's base class.
    """
    cls = _REGISTRY.get((domain, int(code)))
    if cls is None:
        cls = {"send": SendError, "login": LoginError, "room": RoomError}.get(domain, RTSError)
    return cls(message or "%s failed" % domain, int(code))
