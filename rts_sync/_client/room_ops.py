"""The I/O thread's room operations and room events (a mixin of IOThread).

The I/O thread keeps which rooms this engine is joining or in (``rooms``); the public
``RTSRoom`` objects live in ``core.rooms`` and provide the room handlers. Every method here runs
on the I/O thread; callbacks go to the room's lane ``("room", room_id)`` so that one room's
events stay in order.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Dict, Hashable, List, Optional, Tuple

from ..enums import RoomErrorCode
from ..errors import InvalidStateError, RemoteProtocolError, RoomError, RTSError
from ..protocol import CloseCode, Deliver, Notice, NoticeKind, Op, is_valid_id
from .dispatcher import Task
from .operations import Operation

if TYPE_CHECKING:
    from ..protocol import Connection
    from .core import EngineCore
    from .io_thread import FailFn, ResponseFn

__all__ = ["RoomOps", "RoomState"]

Tasks = List[Tuple[Hashable, Task]]


class RoomState:
    """A room this engine is joining (``joined`` False) or in."""

    __slots__ = ("join_op", "join_type", "joined", "t0")

    def __init__(self, join_op: Optional[Operation], t0: float, join_type: int = 0) -> None:
        self.join_op = join_op
        self.t0 = t0
        self.join_type = join_type
        self.joined = False


def _fail() -> RemoteProtocolError:
    return RemoteProtocolError("malformed room notice", CloseCode.PROTOCOL_ERROR)


class RoomOps:
    """Join, leave and room events, on the I/O thread (mixed into IOThread)."""

    if TYPE_CHECKING:
        core: EngineCore
        conn: Optional[Connection]
        logged_in: bool
        uid: str
        rooms: Dict[str, RoomState]

        def _request(self, op: int, args: List[Any], on_response: ResponseFn,
                     on_fail: FailFn) -> None: ...
        def _session_open(self) -> bool: ...

    def _rejoin_rooms(self, tasks: Tasks) -> None:
        """After logging in again by itself: join every room this engine was in (join_type 1)."""
        rooms, self.rooms = self.rooms, {}
        for room_id, st in rooms.items():
            if st.joined:
                self._join(room_id, None, time.monotonic(), 1)

    def _room_handler(self, room_id: str) -> Any:
        """The handler of the live RTSRoom with this id (None once it is destroyed)."""
        room = self.core.rooms.get(room_id)
        return room._get_handler() if room is not None else None

    def _room_dropped(self, room_id: str) -> None:
        room = self.core.rooms.get(room_id)
        if room is not None:
            room._dropped()

    def _room_task(self, room_id: str, method: str, args: Tuple[Any, ...],
                   op: Optional[Operation] = None, value: Any = None,
                   error: Optional[BaseException] = None) -> Tuple[Hashable, Task]:
        return self.core.emit.task(("room", room_id), method, args, op, value, error,
                                   handler=lambda: self._room_handler(room_id))

    # ------------------------------------------------------------------ commands
    def join_room(self, room_id: str, op: Operation, t0: float) -> None:
        tasks: Tasks = []
        if room_id in self.rooms:
            op.set_exception(InvalidStateError("room %r is already joined or joining" % room_id, -2))
            return
        if not self.logged_in or not self._session_open():
            err = RoomError("join_room needs a login", RoomErrorCode.JOIN_ROOM)
            tasks.append(self._room_task(room_id, "on_room_state_changed",
                                         (room_id, self.uid, RoomErrorCode.JOIN_ROOM, ""),
                                         op, error=err))
            self.core.dispatcher.submit_many(tasks)
            return
        self._join(room_id, op, t0, 0)

    def _join(self, room_id: str, op: Optional[Operation], t0: float, join_type: int) -> None:
        st = self.rooms[room_id] = RoomState(op, t0, join_type)

        def done(code: int, result: Any, t: Tasks) -> None:
            if self.rooms.get(room_id) is not st:  # left (or replaced) before the answer came
                if op is not None and not op.done():
                    op.set_exception(RoomError("left before the join completed",
                                               RoomErrorCode.JOIN_ROOM))
                return
            if code != 0:
                reason = result.get("reason", "") if isinstance(result, dict) else ""
                failed(RoomError("joining %r failed: %s" % (room_id, reason or code), code), t)
                return
            st.joined = True
            elapsed = int((time.monotonic() - st.t0) * 1000)
            extra = json.dumps({"elapsed": elapsed, "join_type": st.join_type})
            t.append(self._room_task(room_id, "on_room_state_changed",
                                     (room_id, self.uid, 0, extra), op, 0))
            members = result.get("members") if isinstance(result, dict) else None
            for uid in members if isinstance(members, list) else ():
                if is_valid_id(uid):
                    t.append(self._room_task(room_id, "on_user_joined", (uid, 0)))

        def failed(err: RTSError, t: Tasks) -> None:
            if self.rooms.get(room_id) is st:
                del self.rooms[room_id]
            code = err.code if isinstance(err, RoomError) else RoomErrorCode.JOIN_ROOM
            if not isinstance(err, RoomError):
                err = RoomError("joining %r failed: %s" % (room_id, err), code)
            t.append(self._room_task(room_id, "on_room_state_changed",
                                     (room_id, self.uid, code, ""), op, error=err))

        self._request(Op.JOIN_ROOM, [room_id, st.join_type], done, failed)

    def leave_room(self, room_id: str, op: Optional[Operation], notify: bool = True) -> None:
        """Leave (or stop joining); ``on_leave_room`` fires once the server confirms, if the
        room was joined and ``notify`` (False for ``RTSRoom.destroy``)."""
        st = self.rooms.pop(room_id, None)
        if st is None or not self._session_open():
            if op is not None and not op.done():
                op.set_result(0)
            return
        if not st.joined and st.join_op is not None and not st.join_op.done():
            st.join_op.set_exception(RoomError("left before the join completed",
                                               RoomErrorCode.JOIN_ROOM))
        was_joined = st.joined

        def done(code: int, result: Any, t: Tasks) -> None:
            if was_joined and notify:
                t.append(self._room_task(room_id, "on_leave_room", (), op, 0))
            elif op is not None and not op.done():
                op.set_result(0)

        self._request(Op.LEAVE_ROOM, [room_id], done, lambda err, t: done(0, None, t))

    def rooms_ended(self, lost: bool, tasks: Tasks) -> None:
        """The session ended: every room is left. When the connection was lost (rather than
        logged out), joined rooms report ABNORMAL_SERVER_STATUS (-1084)."""
        rooms, self.rooms = self.rooms, {}
        for room_id, st in rooms.items():
            self._room_dropped(room_id)
            if not st.joined:
                err = RoomError("connection lost while joining %r" % room_id,
                                RoomErrorCode.JOIN_ROOM)
                tasks.append(self._room_task(room_id, "on_room_state_changed",
                                             (room_id, self.uid, RoomErrorCode.JOIN_ROOM, ""),
                                             st.join_op, error=err))
            elif lost:
                tasks.append(self._room_task(
                    room_id, "on_room_state_changed",
                    (room_id, self.uid, RoomErrorCode.ABNORMAL_SERVER_STATUS, "")))

    # ------------------------------------------------------------------ events
    def _on_room_deliver(self, ev: Deliver, tasks: Tasks) -> None:
        room_id = ev.room
        if room_id is None:
            raise RemoteProtocolError("room message without a room", CloseCode.PROTOCOL_ERROR)
        st = self.rooms.get(room_id)
        if st is not None and st.joined:
            self.core.emit.room_message(tasks, room_id, lambda: self._room_handler(room_id),
                                        ev.sender, ev.payload)

    def _on_room_notice(self, ev: Notice, tasks: Tasks) -> None:
        args = ev.args
        if len(args) != 3 or not isinstance(args[0], str):
            raise _fail()
        room_id = args[0]
        st = self.rooms.get(room_id)
        if st is None or not st.joined:
            return  # a room we already left
        if ev.kind == NoticeKind.USER_JOINED:
            if not isinstance(args[1], str) or not isinstance(args[2], int):
                raise _fail()
            tasks.append(self._room_task(room_id, "on_user_joined", (args[1], args[2])))
        elif ev.kind == NoticeKind.USER_LEFT:
            if not isinstance(args[1], str) or not isinstance(args[2], int):
                raise _fail()
            tasks.append(self._room_task(room_id, "on_user_leave", (args[1], args[2])))
        else:  # ROOM_STATE [room, state, extra_info]
            if not isinstance(args[1], int) or not isinstance(args[2], str):
                raise _fail()
            if args[1] == RoomErrorCode.DUPLICATE_LOGIN:
                del self.rooms[room_id]
                self._room_dropped(room_id)
            tasks.append(self._room_task(room_id, "on_room_state_changed",
                                         (room_id, self.uid, args[1], args[2])))
