"""The public engine: ``create_rts``, ``destroy_rts``, ``get_sdk_version`` and :class:`RTS`.

Each method validates its arguments, then hands the work to the engine's I/O thread and returns
at once: an :class:`Operation` (a ``concurrent.futures.Future``) for asynchronous results, which
are also reported through the handler callbacks. Misuse that the seed reports with a negative
return value raises at call time (:class:`InvalidArgumentError`, :class:`InvalidStateError`, each
with the seed's ``.code``); outcomes that the seed reports through a callback (message too large,
not logged in, no receiver, ...) fail the returned operation and fire the callback.
"""

from __future__ import annotations

import os
import time
from types import TracebackType
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Type, Union

from ._client.core import EngineCore
from ._client.events import CONN_LANE
from ._client.operations import Operation, SendOperation
from ._client.proxy import normalize_proxies
from ._client.server_messages import send_server_message, set_server_params
from ._client.transport import parse_server_url
from ._version import __version__
from .enums import MessageConfig, RoomErrorCode
from .enums import UserMessageSendResult as R
from .errors import InvalidArgumentError, InvalidStateError, RoomError, error_for
from .handlers import RTSEventHandler
from .protocol import MAX_PAYLOAD, TargetKind, is_valid_id, payload_size
from .room import RTSRoom
from .types import LocalProxyConfiguration, Message

__all__ = ["DEFAULT_SERVER_URL", "RTS", "create_rts", "destroy_rts", "get_sdk_version"]

#: Where an engine connects when neither ``server_url`` nor ``RTS_SERVER_URL`` says otherwise:
#: a server started with ``rts-server`` on this machine.
DEFAULT_SERVER_URL = "ws://127.0.0.1:8970/rts"


def get_sdk_version() -> str:
    """The SDK's version string."""
    return __version__


def create_rts(app_id: str, handler: Optional[RTSEventHandler] = None,
               parameters: Optional[Mapping[str, Any]] = None, *,
               server_url: Union[str, Sequence[str], None] = None) -> RTS:
    """Create an engine (the seed's ``createRTS``); each call makes another independent engine.

    ``server_url`` is a ``ws://`` / ``wss://`` URL or a list of them in failover order; by default
    the environment variable ``RTS_SERVER_URL`` (comma-separated), else
    :data:`DEFAULT_SERVER_URL`. ``parameters`` are runtime parameters (``RTS.set_runtime_parameters``).
    """
    return RTS(app_id, handler, parameters, server_url=server_url)


def destroy_rts(rts: RTS) -> None:
    """Destroy an engine (the seed's ``destroyRTS``); the same as ``rts.destroy()``."""
    if not isinstance(rts, RTS):
        raise TypeError("destroy_rts() takes an RTS, not %s" % type(rts).__name__)
    rts.destroy()


def _urls(server_url: Union[str, Sequence[str], None]) -> List[str]:
    if server_url is None:
        env = os.environ.get("RTS_SERVER_URL", "")
        server_url = [u.strip() for u in env.split(",") if u.strip()] or [DEFAULT_SERVER_URL]
    urls = [server_url] if isinstance(server_url, str) else list(server_url)
    if not urls:
        raise InvalidArgumentError("server_url must name at least one server", -1)
    for u in urls:
        parse_server_url(u)
    return urls


