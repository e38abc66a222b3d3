"""Event handler base classes: :class:`RTSEventHandler` and :class:`RTSRoomEventHandler`.

Subclass one, override the callbacks you need, and pass an instance to
``create_rts(..., handler=...)`` / ``RTS.set_rts_event_handler`` or
``RTSRoom.set_rts_room_event_handler``. Every default method does nothing.

The SDK always calls callbacks with positional arguments in the original API's order
(reference §2), so an override may name its parameters as it likes. Codes arrive as the
``IntEnum`` members of :mod:`rts_sync.enums` (which compare equal to plain ``int``), hence
the ``int`` annotations.

Threading: callbacks run on a dispatcher thread named ``rts-cb-<id>``, never on the I/O or
supervisor thread and never while the SDK holds one of its locks. A callback may call any
SDK method. A callback that blocks delays the callbacks queued after it. An exception
raised by a callback is logged (``log.exception``) and otherwise ignored.
"""

from __future__ import annotations

from .types import SysStats

__all__ = [
    "RTSEventHandler",
    "RTSRoomEventHandler",
]


class RTSEventHandler:
    """Receiver of engine-level events (the original ``IRTSEventHandler``, reference §2.1).

    Every method is a no-op by default; override the ones you need.

    Threading: every method runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O
    or supervisor thread and never under an SDK lock, so it may call any SDK method.
    Exceptions it raises are logged and ignored. One handler may serve several engines;
    then it must be safe to call from their dispatcher threads.
    """

    def on_sys_stats(self, stats: SysStats) -> None:
        """CPU and memory statistics of this process and system, every 2 s (the runtime
        parameter ``stats_interval``), for as long as the engine exists.

        Args:
            stats: :class:`~rts_sync.types.SysStats` (usages as fractions 0..1, memory in
                MB, ratios in percent).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_network_type_changed(self, type: int) -> None:
        """The type of the local network: once when the engine starts, then on every change
        (checked every ``stats_interval`` while logged in or connecting).

        Args:
            type: :class:`~rts_sync.enums.NetworkType` (-1 unknown, 0 disconnected, 1 LAN,
                2 Wi-Fi, 3..6 mobile 2G..5G).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_create_room_state_changed(self, room_id: str, error_code: int) -> None:
        """``create_room`` failed.

        Args:
            room_id: The room id passed to ``create_room``.
            error_code: :class:`~rts_sync.enums.RoomErrorCode`: ``ROOM_ID_ILLEGAL`` (-1007)
                for an invalid room id, ``ROOM_ALREADY_EXIST`` (-1013) when this engine
                already has a room with that id.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_connection_state_changed(self, state: int, reason: int) -> None:
        """The state of the connection to the signaling server changed.

        Args:
            state: :class:`~rts_sync.enums.ConnectionState` (1 disconnected .. 7 failed).
            reason: :class:`~rts_sync.enums.ConnectionStateChangeReason`, why the state
                changed (the original API always passes -1 here; this SDK gives a reason,
                ``UNKNOWN`` = -1 when it has none).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_login_result(self, uid: str, error_code: int, elapsed: int) -> None:
        """The result of ``login``.

        Args:
            uid: The uid passed to ``login``.
            error_code: :class:`~rts_sync.enums.LoginErrorCode` (0 success).
            elapsed: Milliseconds from the ``login`` call to this result.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_logout(self, reason: int) -> None:
        """This session was logged out.

        Args:
            reason: :class:`~rts_sync.enums.LogoutReason`: ``LOGOUT`` (0) after ``logout``,
                ``DUPLICATE_LOGIN`` (1) when the same uid logged in elsewhere.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_server_params_set_result(self, error: int) -> None:
        """The result of ``set_server_params``.

        Args:
            error: 200 on success; otherwise a failure code
                (:class:`~rts_sync.enums.UserMessageSendResult`).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_get_peer_online_status(self, peer_user_id: str, status: int) -> None:
        """The result of ``get_peer_online_status``.

        Args:
            peer_user_id: The uid that was queried.
            status: :class:`~rts_sync.enums.UserOnlineStatus` (0 offline, 1 online,
                2 unreachable).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_message_received(self, uid: str, message: str) -> None:
        """A peer-to-peer text message arrived.

        Args:
            uid: The sender's uid (an application server's ``From`` id for pushed messages).
            message: The text.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_binary_message_received(self, uid: str, message: bytes) -> None:
        """A peer-to-peer binary message arrived.

        Args:
            uid: The sender's uid (an application server's ``From`` id for pushed messages).
            message: The payload.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_message_send_result(self, msgid: int, error: int) -> None:
        """The result of ``send_message`` / ``send_binary_message``; exactly one per call.

        Args:
            msgid: The message id the send call returned (``SendOperation.msg_id``).
            error: :class:`~rts_sync.enums.UserMessageSendResult` (0 success).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_server_message_send_result(self, msgid: int, error: int, message: bytes) -> None:
        """The result of ``send_server_message`` / ``send_server_binary_message``; exactly
        one per call.

        Args:
            msgid: The message id the send call returned (``SendOperation.msg_id``).
            error: :class:`~rts_sync.enums.UserMessageSendResult` (0 success; 17/18 when
                the application server was unreachable or answered with an error).
            message: The application server's response body (empty on failure).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_local_proxy_state_changed(self, type: int, state: int, error: int) -> None:
        """The state of a local proxy set with ``set_local_proxy`` changed, at each
        connection attempt through it: INITED (TCP to the proxy is up), then CONNECTED (the
        tunnel is open) or ERROR.

        Args:
            type: :class:`~rts_sync.enums.LocalProxyType` (1 SOCKS5, 2 HTTP tunnel).
            state: :class:`~rts_sync.enums.LocalProxyState` (0 inited, 1 connected, 2 error).
            error: :class:`~rts_sync.enums.LocalProxyError` (0 OK).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """


