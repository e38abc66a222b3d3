"""Small per-message and per-session records of the server: rate-limit buckets and reliable peer
messages waiting for their receiver's acknowledgement.

Threading: nothing here is thread-safe; everything runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, List, Optional

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Pending", "TokenBucket"]


class TokenBucket:
    """A token bucket of ``rate`` tokens per second holding at most ``max(1, rate)`` tokens.

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Pending:
    """A reliable peer message delivered to ``receiver``, waiting for its SDK's acknowledgement.

    It is resolved exactly once: SUCCESS when the receiver acknowledges it, TIMEOUT when the
    message timeout passes or the receiver's connection ends first. The sender then gets the
    RESULT for ``seq`` (if it is still connected).

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("done", "receiver", "sender", "seq", "timer")

    def __init__(self, sender: Session, seq: int, receiver: Session) -> None:
        self.sender = sender
        self.seq = seq
        self.receiver = receiver
        self.done = False
        #: Its own timeout, if it has one (else the receiver times it out: ``Session.track``).
        self.timer: Optional[asyncio.TimerHandle] = None

    def resolve(self, code: int) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.receiver._inflight_done()
        self._report(code)

    def _report(self, code: int) -> None:
        """Tell the sender the outcome (another node's sender: :class:`RemotePending`)."""
        self.sender.post_result(code, self.seq)

    def reply_to_journal(self, timeout: float) -> List[Any]:
        """Cluster resume: where the result goes if another node takes the receiver over
        (the sender's session, wherever it is then), and until when (wall clock)."""
        s = self.sender
        return ["s", s.app_id, s.session_id, self.seq, time.time() + timeout]