def _check_str(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("%s must be a str, not %s" % (name, type(value).__name__))
    return value


def _message_config(config: object) -> MessageConfig:
    if isinstance(config, bool) or not isinstance(config, int):
        raise TypeError("config must be a MessageConfig, not %s" % type(config).__name__)
    try:
        return MessageConfig(config)
    except ValueError:
        raise InvalidArgumentError("config must be a MessageConfig, got %r" % (config,),
                                   -2) from None


class RTS:
    """A real-time signaling engine (the seed's ``RTS``); use :func:`create_rts`.

    A context manager: leaving the ``with`` block destroys it.

    Threading: every method is thread-safe and returns without waiting for the network.
    Callbacks of the handler run on this engine's callback threads (``rts-cb-<id>-<n>``), never
    on the I/O thread (``rts-io-<id>``) or the supervisor thread (``rts-supervisor-<id>``), and
    never while an SDK lock is held; any method, ``destroy()`` included, may be called from them.
    """

    def __init__(self, app_id: str, handler: Optional[RTSEventHandler] = None,
                 parameters: Optional[Mapping[str, Any]] = None, *,
                 server_url: Union[str, Sequence[str], None] = None) -> None:
        _check_str("app_id", app_id)
        if not app_id:
            raise InvalidArgumentError("app_id must not be empty", -1)
        self._core = EngineCore(app_id, handler, _urls(server_url), parameters)

    # ------------------------------------------------------------------ lifecycle
    def destroy(self) -> None:
        """Log out, close the connection and stop every thread of this engine (idempotent).

        After it no callback fires; operations still pending fail with ClientClosed. Called
        from one of this engine's callbacks, it returns without waiting for that callback thread,
        which ends when the callback returns.
        """
        self._core.destroy()

    def __enter__(self) -> RTS:
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.destroy()

    def __repr__(self) -> str:
        c = self._core
        return "<RTS %d app=%s state=%s%s>" % (c.id, c.app_id, c.io.state.name,
                                              " destroyed" if c.destroyed else "")

    @property
    def app_id(self) -> str:
        return self._core.app_id

    @property
    def server_urls(self) -> List[str]:
        """The servers this engine tries, in order."""
        return list(self._core.urls)

    def set_rts_event_handler(self, handler: Optional[RTSEventHandler]) -> None:
        """Set the receiver of engine callbacks; events not yet delivered go to the new one."""
        self._core.check_alive()
        self._core.handler = handler

    def set_runtime_parameters(self, params: Mapping[str, Any]) -> None:
        """Apply runtime parameters (keys in ``rts_sync._client.config.PARAMETER_DOCS``).

        Timeouts and heartbeat settings apply from the next use; queue and thread sizes only at
        ``create_rts(parameters=...)``. A bad value raises InvalidArgumentError; unknown keys are
        ignored with one warning each.
        """
        core = self._core
        core.check_alive()
        core.config = core.config.with_parameters(params, core.warned_params)
        core.supervisor.wake()  # a new stats_interval applies at once

    def set_business_id(self, business_id: str) -> int:
        """Set the business id tag (letters, digits, ``.-_@``, at most 128); sent at login."""
        core = self._core
        core.check_alive()
        _check_str("business_id", business_id)
        if business_id and not is_valid_id(business_id):
            raise InvalidArgumentError("invalid business id %r" % business_id, -6002)
        if core.rooms_joined():
            raise InvalidStateError("set_business_id must come before joining a room", -6001)
        core.business_id = business_id or None
        return 0

    def set_local_proxy(self, configurations: Sequence[LocalProxyConfiguration]) -> int:
        """Connect through local proxies from the next connection attempt; ``[]`` clears them.

        At most one configuration per :class:`~rts_sync.enums.LocalProxyType`; with both, the
        signaling connection uses SOCKS5 (the seed's rule). Each attempt fires
        ``on_local_proxy_state_changed(type, state, error)``: INITED (TCP to the proxy is up),
        CONNECTED (tunnel open) or ERROR with a LocalProxyError, and a failing proxy fails the
        login with -1001 (state DISCONNECTED, reason PROXY_ERROR). Raises TypeError for a wrong
        type, InvalidArgumentError (-2) for two of one type or a username without password.
        """
        core = self._core
        core.check_alive()
        core.env.proxies = normalize_proxies(configurations)
        return 0

    def set_cellular_enhancement(self, enable: bool) -> int:
        """Off by default. When on and a cellular interface exists, a connection attempt whose
        primary path fails is tried again bound to that interface (``SO_BINDTODEVICE`` as root on
        Linux, else bound to the interface's address)."""
        core = self._core
        core.check_alive()
        if not isinstance(enable, bool):
            raise TypeError("enable must be a bool, not %s" % type(enable).__name__)
        core.env.cellular_enhancement = enable
        return 0

    # ------------------------------------------------------------------ login
    def login(self, token: str, uid: str) -> Operation:
        """Log in as ``uid``; result ``LoginErrorCode.SUCCESS`` or LoginError with the code.

        Fires ``on_login_result(uid, error_code, elapsed_ms)``. Raises InvalidArgumentError (-1)
        for an empty token or uid, InvalidStateError (-2) if already logged in or logging in.
        A uid breaking the id rule fails the operation with INVALID_USER_ID (-1002).
        """
        core = self._core
        core.check_alive()
        _check_str("token", token)
        _check_str("uid", uid)
        if not token or not uid:
            raise InvalidArgumentError("token and uid must not be empty", -1)
        if core.io.logged_in or core.io.login_pending:
            raise InvalidStateError("already logged in or logging in", -2)
        op = Operation(core.in_callback_thread)
        core.io.submit(core.io.login, op, token, uid, time.monotonic())
        return op

    def logout(self) -> Operation:
        """Log out; ``on_logout(0)`` fires and the connection closes. No effect if not logged in
        (the operation then still succeeds)."""
        core = self._core
        core.check_alive()
        op = Operation(core.in_callback_thread)
        core.io.submit(core.io.logout, op)
        return op

    def update_login_token(self, token: str) -> int:
        """Replace the token used for the next (re-)login. If logging in again after a
        reconnect was refused with INVALID_TOKEN (-1000), the engine logs in again by itself
        with this token (the seed's behaviour)."""
        core = self._core
        core.check_alive()
        _check_str("token", token)
        if not token:
            raise InvalidArgumentError("token must not be empty", -1)
        core.io.submit(core.io.update_token, token)
        return 0

    def get_peer_online_status(self, peer_user_id: str) -> Operation:
        """Ask whether a user is logged in; result and ``on_get_peer_online_status`` carry a
        UserOnlineStatus. Raises InvalidStateError (-3) when not logged in."""
        core = self._core
        core.check_alive()
        _check_str("peer_user_id", peer_user_id)
        if not peer_user_id:
            raise InvalidArgumentError("peer_user_id must not be empty", -2)
        if not core.io.logged_in:
            raise InvalidStateError("get_peer_online_status needs a login", -3)
        op = Operation(core.in_callback_thread)
        core.io.submit(core.io.online_status, op, peer_user_id)
        return op

    # ------------------------------------------------------------------ messages
    def send_message(self, uid: str, message: str,
                     config: MessageConfig = MessageConfig.RELIABLE_ORDERED) -> SendOperation:
        """Send text to a user; ``.msg_id`` counts from 1 (shared with server messages).

        The result (``on_message_send_result(msgid, error)``) is SUCCESS once the receiver's SDK
        has the message (reliable) or once the server took it (unreliable).
        """
        _check_str("message", message)
        return self._send_peer(uid, message, config)

    def send_binary_message(self, uid: str, message: bytes,
                            config: MessageConfig = MessageConfig.RELIABLE_ORDERED) -> SendOperation:
        """Send bytes to a user; otherwise as :meth:`send_message`."""
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes, not %s" % type(message).__name__)
        return self._send_peer(uid, message, config)

    def _send_peer(self, uid: str, message: Union[str, bytes], config: Any) -> SendOperation:
        core = self._core
        core.check_alive()
        _check_str("uid", uid)
        if not uid:
            raise InvalidArgumentError("uid must not be empty", -2)
        if config.__class__ is not MessageConfig:  # a member passes without an Enum call
            config = _message_config(config)
        op = SendOperation(core.next_msg_id(), core.in_callback_thread)
        code = self._precheck(message)
        if code is None and not is_valid_id(uid):
            code = R.NO_RECEIVER  # no user can have this id
        if code is not None:
            self._fail_now(op, code)
            return op
        core.io.send_now(op, TargetKind.PEER, uid, int(config), message)
        return op

    def _precheck(self, message: Union[str, bytes]) -> Optional[R]:
        core = self._core
        try:
            if payload_size(message) > MAX_PAYLOAD:
                return R.EXCEED_MAX_LENGTH
        except UnicodeEncodeError:
            raise InvalidArgumentError("message is not valid Unicode text (lone surrogate)",
                                       -2) from None
        if not core.io.logged_in:
            return R.NOT_LOGIN
        if core.io.backlog >= core.config.outbox_size:
            return R.EXCEED_QPS
        return None

    def _fail_now(self, op: SendOperation, code: R) -> None:
        core = self._core
        err = error_for("send", code, "message %d failed: %s" % (op.msg_id, code.name))
        core.dispatcher.submit_many([core.emit.task(
            CONN_LANE, "on_message_send_result", (op.msg_id, code), op, error=err)])

    # ------------------------------------------------------------------ application server
    def set_server_params(self, signature: str, url: str) -> Operation:
        """Name the application server that ``send_server_message`` reaches: the server POSTs
        each message to ``url`` with ``signature`` in the body (docs/protocol.md, "Application
        servers"). Result 200 and ``on_server_params_set_result(200)``; a failure fires the
        callback with its code and fails the operation.

        Raises InvalidArgumentError (-2) for an empty signature or a url that is not http(s)
        with a host, InvalidStateError (-3) when not logged in. The params last accepted are
        applied again after an automatic re-login; a ``logout`` forgets them.
        """
        return set_server_params(self._core, signature, url)

    def send_server_message(self, message: str) -> SendOperation:
        """Send text to the application server; ``.msg_id`` shares one sequence with peer
        messages. ``result()`` is the application server's response body (bytes), also given to
        ``on_server_message_send_result(msgid, 0, body)``. Failures (the callback then gets
        ``b""``): 18 non-200 answer, 17 no answer in time, 105 not logged in, 106 params not
        set, 103 over 65,536 bytes, 5 over the server's ``server_qps``.
        """
        _check_str("message", message)
        return send_server_message(self._core, message)

    def send_server_binary_message(self, message: bytes) -> SendOperation:
        """Send bytes to the application server (base64 in the POST); otherwise as
        :meth:`send_server_message`."""
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes, not %s" % type(message).__name__)
        return send_server_message(self._core, message)

    # ------------------------------------------------------------------ rooms
    def create_room(self, room_id: str) -> RTSRoom:
        """A room object for ``room_id`` (``[a-zA-Z0-9_@\\-.]{1,128}``); several may exist.

        Only creates the object: call ``join_room()`` on it. An invalid id reports
        ``on_create_room_state_changed(room_id, -1007)`` and raises RoomError(-1007); an id that
        already has a room object on this engine reports -1013 and raises RoomError(-1013).
        """
        core = self._core
        core.check_alive()
        _check_str("room_id", room_id)
        code = None
        with core._lock:
            if not is_valid_id(room_id):
                code = RoomErrorCode.ROOM_ID_ILLEGAL
            elif room_id in core.rooms:
                code = RoomErrorCode.ROOM_ALREADY_EXIST
            else:
                room = core.rooms[room_id] = RTSRoom(core, room_id)
                return room
        core.dispatcher.submit_many([core.emit.task(
            CONN_LANE, "on_create_room_state_changed", (room_id, code))])
        raise RoomError("cannot create room %r: %s" % (room_id, code.name), code)

    # ------------------------------------------------------------------ pull-style receiving
    def messages(self, timeout: Optional[float] = None) -> Iterator[Message]:
        """Yield received messages until ``timeout`` seconds pass without one (None: forever).

        Needs the runtime parameter ``message_queue_size`` > 0 at ``create_rts``; the queue is
        bounded, so a script that stops iterating slows the sender down instead of losing
        messages. Ends with ClientClosed when the engine is destroyed.
        """
        core = self._core
        core.check_alive()
        inbox = core.inbox
        if inbox is None:
            raise InvalidStateError(
                "messages() needs create_rts(..., parameters={'message_queue_size': N})", -3)
        while True:
            msg = inbox.get(timeout)
            if msg is None:
                return
            yield msg

    def stats(self) -> Dict[str, Any]:
        """A snapshot for diagnostics: state, login, queue depths."""
        io = self._core.io
        return {"state": io.state, "logged_in": io.logged_in, "uid": io.uid,
                "backlog": io.backlog, "destroyed": self._core.destroyed}
