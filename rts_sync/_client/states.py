"""The engine's public connection states as data: which change may follow which, and why.

Every change of ``on_connection_state_changed`` goes through :func:`allowed`; the I/O thread
logs an error for a change outside this table (a bug of ours), so the table is the contract
README's "Reliability" section documents:

* DISCONNECTED -> CONNECTING (login) or RECONNECTING (a refused re-login got a new token)
* CONNECTING -> CONNECTED, or DISCONNECTED (connect or login failed, logout)
* CONNECTED / RECONNECTED -> RECONNECTING (the link was lost), or DISCONNECTED (logout, kicked)
* RECONNECTING -> RECONNECTED (resumed, or logged in again), LOST (still trying after
  ``lost_after``), or DISCONNECTED (logout, kicked, token refused)
* LOST -> RECONNECTED or DISCONNECTED

FAILED (7) is the seed's "server-side abnormal state, no reconnect"; this SDK reports those
ends as DISCONNECTED with a reason (KICKED, TOKEN_EXPIRED) and never enters FAILED.

Pure: no threads, clocks or logging.
"""

from __future__ import annotations

from typing import FrozenSet, Tuple

from ..enums import ConnectionState as S

__all__ = ["TRANSITIONS", "allowed", "lost_due"]

#: Every (from, to) change the engine may report.
TRANSITIONS: FrozenSet[Tuple[S, S]] = frozenset({
    (S.DISCONNECTED, S.CONNECTING),
    (S.DISCONNECTED, S.RECONNECTING),
    (S.CONNECTING, S.CONNECTED),
    (S.CONNECTING, S.DISCONNECTED),
    (S.CONNECTED, S.RECONNECTING),
    (S.CONNECTED, S.DISCONNECTED),
    (S.RECONNECTED, S.RECONNECTING),
    (S.RECONNECTED, S.DISCONNECTED),
    (S.RECONNECTING, S.RECONNECTED),
    (S.RECONNECTING, S.LOST),
    (S.RECONNECTING, S.DISCONNECTED),
    (S.LOST, S.RECONNECTED),
    (S.LOST, S.DISCONNECTED),
})


def allowed(old: S, new: S) -> bool:
    """True when the change from ``old`` to ``new`` is in :data:`TRANSITIONS`."""
    return (old, new) in TRANSITIONS


def lost_due(state: S, lost_at: float, now: float, lost_after: float) -> bool:
    """Whether a reconnecting engine should now report LOST (it keeps trying)."""
    return state == S.RECONNECTING and now - lost_at >= lost_after
