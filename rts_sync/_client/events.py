"""Building the dispatcher tasks that call user handlers and resolve operations.

Every callback goes through :meth:`Emitter.task`, which looks the handler up when the task runs
(so ``set_rts_event_handler`` applies to events not yet delivered), calls it outside any lock of
ours, logs what it raises, and then resolves the operation, if any, on the same thread.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple

from ..handlers import RTSEventHandler, RTSRoomEventHandler
from ..types import Message
from .dispatcher import Task
from .operations import Inbox, Operation

__all__ = ["CONN_LANE", "Emitter"]

log = logging.getLogger(__name__)

#: Lane of connection, login and send-result events (kept in order with each other).
CONN_LANE = "conn"
_BASES = (RTSEventHandler, RTSRoomEventHandler)


class Emitter:
    """Makes dispatcher tasks for one engine's handler (see the module docstring).

    Threading: ``task`` is called on the I/O thread or an app thread; the tasks run on the
    dispatcher's callback threads.
    """

    def __init__(self, get_handler: Callable[[], Any], inbox: Callable[[], Optional[Inbox]]) -> None:
        self._get_handler = get_handler
        self._inbox = inbox
        self._implements: Dict[Tuple[type, str], bool] = {}

    def task(self, lane: Hashable, method: Optional[str], args: Tuple[Any, ...],
             op: Optional[Operation] = None, value: Any = None,
             error: Optional[BaseException] = None,
             handler: Optional[Callable[[], Any]] = None) -> Tuple[Hashable, Task]:
        """A task calling ``method(*args)`` on the engine's handler (or on ``handler()``, e.g. a
        room's), then resolving ``op`` with ``value`` or ``error``."""
        return lane, (self._run, (method, args, op, value, error, handler), op)

    def _run(self, method: Optional[str], args: Tuple[Any, ...], op: Optional[Operation],
             value: Any, error: Optional[BaseException],
             get: Optional[Callable[[], Any]]) -> None:
        try:
            handler = (get or self._get_handler)()
            if method is not None and handler is not None:
                getattr(handler, method)(*args)
        except Exception:
            log.exception("exception in handler %s", method)
        finally:
            if op is not None and not op.done():
                if error is not None:
                    op.set_exception(error)
                else:
                    op.set_result(value)

    def implements(self, method: str, get: Optional[Callable[[], Any]] = None) -> bool:
        """Whether the handler now in place (the engine's, or ``get()``'s) has its own
        ``method``, not the no-op of the base handler classes."""
        handler = (get or self._get_handler)()
        if handler is None:
            return False
        key = (type(handler), method)
        known = self._implements.get(key)
        if known is None:
            known = False
            for klass in type(handler).__mro__:
                if method in klass.__dict__:
                    known = klass not in _BASES
                    break
            self._implements[key] = known
        return known

    def peer_message(self, tasks: List[Tuple[Hashable, Task]], uid: str,
                     payload: Any) -> None:
        tasks.append((("peer", uid), (self._run_peer_message, (uid, payload), None)))

    def room_message(self, tasks: List[Tuple[Hashable, Task]], room_id: str,
                     get_handler: Callable[[], Any], uid: str, payload: Any) -> None:
        tasks.append((("room", room_id),
                       (self._run_room_message, (room_id, get_handler, uid, payload), None)))

    def _run_room_message(self, room_id: str, get_handler: Callable[[], Any], uid: str,
                          payload: Any) -> None:
        binary = type(payload) is bytes
        handler = get_handler()
        if handler is None:
            return  # the room was destroyed meanwhile: no more callbacks, nothing queued
        try:
            if binary:
                handler.on_room_binary_message_received(uid, payload)
            else:
                handler.on_room_message_received(uid, payload)
        except Exception:
            log.exception("exception in handler on_room_%smessage_received",
                          "binary_" if binary else "")
        inbox = self._inbox()
        if inbox is not None:
            inbox.put(Message("room", uid, payload, room_id))

    def _run_peer_message(self, uid: str, payload: Any) -> None:
        binary = type(payload) is bytes
        try:
            handler = self._get_handler()
            if handler is not None:
                if binary:
                    handler.on_binary_message_received(uid, payload)
                else:
                    handler.on_message_received(uid, payload)
        except Exception:
            log.exception("exception in handler on_%smessage_received", "binary_" if binary else "")
        inbox = self._inbox()
        if inbox is not None:
            inbox.put(Message("peer", uid, payload))
