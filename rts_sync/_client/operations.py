"""Operation futures and the pull-style message inbox.

An :class:`Operation` is a ``concurrent.futures.Future`` that the SDK resolves on a callback
thread, right after the matching handler callback has returned, so that once ``result()`` returns
the callback has run too.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from concurrent.futures import InvalidStateError as FutureStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, PENDING
from typing import Any, Callable, Deque, List, Optional, TypeVar

from ..errors import ClientClosed, InvalidStateError
from ..types import Message

__all__ = ["Inbox", "Operation", "SendOperation"]

T = TypeVar("T")


#: Guards the creation of an operation's Condition against a resolution without one.
_LAZY = threading.Lock()
_DONE = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class Operation(Future):  # type: ignore[type-arg]
    """The outcome of an asynchronous SDK call: a ``concurrent.futures.Future``.

    ``result(timeout)`` returns the value or raises the :class:`~rts_sync.RTSError` whose
    ``.code`` is the code the callback received.

    Threading: thread-safe. Resolved on a callback thread (``rts-cb-*``) after the handler
    callback; functions added with ``add_done_callback`` run there too. (A successful send
    whose handler has no ``on_*_send_result`` of its own and that nobody waits on or added a
    callback to is resolved by the I/O thread directly: no user code runs then.) Calling ``result()`` on an
    unfinished operation from a callback thread of the same engine would wait for a callback that
    cannot run, so it raises :class:`~rts_sync.InvalidStateError` instead of hanging.

    Cost: a plain ``Future`` builds a ``threading.Condition`` (and an RLock) in ``__init__``,
    which was a quarter of the time of a send. Most operations of a busy sender are resolved
    with nobody waiting on them, so the Condition is made only when first needed (a waiting
    ``result()``/``exception()``, a done callback, ``concurrent.futures.wait``, ``cancel``);
    until then ``set_result``/``set_exception`` finish the operation under one module-wide lock
    held for a few attribute stores. ``done()`` and a ``result()`` of a finished operation take
    no lock at all.
    """

    _cond: Optional[threading.Condition]

    def __init__(self, in_callback_thread: Optional[Callable[[], bool]] = None) -> None:
        # Future.__init__ without its Condition (see the class docstring).
        self._cond = None
        self._state = PENDING
        self._result: Any = None
        self._exception: Optional[BaseException] = None
        self._waiters: List[Any] = []
        self._done_callbacks: List[Callable[[Future[Any]], object]] = []
        self._in_callback_thread = in_callback_thread

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        """Future's Condition, made on first use (every Future method reaches it through here)."""
        cond = self._cond
        if cond is None:
            with _LAZY:
                cond = self._cond
                if cond is None:
                    cond = self._cond = threading.Condition()
        return cond

    def _finish_unobserved(self, result: Any, exception: Optional[BaseException]) -> bool:
        """Finish now if nobody has made the Condition yet, so nobody waits and no callback is
        registered; False if the Condition exists (then Future's own path must run)."""
        if self._cond is not None:
            return False
        with _LAZY:
            if self._cond is not None:
                return False
            state = self._state
            if state not in _DONE:
                self._result = result
                self._exception = exception
                self._state = FINISHED
                return True
        raise FutureStateError("%s: %r" % (state, self))  # outside _LAZY: repr takes it

    def finish_unobserved(self, result: Any) -> bool:
        """Resolve with ``result`` here and now if nobody observes this operation yet (no
        waiter, no done callback: nothing of the user's would run on this thread); True if it
        is done afterwards. False means it is observed: resolve it on a callback thread."""
        if self._state in _DONE:
            return True  # cancelled by the user: nothing to resolve
        try:
            return self._finish_unobserved(result, None)
        except FutureStateError:
            return True  # cancelled meanwhile

    def set_result(self, result: Any) -> None:
        if not self._finish_unobserved(result, None):
            super().set_result(result)

    def set_exception(self, exception: Optional[BaseException]) -> None:
        if not self._finish_unobserved(None, exception):
            super().set_exception(exception)

    def done(self) -> bool:
        return self._state in _DONE

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return False if self._cond is None else super().running()

    def _check_wait(self, timeout: Optional[float]) -> None:
        if (self._in_callback_thread is not None and not self.done()
                and self._in_callback_thread()):
            raise InvalidStateError(
                "result() of an unfinished operation was called from an SDK callback thread; "
                "it would deadlock. Use the handler callback or add_done_callback() instead.")

    def result(self, timeout: Optional[float] = None) -> Any:
        if self._state == FINISHED:  # final: no lock needed to read it
            exc = self._exception
            if exc is not None:
                try:
                    raise exc
                finally:
                    del exc  # no reference cycle through the traceback
            return self._result
        self._check_wait(timeout)
        return super().result(timeout)

    def exception(self, timeout: Optional[float] = None) -> Optional[BaseException]:
        if self._state == FINISHED:
            return self._exception
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
