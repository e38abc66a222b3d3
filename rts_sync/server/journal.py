"""Cluster resume, the session's side: a journal in Redis of what a session's client has not
acknowledged, so that another node can take the session over (docs/deployment.md §3).

With ``--limit cluster_resume=1`` a cluster node keeps, for every logged-in session, in Redis:

- ``rts:ss:<session>``: a hash of the node serving it, ``in`` (the client seq up to which the
  node has started handling the client's frames), ``out`` (the last server seq) and ``meta``
  (app, uid, business id, server params, rooms);
- ``rts:sq:<session>``: a sorted set of the reliable frames sent to the client and not
  acknowledged by it, scored by their seq, each with (for a reliable peer delivery) where its
  result goes. A sorted set, not a stream: adding a frame again (a write retried) changes
  nothing, the client's ACK removes a range, an empty one takes no memory (a stream of one
  entry takes about 4.7 KB).

The rule that makes a takeover exact is a write barrier: a frame goes to the client's socket
only once it, and the ``in`` of every session whose frame caused it, are in Redis, written in
one transaction with the stream entries to other nodes. ``in`` is advanced when a frame is
*taken in* for handling, before any of its effects, so an effect in Redis always comes with an
``in`` that covers it: a node that takes the session over tells the client ``last_seq = in``
and the client sends again only frames that had no effect anywhere (no duplicate); a frame
handled only in part when the old node died is not sent again (its result never comes: the
client's own send timeout reports it, never a false SUCCESS).

:class:`JournaledConnection` notes every reliable frame when it is sequenced;
:class:`SessionJournal` holds a session's barrier state; the node's writer
(:mod:`~rts_sync.server.cluster_resume`) turns both into one Lua call per session per batch.

Threading: nothing here is thread-safe; everything runs on the server's event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional, Protocol, Tuple

import cbor2

from .. import protocol as p
from .pending import Pending

if TYPE_CHECKING:
    from .session import Session


class ResumeNode(Protocol):
    """What a session's journal needs of its node (the Cluster)."""

    healthy: bool

    def journal_dirty(self, session: Session) -> None: ...

    def route_reply(self, reply: List[Any], code: int) -> None: ...

__all__ = ["JournaledConnection", "RestoredPending", "SessionJournal", "Snapshot", "reply_of"]

#: (seq, frame, tag) of a reliable frame sent to the client.
Kept = Tuple[int, bytes, Any]


class JournaledConnection(p.Connection):
    """A server ``Connection`` that also lists each reliable frame it keeps for a resume, once
    ``new`` is a list (the session logged in with cluster resume on).

    Threading: as ``Connection``: owned by the server's event loop.
    """

    def __init__(self, role: p.Role, max_frame: Optional[int] = None) -> None:
        super().__init__(role, max_frame=max_frame)
        #: Frames kept since the writer last took them (None: not journaled).
        self.new: Optional[List[Kept]] = None

    def _keep(self, seq: int, data: bytes, tag: Any) -> None:
        super()._keep(seq, data, tag)
        new = self.new
        if new is not None:
            new.append((seq, data, tag))

    def kept(self) -> List[Kept]:
        """Every frame not acknowledged by the client (for a full checkpoint)."""
        return list(self._unacked)

    def restore(self, in_seq: int, out_seq: int, kept: List[Kept]) -> None:
        """The state of a session taken over from another node (the HELLO's seq is applied
        next by ``resume_from``)."""
        self.in_seq, self.out_seq = in_seq, out_seq
        self.peer_acked = kept[0][0] - 1 if kept else out_seq
        for seq, data, tag in kept:
            super()._keep(seq, data, tag)


