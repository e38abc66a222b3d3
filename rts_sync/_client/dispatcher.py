"""The callback dispatcher: worker threads that run user code, in ordered lanes.

Tasks submitted with the same lane key run one at a time in submission order (one peer's
messages, one room's events, the connection's events); different lanes may run in parallel when
there is more than one worker. User code never runs on the I/O or supervisor thread and never
under a lock of ours; an exception it raises is logged and changes nothing else.

The queue is bounded by accounting, not by blocking: ``submit`` never blocks (the I/O thread must
not), and ``saturated`` tells the I/O thread to stop reading from the socket until the workers have
drained below the low-water mark, when ``on_drained`` is called to wake it. That is how a slow
consumer slows its reader (TCP backpressure) instead of growing memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Hashable, List, Optional, Tuple

__all__ = ["Dispatcher", "Task"]

log = logging.getLogger(__name__)

#: (function, args, operation-or-None). The operation is failed if the task is dropped at stop.
Task = Tuple[Callable[..., Any], Tuple[Any, ...], Any]

_BATCH = 64  # tasks a worker runs from one lane before letting other lanes have a turn


class Dispatcher:
    """Ordered-lane worker pool (see the module docstring).

    It runs one worker while that is enough and adds workers, up to ``workers``, only while a
    lane is ready and every worker is busy (a slow callback then stalls only its own lane); an
    extra worker that stays idle for ``idle_timeout`` seconds ends, so an idle engine keeps one.

    Threading: ``submit``/``submit_many`` may be called from any thread; workers are named
    ``rts-cb-<name>-<n>``.
    """

    def __init__(self, name: str, workers: int, capacity: int,
                 on_drained: Optional[Callable[[], None]] = None,
                 idle_timeout: float = 10.0) -> None:
        self.capacity = capacity
        self.max_workers = max(1, workers)
        self.idle_timeout = idle_timeout
        self._name = name
        self._low_water = capacity // 2
        self._on_drained = on_drained
        self._cond = threading.Condition(threading.Lock())
        self._lanes: Dict[Hashable, Deque[Task]] = {}
        self._ready: Deque[Hashable] = deque()
        self._pending = 0
        self._stopping = False
        self._was_saturated = False
        self._threads: Dict[int, threading.Thread] = {}  # ident -> worker
        #: ident -> whether that worker is running a batch of callbacks now
        self._in_user_code: Dict[int, bool] = {}
        self._idle = 0
        self._started = 0
        self.thread_ids: frozenset[int] = frozenset()

    def start(self) -> None:
        with self._cond:
            self._spawn()

    def _spawn(self) -> None:
        # Called with self._cond held.
        t = threading.Thread(target=self._run, name="rts-cb-%s-%d" % (self._name, self._started),
                             daemon=True)
        self._started += 1
        t.start()
        assert t.ident is not None
        self._threads[t.ident] = t
        self._in_user_code[t.ident] = False
        self.thread_ids = frozenset(self._threads)

    @property
    def saturated(self) -> bool:
        """True when the pending tasks reached capacity (the reader should pause)."""
        if self._pending >= self.capacity:
            self._was_saturated = True
            return True
        return False

    @property
    def workers(self) -> int:
        """Worker threads alive now."""
        return len(self._threads)

    def in_worker(self) -> bool:
        """True when called from one of this dispatcher's worker threads."""
        return threading.get_ident() in self.thread_ids

    def submit(self, lane: Hashable, fn: Callable[..., Any], args: Tuple[Any, ...] = (),
               op: Any = None) -> None:
        self.submit_many([(lane, (fn, args, op))])

    def submit_many(self, items: List[Tuple[Hashable, Task]]) -> None:
        """Queue tasks in order with one lock round trip; dropped silently after stop."""
        if not items:
            return
        with self._cond:
            stopping = self._stopping
            if not stopping:
                self._enqueue(items)
        if stopping:
            self._fail_ops([t for _, t in items])

    def _enqueue(self, items: List[Tuple[Hashable, Task]]) -> None:
        # Called with self._cond held.
        lanes = self._lanes
        for lane, task in items:
            q = lanes.get(lane)
            if q is None:
                q = lanes[lane] = deque()
                self._ready.append(lane)
            q.append(task)
        self._pending += len(items)
        if self._idle:
            self._cond.notify()
        elif (self._ready and len(self._threads) < self.max_workers
              and all(self._in_user_code.values())):
            # every worker is running callbacks (perhaps a slow one) and a lane waits; a worker
            # that has just finished its batch takes the lane itself in a moment
            self._spawn()

    def _run(self) -> None:
        cond = self._cond
        me = threading.get_ident()
        in_user_code = self._in_user_code
        while True:
            with cond:
                # An extra worker ends once it has had nothing to do for idle_timeout, counted
                # from its own last task: being woken for a task that another worker took first
                # does not restart the count.
                retire_at: Optional[float] = None
                while not self._ready and not self._stopping:
                    timeout: Optional[float] = None
                    if len(self._threads) > 1:
                        now = time.monotonic()
                        if retire_at is None:
                            retire_at = now + self.idle_timeout
                        timeout = retire_at - now
                        if timeout <= 0:
                            del self._threads[me]
                            in_user_code.pop(me, None)
                            self.thread_ids = frozenset(self._threads)
                            return
                    self._idle += 1
                    cond.wait(timeout)
                    self._idle -= 1
                if self._stopping:
                    return
                lane = self._ready.popleft()
                q = self._lanes[lane]
                batch = [q.popleft() for _ in range(min(_BATCH, len(q)))]
                in_user_code[me] = True
            for fn, args, _ in batch:
                try:
                    fn(*args)
                except Exception:
                    log.exception("exception in callback %s", getattr(fn, "__qualname__", fn))
            in_user_code[me] = False  # a plain store: read by _enqueue without our lock
            wake = False
            with cond:
                if self._stopping:
                    return  # stop() already dropped and failed everything queued
                if q:
                    self._ready.append(lane)
                    if self._idle:
                        cond.notify()
                else:
                    del self._lanes[lane]
                self._pending -= len(batch)
                if self._was_saturated and self._pending <= self._low_water:
                    self._was_saturated = False
                    wake = True
            if wake and self._on_drained is not None:
                self._on_drained()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the workers; tasks not yet run are dropped (their operations fail).

        Safe to call from a worker (it is then not joined: it ends when its callback returns).
        """
        with self._cond:
            self._stopping = True
            dropped = [t for q in self._lanes.values() for t in q]
            self._lanes.clear()
            self._ready.clear()
            self._pending = 0
            self._cond.notify_all()
            threads = list(self._threads.values())
        self._fail_ops(dropped)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(timeout)
                if t.is_alive():
                    log.warning("callback thread %s did not stop within %gs (a callback is "
                                "still running)", t.name, timeout)

    @staticmethod
    def _fail_ops(tasks: List[Task]) -> None:
        from ..errors import ClientClosed

        for _, _, op in tasks:
            if op is not None and not op.done():
                op.set_exception(ClientClosed("the engine was destroyed"))
