"""Operation: a concurrent.futures.Future whose Condition is made only when someone needs it.
Every Future behaviour must hold whichever comes first: the waiter or the resolution."""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, InvalidStateError, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, List

import pytest

from rts_sync._client.operations import Operation, SendOperation


def test_is_a_future_resolved_without_a_condition() -> None:
    op = SendOperation(7)
    assert isinstance(op, Future)
    op.set_result(0)
    assert op._cond is None  # nobody waited: no Condition was ever made
    assert op.done() and not op.cancelled() and not op.running()
    assert op.result() == 0 and op.result(0) == 0 and op.exception() is None
    assert "done" in repr(op)


def test_exception_is_raised_by_result_and_returned_by_exception() -> None:
    op = Operation()
    err = ValueError("boom")
    op.set_exception(err)
    with pytest.raises(ValueError) as got:
        op.result()
    assert got.value is err and op.exception() is err


def test_a_second_resolution_is_refused_either_way() -> None:
    fast = Operation()
    fast.set_result(1)
    with pytest.raises(InvalidStateError):
        fast.set_result(2)
    with pytest.raises(InvalidStateError):
        fast.set_exception(ValueError())
    slow = Operation()
    slow.add_done_callback(lambda f: None)  # makes the Condition: Future's own path
    slow.set_result(1)
    with pytest.raises(InvalidStateError):
        slow.set_result(2)
    assert fast.result() == slow.result() == 1


def test_waiter_before_resolution_is_woken() -> None:
    op = Operation()
    got: List[Any] = []
    t = threading.Thread(target=lambda: got.append(op.result(10)))
    t.start()
    while op._cond is None or not op._cond._waiters:  # type: ignore[attr-defined]
        threading.Event().wait(0.001)  # until the waiter sleeps in the Condition
    op.set_result("x")
    t.join(10)
    assert got == ["x"]


def test_timeout_and_cancel_behave_as_future() -> None:
    op = Operation()
    with pytest.raises(FutureTimeout):
        op.result(0.01)
    assert op.cancel() and op.cancelled() and op.done()
    with pytest.raises(InvalidStateError):
        op.set_result(1)


def test_done_callbacks_before_and_after_resolution() -> None:
    op = Operation()
    seen: List[Any] = []
    op.add_done_callback(lambda f: seen.append(("before", f.result())))
    op.set_result(3)
    op.add_done_callback(lambda f: seen.append(("after", f.result())))
    assert seen == [("before", 3), ("after", 3)]


def test_concurrent_futures_wait_sees_both_kinds() -> None:
    early, late = Operation(), Operation()
    early.set_result(1)
    done, not_done = wait([early, late], timeout=0, return_when=FIRST_COMPLETED)
    assert done == {early} and not_done == {late}
    threading.Timer(0.01, late.set_result, (2,)).start()
    done, not_done = wait([early, late], timeout=10)
    assert done == {early, late} and not not_done


def test_racing_waiters_and_resolvers_never_lose_a_wakeup() -> None:
    """Thousands of operations, each resolved by one thread while another starts waiting on
    it at the same moment: every waiter returns the value (none sleeps to its timeout)."""
    n = 3000
    ops = [Operation() for _ in range(n)]
    start = threading.Barrier(2)
    results: List[Any] = []

    def resolve() -> None:
        start.wait()
        for i, op in enumerate(ops):
            op.set_result(i)

    def consume() -> None:
        start.wait()
        for op in ops:
            results.append(op.result(10))

    threads = [threading.Thread(target=resolve), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == list(range(n))