class RestoredPending(Pending):
    """A reliable delivery taken over from another node: its result goes where ``reply`` says
    (``["n", node, ref, deadline]``: a pending message of that node; ``["s", app, session,
    seq, deadline]``: that session's SEND ``seq``, wherever the session is now).

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("cluster", "reply")

    def __init__(self, cluster: ResumeNode, reply: List[Any], receiver: Session) -> None:
        self.cluster = cluster
        self.reply = reply
        self.receiver = receiver
        self.seq = 0
        self.done = False
        self.timer = None

    def _report(self, code: int) -> None:
        self.cluster.route_reply(self.reply, code)

    def reply_to_journal(self, timeout: float) -> List[Any]:
        return self.reply


def reply_of(tag: Any, timeout: float) -> Optional[List[Any]]:
    """Where the result of a delivery with this tag goes, as journaled (None: untagged)."""
    if not isinstance(tag, Pending) or tag.done:
        return None
    return tag.reply_to_journal(timeout)


class SessionJournal:
    """One session's barrier state (see the module docstring). ``pushed`` counts the frames
    ever queued in the session's outbox, ``written`` those taken out of it (written or
    dropped), ``released`` those the client may have: everything before them is in Redis.

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("busy", "checkpoint", "cluster", "durable_in", "epoch", "held", "mark",
                 "meta_dirty", "moved", "pushed", "queued", "release_to", "released", "session",
                 "written")

    def __init__(self, session: Session, cluster: ResumeNode) -> None:
        self.session = session
        self.cluster = cluster
        #: Highest client seq taken in for handling; ``durable_in``: the part in Redis.
        self.mark = session.conn.in_seq
        self.durable_in = 0
        self.pushed = len(session._out)
        self.written = 0
        self.released = 0
        #: Bumped when the outbox is replaced (a resume): older writes release nothing.
        self.epoch = 0
        #: The next write is a full one (login, or Redis lost the session's keys).
        self.checkpoint = True
        self.meta_dirty = True
        #: Waiting in the writer's queue.
        self.queued = False
        #: A client frame is being handled (a hand-over waits for it).
        self.busy = False
        #: A node asked for this session (a resume there): hand it over after the next write.
        self.release_to: Optional[str] = None
        #: Handed over: results for this session's SENDs are sent on to where it is now.
        self.moved = False
        #: Results that came while it was being handed over (sent on once it is).
        self.held: Optional[List[Tuple[int, int]]] = None

    def changed(self) -> None:
        """Something must be written (frames, ``in``, meta): queue for the node's writer."""
        if not self.queued:
            self.queued = True
            self.cluster.journal_dirty(self.session)

    def take_in(self, seq: int) -> None:
        """The client's frame ``seq`` is about to be handled."""
        if seq > self.mark:
            self.mark = seq
            self.changed()

    def reopened(self, queued: int) -> None:
        """A resume replaced the outbox with ``queued`` frames (WELCOME first): the WELCOME
        may go at once, the replayed frames once the writer confirmed them."""
        self.pushed, self.written, self.released = queued, 0, 1
        self.epoch += 1
        self.changed()

    def freeze(self) -> None:
        """The hand-over's write is being taken: the session stops here (no frame is queued
        or numbered for it any more; results are held), so that write is its last state."""
        s = self.session
        if s.close_code is None:
            s.close_code, s.close_reason = int(p.CloseCode.NORMAL), "moving to another node"
        if self.held is None:
            self.held = []

    def forward_result(self, code: int, seq: int) -> None:
        """A result for a session that is moving (held) or moved (sent on); else dropped."""
        if self.moved:
            s = self.session
            self.cluster.route_reply(["s", s.app_id, s.session_id, seq, 0.0], code)
        elif self.held is not None:
            self.held.append((code, seq))

    def handed_over(self) -> None:
        """Moved: the held results go on to where the session is now."""
        self.moved = True
        held, self.held = self.held or [], None
        for code, seq in held:
            self.forward_result(code, seq)


class Snapshot:
    """What one write takes of one session: its new frames (or all unacknowledged ones, for a
    checkpoint), ``in``, ``out``, the client's ack, meta, and how many outbox frames it
    releases once written.

    Threading: not thread-safe; owned by the server's event loop.
    """

    __slots__ = ("checkpoint", "entries", "epoch", "journal", "mark", "meta", "out", "release",
                 "trim", "upto")

    def __init__(self, j: SessionJournal, timeout: float) -> None:
        s = j.session
        conn = s.conn
        assert isinstance(conn, JournaledConnection)
        self.journal = j
        self.checkpoint = j.checkpoint
        kept = conn.kept() if j.checkpoint else (conn.new or [])
        conn.new = []
        self.entries: List[Tuple[int, bytes]] = [
            (seq, cbor2.dumps([data, reply_of(tag, timeout)])) for seq, data, tag in kept]
        self.mark = j.mark
        self.out = conn.out_seq
        self.trim = conn.peer_acked
        self.meta: Optional[bytes] = None
        if j.meta_dirty or j.checkpoint:
            params = list(s.server_params) if s.server_params is not None else None
            self.meta = cbor2.dumps([s.app_id, s.uid, s.business_id, params, sorted(s.rooms)])
        self.release = j.held is not None  # frozen for a hand-over: its last write
        self.upto = j.pushed
        self.epoch = j.epoch
        j.checkpoint = j.meta_dirty = False

    def args(self, node: str, ttl_ms: int) -> List[Any]:
        """ARGV of ``redis_store.JOURNAL_SCRIPT``."""
        out: List[Any] = [node, 1 if self.checkpoint else 0, self.mark, self.out, self.trim,
                          1 if self.release else 0,
                          self.journal.session.session_id or "",
                          b"" if self.meta is None else self.meta, ttl_ms]
        for seq, blob in self.entries:
            out += [seq, blob]
        return out

    def failed(self) -> None:
        """The write did not happen: the next one must carry all of this again."""
        j = self.journal
        j.checkpoint = j.checkpoint or self.checkpoint
        j.meta_dirty = j.meta_dirty or self.meta is not None
        if not self.checkpoint:
            conn = j.session.conn
            assert isinstance(conn, JournaledConnection)
            j.checkpoint = True  # simplest correct retry: write everything unacknowledged again
            conn.new = []
