"""Operation futures and the pull-style message inbox.

An :class:`Operation` is a ``concurrent.futures.Future`` that the SDK resolves on a callback
thread, right after the matching handler callback has returned, so that once ``result()`` returns
the callback has run too.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable, Deque, Optional, TypeVar

from ..errors import ClientClosed, InvalidStateError
from ..types import Message

__all__ = ["Inbox", "Operation", "SendOperation"]

T = TypeVar("T")


class Operation(Future):  # type: ignore[type-arg]
    """The outcome of an asynchronous SDK call: a ``concurrent.futures.Future``.

    ``result(timeout)`` returns the value or raises the :class:`~rts_sync.RTSError` whose
    ``.code`` is the code the callback received.

    Threading: thread-safe. Resolved on a callback thread (``rts-cb-*``) after the handler
    callback; functions added with ``add_done_callback`` run there too. Calling ``result()`` on an
    unfinished operation from a callback thread of the same engine would wait for a callback that
    cannot run, so it raises :class:`~rts_sync.InvalidStateError` instead of hanging.
    """

    def __init__(self, in_callback_thread: Optional[Callable[[], bool]] = None) -> None:
        super().__init__()
        self._in_callback_thread = in_callback_thread

    def _check_wait(self, timeout: Optional[float]) -> None:
        if (self._in_callback_thread is not None and not self.done()
                and self._in_callback_thread()):
            raise InvalidStateError(
                "result() of an unfinished operation was called from an SDK callback thread; "
                "it would deadlock. Use the handler callback or add_done_callback() instead.")

    def result(self, timeout: Optional[float] = None) -> Any:
        self._check_wait(timeout)
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        self._check_wait(timeout)
        return super().exception(timeout)


class SendOperation(Operation):
    """An :class:`Operation` for a message send; ``msg_id`` is the seed's message id.

    ``result()`` is the result code (0 / 200) for peer and room messages, and the app server's
    response body (bytes) for server messages.
    """

    def __init__(self, msg_id: int, in_callback_thread: Optional[Callable[[], bool]] = None) -> None:
        super().__init__(in_callback_thread)
        self.msg_id = msg_id

    def __repr__(self) -> str:
        return "<SendOperation msg_id=%d %s>" % (self.msg_id, "done" if self.done() else "pending")


class Inbox:
    """Bounded queue behind ``RTS.messages()``.

    ``put`` blocks while full (on a callback thread, which backs the I/O thread up and so the
    server: backpressure, not memory growth); ``close`` wakes every waiter for good.

    Threading: thread-safe.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: Deque[Message] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, msg: Message) -> None:
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                self._cond.wait()
            if self._closed:
                return
            self._items.append(msg)
            self._cond.notify_all()

    def get(self, timeout: Optional[float]) -> Optional[Message]:
        """The next message, or None after ``timeout`` seconds without one; raises once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait_for(lambda: self._items or self._closed, timeout)
            if self._items:
                msg = self._items.popleft()
                self._cond.notify_all()
                return msg
            if self._closed:
                raise ClientClosed("the engine was destroyed")
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
