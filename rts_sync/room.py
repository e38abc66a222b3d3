"""The public room: :class:`RTSRoom`, made by ``RTS.create_room(room_id)``.

A room object only names a room; ``join_room()`` enters it (using the engine's login, no token),
after which ``send_room_message`` / ``send_room_binary_message`` broadcast to every other member
and the room's handler hears about members and messages.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any, Optional, Union

from ._client.operations import Operation, SendOperation
from .enums import MessageConfig, RoomMessageSendResult
from .errors import ClientClosed, InvalidArgumentError, InvalidStateError, error_for
from .handlers import RTSRoomEventHandler
from .protocol import MAX_PAYLOAD, TargetKind, payload_size

if TYPE_CHECKING:
    from ._client.core import EngineCore

__all__ = ["RTSRoom"]

_DEFAULT_HANDLER = RTSRoomEventHandler()


class RTSRoom:
    """One room of an engine (the seed's ``RTSRoom``); make it with ``RTS.create_room``.

    Room message ids count from 1 per room. Results: ``on_room_message_send_result(msgid, 200)``
    once the server has accepted the message and passed it to every other member; 100 (NOT_JOIN)
    before joining, 103 over 64 KB, 5 over a rate limit of the server.

    Threading: every method is thread-safe and returns without waiting for the network. The
    room handler's callbacks run on the engine's callback threads, in order for this room, never
    under an SDK lock; after ``destroy()`` none fire.
    """

    def __init__(self, core: EngineCore, room_id: str) -> None:
        self._core = core
        self._room_id = room_id
        self._handler: Optional[RTSRoomEventHandler] = None
        self._destroyed = False
        #: join_room() was called and neither leave_room() nor a failure or drop followed.
        self._wanted = False
        self._msg_ids = itertools.count(1)

    @property
    def room_id(self) -> str:
        return self._room_id

    def __repr__(self) -> str:
        return "<RTSRoom %s%s>" % (self._room_id, " destroyed" if self._destroyed else "")

    def _get_handler(self) -> Any:
        """The handler for callbacks: None once destroyed (no callbacks then)."""
        if self._destroyed:
            return None
        return self._handler or _DEFAULT_HANDLER

    def _check(self) -> EngineCore:
        if self._destroyed:
            if self._core.destroyed:
                raise ClientClosed("the engine was destroyed")
            raise InvalidStateError("room %r was destroyed" % self._room_id, -3)
        return self._core

    # ------------------------------------------------------------------ lifecycle
    def set_rts_room_event_handler(self, handler: Optional[RTSRoomEventHandler]) -> None:
        """Set the receiver of this room's callbacks."""
        self._check()
        self._handler = handler

    def destroy(self) -> None:
        """Leave the room (without ``on_leave_room``) and free this object; idempotent.

        The same room id may be created again afterwards.
        """
        core = self._core
        with core._lock:
            if self._destroyed:
                return
            self._destroyed = True
            if core.rooms.get(self._room_id) is self:
                del core.rooms[self._room_id]
        if not core.destroyed:
            core.io.submit(core.io.leave_room, self._room_id, None, False)

    def join_room(self) -> Operation:
        """Enter the room; result 0 and ``on_room_state_changed(room_id, uid, 0, extra_info)``
        where ``extra_info`` is JSON ``{"elapsed": ms, "join_type": 0}``.

        Raises InvalidStateError: -3 when not logged in or the room was destroyed, -2 when
        already joined or joining.
        """
        core = self._check()
        io = core.io
        if not io.logged_in:
            raise InvalidStateError("join_room needs a login", -3)
        with core._lock:
            if self._wanted:
                raise InvalidStateError("room %r is already joined or joining" % self._room_id,
                                        -2)
            self._wanted = True
        op = Operation(core.in_callback_thread)
        op.add_done_callback(self._join_done)
        io.submit(io.join_room, self._room_id, op, time.monotonic())
        return op

    def _join_done(self, op: Any) -> None:
        if op.exception() is not None:
            self._wanted = False

    def _dropped(self) -> None:
        """The I/O thread took this engine out of the room (connection lost, replaced)."""
        self._wanted = False

    def leave_room(self) -> Operation:
        """Leave the room; ``on_leave_room()`` fires once left. Harmless when not in the room."""
        core = self._check()
        self._wanted = False
        op = Operation(core.in_callback_thread)
        core.io.submit(core.io.leave_room, self._room_id, op)
        return op

    @property
    def joined(self) -> bool:
        """True while this engine is in the room."""
        st = self._core.io.rooms.get(self._room_id)
        return st is not None and st.joined and not self._destroyed

    # ------------------------------------------------------------------ messages
    def send_room_message(self, message: str) -> SendOperation:
        """Broadcast text to every other member (see the class docstring for results)."""
        if not isinstance(message, str):
            raise TypeError("message must be a str, not %s" % type(message).__name__)
        return self._send(message)

    def send_room_binary_message(self, message: bytes) -> SendOperation:
        """Broadcast bytes to every other member."""
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        if not isinstance(message, bytes):
            raise TypeError("message must be bytes, not %s" % type(message).__name__)
        return self._send(message)

    def _send(self, message: Union[str, bytes]) -> SendOperation:
        core = self._check()
        op = SendOperation(next(self._msg_ids), core.in_callback_thread)
        try:
            size = payload_size(message)
        except UnicodeEncodeError:
            raise InvalidArgumentError("message is not valid Unicode text (lone surrogate)",
                                       -2) from None
        code: Optional[RoomMessageSendResult] = None
        if size > MAX_PAYLOAD:
            code = RoomMessageSendResult.EXCEED_MAX_LENGTH
        elif not self.joined:
            code = RoomMessageSendResult.NOT_JOIN
        elif core.io.backlog >= core.config.outbox_size:
            code = RoomMessageSendResult.EXCEED_QPS
        if code is not None:
            err = error_for("send", code, "room message %d failed: %s" % (op.msg_id, code.name))
            core.dispatcher.submit_many([core.emit.task(
                ("room", self._room_id), "on_room_message_send_result", (op.msg_id, code), op,
                error=err, handler=self._get_handler)])
            return op
        core.io.send_now(op, TargetKind.ROOM, self._room_id,
                         int(MessageConfig.RELIABLE_ORDERED), message, self._room_id)
        return op