class RTSRoomEventHandler:
    """Receiver of one room's events (the original ``IRTSRoomEventHandler``, reference §2.2).

    Every method is a no-op by default; override the ones you need.

    Threading: every method runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O
    or supervisor thread and never under an SDK lock, so it may call any SDK method.
    Exceptions it raises are logged and ignored. One handler may serve several rooms;
    then it must be safe to call from their dispatcher threads.
    """

    def on_room_state_changed(self, room_id: str, uid: str, state: int, extra_info: str) -> None:
        """Joined the room, re-joined it after a reconnect, or left it abnormally.

        Args:
            room_id: The room's id.
            uid: The local user's uid.
            state: :class:`~rts_sync.enums.RoomErrorCode`: 0 joined; negative for a failure
                or abnormal exit (e.g. -1004 same uid joined elsewhere, -1006 kicked out).
            extra_info: A JSON string such as ``{"elapsed":1187,"join_type":0}``:
                ``join_type`` is a :class:`~rts_sync.enums.JoinRoomType` (0 first join,
                1 re-join after reconnect), ``elapsed`` the milliseconds from ``join_room``.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_leave_room(self) -> None:
        """``leave_room`` completed and the room's resources are released.

        Not delivered if the room or engine is destroyed right after ``leave_room``.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_user_joined(self, uid: str, elapsed: int) -> None:
        """A remote user joined the room, or re-joined it after a network drop.

        Args:
            uid: The remote user's uid.
            elapsed: Reserved, meaningless (as in the original API).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_user_leave(self, uid: str, reason: int) -> None:
        """A remote user left the room.

        Args:
            uid: The remote user's uid.
            reason: :class:`~rts_sync.enums.UserOfflineReason` (0 quit, 1 dropped,
                2 switched to invisible, 3 kicked by admin).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_room_message_received(self, uid: str, message: str) -> None:
        """A text broadcast arrived in the room.

        Args:
            uid: The sender's uid (an application server's ``From`` id for pushed messages).
            message: The text.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_room_binary_message_received(self, uid: str, message: bytes) -> None:
        """A binary broadcast arrived in the room.

        Args:
            uid: The sender's uid (an application server's ``From`` id for pushed messages).
            message: The payload.

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """

    def on_room_message_send_result(self, msgid: int, error: int) -> None:
        """The result of ``send_room_message`` / ``send_room_binary_message``; exactly one
        per call.

        Args:
            msgid: The message id the send call returned (``SendOperation.msg_id``).
            error: :class:`~rts_sync.enums.RoomMessageSendResult` (**200** success).

        Runs on a dispatcher thread ``rts-cb-<id>``, never on the I/O or supervisor thread
        and never under an SDK lock; it may call any SDK method. Exceptions it raises are
        logged and ignored.
        """
