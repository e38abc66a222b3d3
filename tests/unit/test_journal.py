"""The session side of cluster resume (rts_sync.server.journal), without Redis: what a write
takes of a session, the write barrier in the session's outbox, and a journal read back into a
new connection resuming with the same sequence numbers. (The Redis side and the nodes are
tested for real in tests/integration/test_cluster*.py.)"""

from __future__ import annotations

import asyncio
from typing import Any, List, Tuple

import cbor2

from rts_sync import protocol as p
from rts_sync.server.config import Limits
from rts_sync.server.journal import JournaledConnection, SessionJournal, Snapshot
from rts_sync.server.metrics import Metrics
from rts_sync.server.pending import Pending
from rts_sync.server.session import Session


class Node:
    """The two calls a journal makes of its node, recorded (a unit-test stand-in)."""

    healthy = True

    def __init__(self) -> None:
        self.dirty: List[Session] = []
        self.routed: List[Tuple[List[Any], int]] = []

    def journal_dirty(self, session: Session) -> None:
        self.dirty.append(session)

    def route_reply(self, reply: List[Any], code: int) -> None:
        self.routed.append((reply, code))


def journaled_session(node: Node) -> Session:
    s = Session(1, None, None, Limits(), Metrics(), "", lambda _: None, journaled=True)
    s.app_id, s.uid, s.session_id = "app", "alice", "sid1"
    s.conn.receive(p.encode(p.Hello((1,), "app", "t", None)))
    s.conn.welcome(1, {})
    assert isinstance(s.conn, JournaledConnection)
    s.conn.new = []
    s.journal = SessionJournal(s, node)  # type: ignore[arg-type]
    return s


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_frames_wait_in_the_outbox_until_the_writer_has_them_in_redis() -> None:
    async def main() -> None:
        node = Node()
        s = journaled_session(node)
        j = s.journal
        assert j is not None
        _, frame = s.conn.notice(p.NoticeKind.KICKED, [1])
        s.push(frame)
        assert node.dirty == [s] and j.queued  # asked for a write, once
        s.push(s.conn.notice(p.NoticeKind.KICKED, [2])[1])
        assert node.dirty == [s]
        snap = Snapshot(j, 10.0)
        assert [seq for seq, _ in snap.entries] == [1, 2] and snap.out == 2
        assert snap.upto == 2 and snap.checkpoint  # the first write is a full one
        assert s.conn.new == []  # taken
        # nothing may be written before the write is confirmed
        assert j.released - j.written == 0
        j.released = snap.upto  # what ClusterResume._journal_done does on success
        assert j.released - j.written == 2

    run(main())


def test_in_is_advanced_when_a_frame_is_taken_in_and_never_goes_back() -> None:
    async def main() -> None:
        node = Node()
        s = journaled_session(node)
        j = s.journal
        assert j is not None
        j.take_in(5)
        j.take_in(3)
        assert j.mark == 5
        assert Snapshot(j, 10.0).mark == 5

    run(main())


def test_a_failed_write_makes_the_next_one_a_full_checkpoint() -> None:
    async def main() -> None:
        s = journaled_session(Node())
        j = s.journal
        assert j is not None
        Snapshot(j, 10.0)  # the login checkpoint, written
        s.push(s.conn.notice(p.NoticeKind.KICKED, [1])[1])
        snap = Snapshot(j, 10.0)
        assert not snap.checkpoint and len(snap.entries) == 1
        snap.failed()
        again = Snapshot(j, 10.0)
        assert again.checkpoint and [seq for seq, _ in again.entries] == [1]

    run(main())


def test_a_journal_read_back_resumes_with_the_same_seqs_and_result_routes() -> None:
    async def main() -> None:
        node = Node()
        s = journaled_session(node)
        sender = Session(2, None, None, Limits(), Metrics(), "", lambda _: None)
        sender.app_id, sender.session_id = "app", "sid-bob"
        pending = Pending(sender, 7, s)
        s.conn.deliver(p.DeliverKind.PEER, "bob", None, "hi", tag=pending)
        s.conn.deliver(p.DeliverKind.PEER, "bob", None, "there")
        snap = Snapshot(s.journal, 10.0)  # type: ignore[arg-type]
        journal = [(seq, cbor2.loads(blob)) for seq, blob in snap.entries]
        # the delivery's result goes to bob's session and SEND 7, wherever bob is then
        assert journal[0][1][1][:4] == ["s", "app", "sid-bob", 7]
        assert journal[1][1][1] is None
        # another node reads it back: the client (which saw seq 1) gets seq 2 again
        conn = JournaledConnection(p.Role.SERVER)
        conn.restore(4, snap.out, [(seq, data, None) for seq, (data, _) in journal])
        conn.receive(p.encode(p.Hello((1,), "app", "t", ("sid1", 1))))
        acked, replay = conn.resume_from(1)
        assert [p.decode(f, p.default_max_frame()).seq for f in replay] == [2]
        assert conn.in_seq == 4 and conn.out_seq == 2

    run(main())


def test_results_of_a_moving_session_are_held_then_passed_on() -> None:
    async def main() -> None:
        node = Node()
        s = journaled_session(node)
        j = s.journal
        assert j is not None
        j.release_to = "node-b"
        j.freeze()
        assert s.closing
        s.post_result(0, 3)  # while its last write is being made: held
        assert node.routed == []
        j.handed_over()
        s.post_result(1, 4)  # afterwards: straight on
        assert node.routed == [(["s", "app", "sid1", 3, 0.0], 0),
                               (["s", "app", "sid1", 4, 0.0], 1)]

    run(main())
