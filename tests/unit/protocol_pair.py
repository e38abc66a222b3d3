"""ConnectionPair and small helpers shared by the protocol connection tests."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import pytest

from rts_sync.errors import RemoteProtocolError
from rts_sync.protocol import (
    MAX_PAYLOAD,
    CloseCode,
    Connection,
    ConnectionPhase,
    DeliverKind,
    Role,
    negotiate,
)

PEER, ROOM = DeliverKind.PEER, DeliverKind.ROOM


class ConnectionPair:
    """A client Connection and a server Connection, and a wire that moves bytes between them."""

    def __init__(self, handshake: bool = True) -> None:
        self.client = Connection(Role.CLIENT)
        self.server = Connection(Role.SERVER)
        if handshake:
            self.handshake()

    def peer(self, conn: Connection) -> Connection:
        return self.server if conn is self.client else self.client

    def move(self, sender: Connection, *frames: bytes) -> List[Any]:
        """Feed ``frames``, sent by ``sender``, to the other side; what its receive() returned."""
        receiver = self.peer(sender)
        return [receiver.receive(data) for data in frames]

    def c2s(self, *frames: bytes) -> List[Any]:
        return self.move(self.client, *frames)

    def s2c(self, *frames: bytes) -> List[Any]:
        return self.move(self.server, *frames)

    def handshake(self) -> None:
        [hello] = self.c2s(self.client.hello("app-1", "test"))
        version = negotiate(hello.versions)
        assert version is not None
        [welcome] = self.s2c(self.server.welcome(version, {"max_payload": MAX_PAYLOAD}))
        assert welcome.version == version

    def resume(self, session_id: str = "s-1",
               keep: Optional[Callable[[Any], bool]] = None) -> Tuple[List[bytes], List[bytes]]:
        """A new WebSocket for the same session, as the server and the SDK do it.

        Both sides ``reopen()``; the client's HELLO asks to resume ``session_id`` with its last
        seq; the server frees what that acknowledges, answers WELCOME ``resumed``/``last_seq``; the
        client frees what that acknowledges. Returns (server replay, client resend), not yet moved.
        """
        self.client.reopen()
        self.server.reopen()
        assert self.client.phase is self.server.phase is ConnectionPhase.HANDSHAKE
        [hello] = self.c2s(self.client.hello("app-1", "test", session_id=session_id))
        assert hello.resume == (session_id, self.client.in_seq)
        replay = self.server.resume_from(hello.resume[1], keep=keep)[1]
        [welcome] = self.s2c(self.server.welcome(
            1, {"resumed": True, "last_seq": self.server.in_seq}))
        assert (self.client.phase, self.server.phase) == (ConnectionPhase.OPEN, ConnectionPhase.OPEN)
        resend = self.client.resume_from(welcome.params["last_seq"])[1]
        return replay, resend


def acked(conn: Connection) -> bytes:
    """``conn.ack()``, which must have something new to acknowledge."""
    data = conn.ack()
    assert data is not None
    return data


def rejected(conn: Connection, data: bytes, code: int = CloseCode.PROTOCOL_ERROR) -> None:
    """``conn`` must refuse ``data`` with a RemoteProtocolError of ``code``, and be CLOSED after."""
    with pytest.raises(RemoteProtocolError) as info:
        conn.receive(data)
    assert info.value.code == code
    assert conn.phase is ConnectionPhase.CLOSED
